"""Word error rate of int8 variants against the fp32 graph they come from, on real recordings.

    python bench/int8_accuracy.py [--model models/digits/onnx] [--data ../shared/data] [--variants ...]

Greedy decoding of each utterance alone (no padding, so every variant sees the same input), with
the model's vocabulary; WER and CER by training.metrics on the FSDD test split (its
transcripts_test.tsv) and the digits-multi dev speakers (split as training/recipes/digits_multi.py
does, same seed). Variants (export.exporter.quantize_int8), each quantising every matrix product
unless said: `dynamic` (one weight scale per matrix), `dynamic-per-channel`, `keep-float` (per
channel, the feature projection, the first transformer block and the output layer left in float32:
what `python -m export onnx --quantize int8` writes) and `static-per-channel` (activation ranges
calibrated on FSDD *training* recordings, never the test ones). Only MatMul/Gemm are quantised:
quantising wav2vec 2.0's convolutions costs it much accuracy. Only `model.onnx` is evaluated (each
utterance alone), so only it is quantised. Prints a Markdown table; the
difference column is in WER points (percentage points) against fp32.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from export.exporter import KEEP_FLOAT_MODULES, quantize_int8  # noqa: E402
from model.audio import load_audio, model_inputs  # noqa: E402
from model.onnx import MODEL_FILE, OnnxRecognizer  # noqa: E402
from training.manifest import Entry, build_manifest, read_manifest  # noqa: E402
from training.metrics import error_rates  # noqa: E402

VARIANTS = ("dynamic", "dynamic-per-channel", "keep-float", "static-per-channel")
CALIBRATION_UTTERANCES = 64  # FSDD training recordings whose activation ranges static quantisation takes


def evaluation_sets(data: Path, work: Path) -> dict[str, list[Entry]]:
    sets = {}
    fsdd = data / "fsdd" / "transcripts_test.tsv"
    if fsdd.is_file():
        sets["FSDD test"], _ = build_manifest(transcripts=fsdd)
    multi = data / "digits-multi"
    if (multi / "manifest.tsv").is_file():
        from training.recipes.digits_multi import split  # the recipe's own speaker split

        split(multi, work / "multi", dev_fraction=0.2, seed=7)
        sets["digits-multi dev"] = read_manifest(work / "multi" / "dev.jsonl")
    if not sets:
        raise SystemExit(
            f"error: no evaluation data under {data} (expected fsdd/transcripts_test.tsv and "
            "digits-multi/manifest.tsv); pass --data"
        )
    return sets


def calibration_feeds(data: Path, recognizer: OnnxRecognizer) -> list[dict[str, np.ndarray]]:
    train = data / "fsdd" / "transcripts_train.tsv"
    if not train.is_file():
        raise SystemExit(f"error: static quantisation calibrates on {train}, which is missing")
    entries, _ = build_manifest(transcripts=train)
    generator = np.random.default_rng(0)
    chosen = generator.choice(len(entries), size=min(CALIBRATION_UTTERANCES, len(entries)), replace=False)
    feeds = []
    for index in sorted(chosen):
        values, _ = model_inputs(
            [load_audio(entries[index].audio, recognizer.features.sampling_rate)], recognizer.features
        )
        feeds.append({"input_values": values})
    return feeds


def transcribe(recognizer: OnnxRecognizer, audio: list[np.ndarray]) -> list[str]:
    return [recognizer.vocab.greedy_decode(recognizer.logits([samples])[0]) for samples in audio]


def variant_folder(source: Path, work: Path, variant: str, calibration: list[dict]) -> Path:
    """A copy of the exported folder whose model.onnx is the variant (fp32: the original)."""
    folder = work / variant
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("*.onnx", "tensorrt"))
    for graph in [source / MODEL_FILE]:
        if variant == "fp32":
            shutil.copy(graph, folder / graph.name)
        else:
            feeds = None
            if variant.startswith("static"):  # the padding-exact graph takes a mask too: all ones, no padding
                inputs = {given.name for given in OnnxRecognizer(source, model_file=graph.name).session.get_inputs()}
                feeds = [
                    {
                        **feed,
                        **(
                            {"attention_mask": np.ones(feed["input_values"].shape, np.int64)}
                            if "attention_mask" in inputs
                            else {}
                        ),
                    }
                    for feed in calibration
                ]
            quantize_int8(
                graph,
                folder / graph.name,
                per_channel=variant != "dynamic",
                calibration=feeds,
                keep_float=KEEP_FLOAT_MODULES if variant == "keep-float" else (),
            )
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/digits/onnx"), help="an exported fp32 folder")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    fp32 = OnnxRecognizer(args.model, model_file=MODEL_FILE)
    if fp32.manifest.get("variant", "fp32") != "fp32":
        raise SystemExit(f"error: {args.model} holds a {fp32.manifest['variant']} graph; give an fp32 export")
    rate = fp32.features.sampling_rate
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        sets = evaluation_sets(args.data, work)
        audio = {name: [load_audio(entry.audio, rate) for entry in entries] for name, entries in sets.items()}
        calibration = calibration_feeds(args.data, fp32) if any(v.startswith("static") for v in args.variants) else []
        print(
            f"model {args.model}; " + ", ".join(f"{name}: {len(entries)} utterances" for name, entries in sets.items())
        )
        print("\n| variant | set | WER | CER | WER - fp32 (points) | transcripts changed | seconds |")
        print("|---|---|---|---|---|---|---|", flush=True)
        baseline: dict[str, tuple[float, list[str]]] = {}
        for variant in ["fp32", *args.variants]:
            folder = variant_folder(args.model, work, variant, calibration)
            recognizer = OnnxRecognizer(folder, threads=args.threads, model_file=MODEL_FILE)
            for name, entries in sets.items():
                start = time.perf_counter()
                texts = transcribe(recognizer, audio[name])
                elapsed = time.perf_counter() - start
                rates = error_rates([entry.text for entry in entries], texts)
                baseline.setdefault(name, (rates["wer"], texts))
                changed = sum(a != b for a, b in zip(texts, baseline[name][1]))
                print(
                    f"| {variant} | {name} | {rates['wer']:.2%} | {rates['cer']:.2%} | "
                    f"{100 * (rates['wer'] - baseline[name][0]):+.2f} | {changed}/{len(texts)} | {elapsed:.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
