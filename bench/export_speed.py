"""CPU speed of wav2vec2-base-sized models: transformers eager vs our PyTorch vs our ONNX fp32 and int8.

Run by hand (about 25 minutes on 2 cores):  python bench/export_speed.py [--threads N] [--shapes 5x1,30x8]

Random weights with the exact architecture of facebook/wav2vec2-base-960h; timing does not depend
on the weights. Every engine gets the same audio, the same thread count, a warm-up run at each
shape, and the median of several timed runs taken in turns. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from export.exporter import export_fp32, quantize_int8  # noqa: E402
from export.fusion import optimize_graph  # noqa: E402
from model.audio import batch_input_values  # noqa: E402
from model.onnx import MODEL_FILE, OnnxRecognizer  # noqa: E402
from model.pytorch.checkpoint import load_checkpoint  # noqa: E402

GFLOP_PER_AUDIO_SECOND = 14.8  # wav2vec2-base forward pass
SECONDS = (5, 15, 30)
BATCHES = (1, 8)


def build_base_model(folder: Path) -> None:
    vocab = ["<pad>", "<s>", "</s>", "<unk>", "|", *"ETAONIHSRDLUMWCFGYPBVK'XJQZ"]
    config = transformers.Wav2Vec2Config(vocab_size=len(vocab))  # the defaults are wav2vec2-base's
    transformers.Wav2Vec2ForCTC(config).save_pretrained(folder)
    (folder / "vocab.json").write_text("{" + ",".join(f'"{t}": {i}' for i, t in enumerate(vocab)) + "}")
    tokenizer = transformers.Wav2Vec2CTCTokenizer(str(folder / "vocab.json"))
    extractor = transformers.Wav2Vec2FeatureExtractor(return_attention_mask=False)
    transformers.Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)


def matmul_gflops(threads: int) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.matmul(a, b)
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        torch.matmul(a, b)
        runs.append(time.perf_counter() - start)
    return 2 * 2048**3 / min(runs) / 1e9


def interleaved_medians(engines: dict, inputs: np.ndarray, repeats: int) -> dict[str, float]:
    """Median seconds per engine; the engines take turns, so a slow spell of the machine hits them all alike."""
    for run in engines.values():
        run(inputs)  # warm-up at this shape
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(repeats):
        for name, run in engines.items():
            start = time.perf_counter()
            run(inputs)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def prepare(work: Path) -> None:
    """The base-sized model as a Hugging Face folder and as ONNX fp32 and int8, made once per run."""
    build_base_model(work / "hf")
    checkpoint = load_checkpoint(work / "hf")
    (work / "onnx").mkdir()
    for name in ("config.json", "vocab.json", "tokenizer_config.json", "processor_config.json"):
        (work / "onnx" / name).write_bytes((work / "hf" / name).read_bytes())
    export_fp32(checkpoint, work / "onnx" / "model.onnx")
    config = checkpoint.config  # fused attention, as `python -m export onnx` writes it
    optimize_graph(
        work / "onnx" / "model.onnx", config.num_attention_heads, list(zip(config.conv_kernel, config.conv_stride))
    )
    quantize_int8(work / "onnx" / "model.onnx", work / "onnx" / "model.int8.onnx")


def measure(work: Path, seconds: int, batch: int, threads: int, repeats: int, peak: float) -> None:
    """Time every engine on one shape and print its table rows."""
    torch.set_num_threads(threads)
    anchor = transformers.Wav2Vec2ForCTC.from_pretrained(work / "hf", attn_implementation="eager").eval()
    ours = load_checkpoint(work / "hf").model.eval()
    fp32 = OnnxRecognizer(work / "onnx", threads=threads, model_file=MODEL_FILE)
    int8 = OnnxRecognizer(work / "onnx", threads=threads, model_file="model.int8.onnx")

    def torch_engine(model, logits_of):
        def run(inputs):
            with torch.inference_mode():
                return logits_of(model(torch.from_numpy(inputs)))

        return run

    engines = {
        "transformers eager (anchor)": torch_engine(anchor, lambda out: out.logits),
        "ours, PyTorch": torch_engine(ours, lambda out: out),
        "ours, ONNX fp32": fp32.run,
        "ours, ONNX int8": int8.run,
    }
    generator = np.random.default_rng(seconds * 100 + batch)
    utterances = [0.1 * generator.standard_normal(seconds * 16000).astype(np.float32) for _ in range(batch)]
    inputs, _ = batch_input_values(utterances, do_normalize=True)
    audio_seconds = seconds * batch
    medians = interleaved_medians(engines, inputs, repeats)
    anchor_time = medians["transformers eager (anchor)"]
    for name, elapsed in medians.items():
        gflops = GFLOP_PER_AUDIO_SECOND * audio_seconds / elapsed
        print(
            f"| {name} | {seconds} s | {batch} | {elapsed / audio_seconds:.3f} | "
            f"{anchor_time / elapsed:.2f}x | {gflops:.0f} | {gflops / peak:.0%} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per engine and shape at batch 1")
    parser.add_argument("--batch-repeats", type=int, default=2, help="the same at batch 8")
    # 30x8 is left out by default: the four engines together need more than 24 GB for it.
    parser.add_argument("--shapes", default="5x1,15x1,30x1,5x8,15x8", help="seconds x batch, comma-separated")
    parser.add_argument("--shape", help=argparse.SUPPRESS)  # a child process measuring one shape
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--peak", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.shape:
        seconds, batch = (int(part) for part in args.shape.split("x"))
        measure(args.work, seconds, batch, args.threads, args.repeats if batch == 1 else args.batch_repeats, args.peak)
        return

    work = Path(tempfile.mkdtemp())
    prepare(work)
    peak = matmul_gflops(args.threads)
    print(
        f"CPU: {args.threads} threads, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"transformers {transformers.__version__}; matmul peak {peak:.0f} GFLOP/s (fp32, 2048^2)\n"
    )
    print("| engine | audio | batch | real-time factor | speed vs anchor | GFLOP/s | % of matmul |")
    print("|---|---|---|---|---|---|---|", flush=True)
    # One process per shape: onnxruntime's memory arenas keep their largest size, and four engines'
    # arenas at batch 8 of 30 s do not fit in 24 GB together with earlier shapes'.
    for shape in args.shapes.split(","):
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--shape",
                shape,
                "--work",
                str(work),
                "--peak",
                str(peak),
                "--threads",
                str(args.threads),
                "--repeats",
                str(args.repeats),
                "--batch-repeats",
                str(args.batch_repeats),
            ],
            check=True,
            stderr=subprocess.DEVNULL,
        )


if __name__ == "__main__":
    main()
