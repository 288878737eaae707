"""One table: an exported model on ONNX Runtime's GPU providers at batch 1-32, and the decoders.

Run through bench/gpu.sh, which makes the environment (onnxruntime-gpu, never beside onnxruntime).
By hand:  python bench/gpu_table.py [--model models/digits/onnx] [--seconds 10] [--batches 1,2,4,8,16,32]
          python bench/gpu_table.py --dry-run     (CPU provider, batches 1-2: checks this script anywhere)

Providers: CPU (the reference), CUDA fp32, and TensorRT (fp16 engine, built once per profile into the
model folder's engine cache by export.tensorrt; the build is timed apart). Each cell: median over
--repeats runs after a warm-up, in ms per batch, and audio seconds processed per wall second. Every
provider's logits are compared with the CPU's at batch 1 (largest |difference|), so a fast but wrong
engine shows. Decoders (CPU work on every machine): greedy, pyctcdecode's lexicon-free beam search,
and flashlight's lexicon search, with the model folder's (or its parent's) lm.arpa and lexicon.txt,
timed in ms per audio second on the model's own logits.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def providers_to_run(dry_run: bool) -> list[str]:
    import onnxruntime

    if dry_run:
        return ["CPUExecutionProvider"]
    available = onnxruntime.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        fail(
            f"onnxruntime {onnxruntime.__version__} offers only {', '.join(available)}: this is not onnxruntime-gpu, "
            "or CUDA/cuDNN libraries are missing (bench/gpu.sh installs onnxruntime-gpu[cuda,cudnn])"
        )
    chosen = ["CPUExecutionProvider", "CUDAExecutionProvider"]
    if "TensorrtExecutionProvider" in available:
        chosen.append("TensorrtExecutionProvider")
    else:
        print("note: no TensorRT provider in this onnxruntime; its rows are left out", file=sys.stderr)
    return chosen


def recognizer_for(folder: Path, provider: str, max_batch: int, seconds: float):
    from export.tensorrt import TensorRTProfile, TensorRTUnavailable, check_available, tensorrt_providers
    from model.onnx import OnnxRecognizer

    if provider == "TensorrtExecutionProvider":
        try:
            check_available()
        except TensorRTUnavailable as error:
            print(f"note: TensorRT left out: {error}", file=sys.stderr)
            return None, 0.0
        probe = OnnxRecognizer(folder)
        inputs = [given.name for given in probe.session.get_inputs()]
        profile = TensorRTProfile(
            min_seconds=0.5, opt_seconds=seconds, max_seconds=max(30.0, seconds), max_batch=max_batch, opt_batch=1
        )
        start = time.perf_counter()
        engine = OnnxRecognizer(
            folder, providers=tensorrt_providers(folder, profile, inputs, probe.features.sampling_rate)
        )
        engine.logits([np.zeros(int(seconds * probe.features.sampling_rate), np.float32)])  # builds the engine
        return engine, time.perf_counter() - start
    return OnnxRecognizer(folder, providers=[provider, "CPUExecutionProvider"]), 0.0


def time_batches(recognizer, batches: list[int], seconds: float, repeats: int) -> dict[int, float]:
    generator = np.random.default_rng(0)
    rate = recognizer.features.sampling_rate
    medians = {}
    for batch in batches:
        audio = [(0.1 * generator.standard_normal(int(seconds * rate))).astype(np.float32) for _ in range(batch)]
        recognizer.logits(audio)  # warm-up (and, on CUDA, kernel selection at this shape)
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            recognizer.logits(audio)
            runs.append(time.perf_counter() - start)
        medians[batch] = statistics.median(runs)
    return medians


def decoder_rows(folder: Path, logits: np.ndarray, frame_seconds: float, repeats: int) -> list[tuple[str, float]]:
    """(decoder, ms per audio second) on the same logits."""
    from model.ctc import CTCVocabulary
    from model.decoding import BeamOptions, BeamSearchDecoder, greedy_decode

    vocab = CTCVocabulary.from_folder(folder)
    audio_seconds = len(logits) * frame_seconds
    resources = [place for place in (folder, folder.parent) if (place / "lm.arpa").is_file()]
    decoders = [("greedy", lambda: greedy_decode(vocab, logits, frame_seconds))]
    if resources:
        lm, lexicon_file = resources[0] / "lm.arpa", resources[0] / "lexicon.txt"
        free = BeamSearchDecoder(vocab, lm)
        pyctcdecode = BeamOptions(beam_search="pyctcdecode")
        decoders.append(("beam, pyctcdecode (lexicon-free)", lambda: free.decode(logits, frame_seconds, pyctcdecode)))
        if lexicon_file.is_file():
            words = tuple(line.split()[0] for line in lexicon_file.read_text().splitlines() if line.strip())
            lexical = BeamSearchDecoder(vocab, lm, lexicon=words)
            decoders.append(
                (
                    "beam, flashlight (lexicon)",
                    lambda: lexical.decode(logits, frame_seconds, BeamOptions(beam_search="flashlight")),
                )
            )
    else:
        print(f"note: no lm.arpa in {folder} or its parent: beam search rows left out", file=sys.stderr)
    rows = []
    for name, run in decoders:
        run()
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            runs.append(time.perf_counter() - start)
        rows.append((name, 1000 * statistics.median(runs) / audio_seconds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/digits/onnx"), help="an exported ONNX folder")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per utterance")
    parser.add_argument("--batches", default="1,2,4,8,16,32")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--dry-run", action="store_true", help="CPU provider only, batches 1 and 2, 2 repeats")
    args = parser.parse_args()
    if not (args.model / "config.json").is_file():
        fail(f"{args.model} is not an exported model folder (no config.json); export one with python -m export onnx")
    import onnxruntime

    batches = [1, 2] if args.dry_run else [int(part) for part in args.batches.split(",")]
    repeats = 2 if args.dry_run else args.repeats
    providers = providers_to_run(args.dry_run)
    print(
        f"model {args.model}; {args.seconds:g} s per utterance; onnxruntime {onnxruntime.__version__}; "
        f"device {onnxruntime.get_device()}\n"
    )
    print("| provider | batch | ms per batch | audio s per s | max abs diff vs CPU |")
    print("|---|---|---|---|---|", flush=True)
    reference = config = None
    for provider in providers:
        recognizer, build = recognizer_for(args.model, provider, max(batches), args.seconds)
        if recognizer is None:
            continue
        if build:
            print(f"| {provider} engine build | - | {1000 * build:.0f} | - | - |")
        rate = recognizer.features.sampling_rate
        samples = int(args.seconds * rate)
        check = [(0.1 * np.random.default_rng(1).standard_normal(samples)).astype(np.float32)]  # same for all
        config = recognizer.config
        logits = recognizer.logits(check)[0]
        reference = logits if reference is None else reference
        difference = float(np.abs(logits - reference).max())
        for batch, elapsed in time_batches(recognizer, batches, args.seconds, repeats).items():
            print(
                f"| {provider.removesuffix('ExecutionProvider')} | {batch} | {1000 * elapsed:.1f} | "
                f"{batch * args.seconds / elapsed:.0f} | {difference:.1e} |",
                flush=True,
            )
    frame_seconds = config.frame_seconds(rate)  # the CPU provider always runs, so both are set
    print("\n| decoder | ms per audio second |")
    print("|---|---|")
    for name, cost in decoder_rows(args.model, reference, frame_seconds, repeats):
        print(f"| {name} | {cost:.2f} |", flush=True)


if __name__ == "__main__":
    main()
