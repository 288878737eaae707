"""Training throughput: `python -m training finetune` against a plain transformers loop, side by side.

    python bench/train_speed.py --config training/configs/fsdd-scratch.yaml \
        --manifest runs/fsdd/train.jsonl --steps 30 --rounds 3

Both train the same architecture (the config's), from scratch, on the same batches (the trainer's
batches of the manifest, length-bucketed or random as the config says), with the same masking,
optimiser and schedule settings.
The plain loop is what a newcomer writes in ~60 lines: transformers' Wav2Vec2ForCTC, its feature
extractor's normalisation and padding, audio decoded once and kept in memory. The two run in
turns (`--rounds` x `--steps` updates each), so load on the machine hits both alike. Reported:
audio seconds trained per second and seconds per update, excluding start-up and decoding (the
plain loop decodes before it starts; ours preloads before its first update) and the first
`--warmup` updates of every turn, for both (ours starts each turn as a fresh run, whose first
updates pay for touching new memory).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.audio import load_audio  # noqa: E402
from model.ctc import CTCVocabulary  # noqa: E402
from training.batches import make_batches  # noqa: E402
from training.config import FinetuneConfig, load_config, model_config  # noqa: E402
from training.finetune import finetune  # noqa: E402
from training.manifest import read_manifest  # noqa: E402

RATE = 16000


def ours(config: FinetuneConfig, steps: int, warmup: int) -> tuple[float, float]:
    """(audio s/s, s/update) of `steps` updates of our trainer after `warmup` untimed ones, from its
    own metrics log."""
    with tempfile.TemporaryDirectory() as folder:
        run = dataclasses.replace(
            config, output_dir=folder, eval_manifest="", max_steps=warmup + steps, log_every=1, save_every=10**9
        )
        finetune(run)
        records = [json.loads(line) for line in (Path(folder) / "metrics.jsonl").read_text().splitlines()]
        # `finetune` saves its last step; that is not training time and is not in the records.
    first, last = (records[warmup - 1] if warmup else {"audio_seconds": 0.0, "train_seconds": 0.0}), records[-1]
    seconds = last["train_seconds"] - first["train_seconds"]
    return (last["audio_seconds"] - first["audio_seconds"]) / seconds, seconds / steps


class PlainLoop:
    """transformers' Wav2Vec2ForCTC trained the plain way, on the trainer's batches."""

    def __init__(self, config: FinetuneConfig):
        import transformers

        self.config = config
        entries = [entry for entry in read_manifest(Path(config.train_manifest)) if entry.text]
        self.vocab = CTCVocabulary.from_texts([entry.text for entry in entries])
        architecture = dataclasses.replace(
            model_config(config.model),
            vocab_size=len(self.vocab),
            pad_token_id=self.vocab.blank_id,
            mask_time_prob=config.mask_time_prob,
            mask_time_length=config.mask_time_length,
            mask_time_min_masks=config.mask_time_min_masks,
            mask_feature_prob=config.mask_channel_prob,
            mask_feature_length=config.mask_channel_length,
            mask_feature_min_masks=config.mask_channel_min_masks,
            ctc_loss_reduction=config.ctc_loss_reduction,
            ctc_zero_infinity=True,
        )
        hf_config = transformers.Wav2Vec2Config(**architecture.to_dict())
        self.model = transformers.Wav2Vec2ForCTC(hf_config).train()
        self.extractor = transformers.Wav2Vec2FeatureExtractor(
            sampling_rate=RATE, do_normalize=True, return_attention_mask=hf_config.feat_extract_norm == "layer"
        )
        self.audio = [load_audio(entry.audio, RATE) for entry in entries]  # decoded once
        self.labels = [self.vocab.encode(entry.text) for entry in entries]
        self.batches = make_batches(
            [entry.duration for entry in entries],
            config.max_batch_seconds,
            config.seed,
            0,
            config.max_batch_utterances,
            config.batch_by_length,
            config.length_pool,
        )

    def run(self, steps: int, warmup: int) -> tuple[float, float]:
        config = self.config
        optimiser = torch.optim.AdamW(
            self.model.parameters(),
            lr=config.learning_rate,
            betas=(0.9, 0.98),
            eps=1e-8,
            weight_decay=config.weight_decay,
        )
        audio_seconds, started = 0.0, time.perf_counter()
        for step, indices in enumerate(self.batches[: warmup + steps]):
            if step == warmup:
                audio_seconds, started = 0.0, time.perf_counter()
            batch = self.extractor(
                [self.audio[i] for i in indices], sampling_rate=RATE, padding=True, return_tensors="pt"
            )
            width = max(len(self.labels[i]) for i in indices)
            labels = torch.full((len(indices), width), -100)
            for row, i in enumerate(indices):
                labels[row, : len(self.labels[i])] = torch.tensor(self.labels[i])
            loss = self.model(**batch, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.clip_norm)
            optimiser.step()
            optimiser.zero_grad(set_to_none=True)
            audio_seconds += sum(len(self.audio[i]) for i in indices) / RATE
        elapsed = time.perf_counter() - started
        return audio_seconds / elapsed, elapsed / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, required=True, help="labelled training audio")
    parser.add_argument("--steps", type=int, default=30, help="updates per turn")
    parser.add_argument("--rounds", type=int, default=3, help="turns of each, alternating")
    parser.add_argument("--warmup", type=int, default=10, help="untimed updates at the start of every turn")
    parser.add_argument("overrides", nargs="*", help="key=value settings over the config")
    args = parser.parse_args()
    config = load_config(FinetuneConfig, args.config, [f"train_manifest={args.manifest}", *args.overrides])
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.rounds} rounds of {args.steps} "
        f"updates each after {args.warmup} untimed; batches of at most {config.max_batch_seconds} s / "
        f"{config.max_batch_utterances or 'any'} utterances"
    )
    plain = PlainLoop(config)
    if args.warmup + args.steps > len(plain.batches):
        parser.error(f"--warmup + --steps: at most {len(plain.batches)} (one pass over the manifest's batches)")
    parameters = sum(p.numel() for p in plain.model.parameters())
    print(f"model: {parameters / 1e6:.2f} M parameters")
    results: dict[str, list[tuple[float, float]]] = {"ours": [], "plain transformers loop": []}
    for round_number in range(args.rounds):
        results["ours"].append(ours(config, args.steps, args.warmup))
        results["plain transformers loop"].append(plain.run(args.steps, args.warmup))
        print(
            f"round {round_number + 1}: "
            + ", ".join(f"{name} {runs[-1][0]:.1f} audio-s/s" for name, runs in results.items())
        )
    print(f"\n| trainer | audio-s/s (median of {args.rounds}) | s/update | ratio |")
    print("|---|---:|---:|---:|")
    reference = statistics.median(rate for rate, _ in results["plain transformers loop"])
    for name, runs in results.items():
        rate = statistics.median(rate for rate, _ in runs)
        seconds = statistics.median(seconds for _, seconds in runs)
        print(f"| {name} | {rate:.1f} | {seconds:.3f} | {rate / reference:.2f}x |")
    # Each round's own ratio: steadier than the ratio of medians when the machine's speed drifts.
    ratios = [
        ours_rate / plain_rate
        for (ours_rate, _), (plain_rate, _) in zip(results["ours"], results["plain transformers loop"])
    ]
    print(
        f"\nours / plain, round by round: {', '.join(f'{r:.2f}' for r in ratios)} "
        f"(median {statistics.median(ratios):.2f}x)"
    )


if __name__ == "__main__":
    main()
