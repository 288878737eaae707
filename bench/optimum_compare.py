"""Our exported graphs beside Hugging Face Optimum's export, transformers eager and our Python path.

    python bench/optimum_compare.py [--optimum-python ../optimum-venv/bin/python] [--shapes 15x1,10x4]

Optimum needs an older transformers than this project, so it lives in its own environment, made
once with bench/optimum-requirements.txt (this script says how when it is missing); only its
export and quantisation run there, as a subprocess. Everything is then timed here, in one process,
on plain onnxruntime sessions ("raw engine"): the engines take turns on the same input, round after
round, so a slow spell of a busy machine hits them all alike. Each ratio is the median over rounds of
(engine time / Optimum fp32 time in the same round), with the spread of those ratios; the fastest
run of each engine is shown too. Random weights with wav2vec2-base's exact architecture (speed does
not depend on the weights).

Engines: Optimum fp32 and int8 (MatMul/Gemm dynamic, its avx512_vnni config: its default operator
list also quantises the positional convolution, whose weight the exporter computes, and fails);
ours: `model.onnx` and `model.batched.onnx` (what the server runs) as `python -m export onnx` writes
them, fp32 and int8; the same through OnnxRecognizer.logits (normalisation included); transformers
eager (torch, same thread count). A shape "10x4p" pads the batch (lengths 10, 8, 6, 4 s), so the
served graph takes its padding-exact branch while Optimum's graph lets padding in.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from export_speed import build_base_model  # noqa: E402

# Beside the checkout, like ../shared/data: outside the repository, so no tool mistakes it for ours.
DEFAULT_OPTIMUM_PYTHON = os.environ.get("OPTIMUM_PYTHON", str(BENCH.parent.parent / "optimum-venv" / "bin" / "python"))
SETUP_HINT = (
    "python3.11 -m venv {venv} && {venv}/bin/pip install torch==2.13.0 "
    "--extra-index-url https://download.pytorch.org/whl/cpu && {venv}/bin/pip install -r {requirements}"
)
# Run inside Optimum's environment: export with its CLI code path, then its dynamic int8 quantisation.
OPTIMUM_SCRIPT = """
import sys
from optimum.exporters.onnx import main_export
from optimum.onnxruntime import ORTQuantizer
from optimum.onnxruntime.configuration import AutoQuantizationConfig
source, out = sys.argv[1], sys.argv[2]
main_export(source, out + "/fp32", task="automatic-speech-recognition")
config = AutoQuantizationConfig.avx512_vnni(
    is_static=False, per_channel=False, operators_to_quantize=["MatMul", "Gemm"]
)
ORTQuantizer.from_pretrained(out + "/fp32", file_name="model.onnx").quantize(save_dir=out + "/int8",
                                                                             quantization_config=config)
"""


def check_optimum(python: str) -> str:
    if not Path(python).is_file():
        venv = Path(python).parent.parent
        raise SystemExit(
            f"error: no Optimum environment at {python}. Make one (about 2 GB) with:\n  "
            + SETUP_HINT.format(venv=venv, requirements=BENCH / "optimum-requirements.txt")
            + "\nthen pass --optimum-python or set OPTIMUM_PYTHON"
        )
    probe = subprocess.run(
        [
            python,
            "-c",
            "import optimum.onnxruntime, transformers, onnxruntime; "
            "print(transformers.__version__, onnxruntime.__version__)",
        ],
        capture_output=True,
        text=True,
    )
    if probe.returncode:
        raise SystemExit(f"error: {python} cannot import Optimum's ONNX Runtime support:\n{probe.stderr[-1500:]}")
    return probe.stdout.strip()


def prepare(work: Path, optimum_python: str) -> dict[str, Path]:
    """Build the base-sized model once; export it our way and Optimum's way. Returns graph paths."""
    build_base_model(work / "hf")
    for variant, extra in (("fp32", []), ("int8", ["--quantize", "int8"])):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "export",
                "onnx",
                "--model",
                str(work / "hf"),
                "--out",
                str(work / f"ours-{variant}"),
                *extra,
            ],
            check=True,
            cwd=BENCH.parent,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    subprocess.run(
        [optimum_python, "-c", OPTIMUM_SCRIPT, str(work / "hf"), str(work / "optimum")],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return {
        "Optimum fp32": work / "optimum" / "fp32" / "model.onnx",
        "Optimum int8": work / "optimum" / "int8" / "model_quantized.onnx",
        "ours model.onnx fp32": work / "ours-fp32" / "model.onnx",
        "ours served fp32": work / "ours-fp32" / "model.batched.onnx",
        "ours served int8": work / "ours-int8" / "model.batched.onnx",
    }


def graph_engine(path: Path, threads: int):
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = {given.name for given in session.get_inputs()}

    def run(values: np.ndarray, mask: np.ndarray) -> None:
        feeds = {"input_values": values, **({"attention_mask": mask} if "attention_mask" in names else {})}
        session.run(None, feeds)

    return run


def engines(graphs: dict[str, Path], work: Path, threads: int, eager: bool) -> dict:
    from model.onnx import OnnxRecognizer

    runs = {name: graph_engine(path, threads) for name, path in graphs.items()}
    recognizer = OnnxRecognizer(work / "ours-fp32", threads=threads)
    runs["ours served fp32, OnnxRecognizer"] = lambda values, mask, utterances: recognizer.logits(utterances)
    if eager:
        import torch
        import transformers

        torch.set_num_threads(threads)
        model = transformers.Wav2Vec2ForCTC.from_pretrained(work / "hf", attn_implementation="eager").eval()

        def run_eager(values, mask):
            with torch.inference_mode():
                model(torch.from_numpy(values))

        runs["transformers eager"] = run_eager
    return runs


def inputs(shape: str) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    seconds, batch = shape.rstrip("p").split("x")
    lengths = [float(seconds)] * int(batch)
    if shape.endswith("p"):
        lengths = [float(seconds) * (1 - 0.2 * row) for row in range(int(batch))]
    generator = np.random.default_rng(0)
    utterances = [(0.1 * generator.standard_normal(int(s * 16000))).astype(np.float32) for s in lengths]
    values = np.zeros((len(utterances), max(map(len, utterances))), np.float32)
    mask = np.zeros(values.shape, np.int64)
    for row, samples in enumerate(utterances):
        values[row, : len(samples)] = (samples - samples.mean()) / np.sqrt(samples.var() + 1e-7)
        mask[row, : len(samples)] = 1
    return values, mask, utterances


def measure(runs: dict, shape: str, rounds: int) -> dict[str, list[float]]:
    values, mask, utterances = inputs(shape)

    def call(name, run):
        if name.endswith("OnnxRecognizer"):
            return run(values, mask, utterances)
        return run(values, mask)

    for name, run in runs.items():
        call(name, run)  # warm-up at this shape
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            call(name, run)
            times[name].append(time.perf_counter() - start)
    return times


def report(shape: str, times: dict[str, list[float]]) -> list[dict]:
    anchor = times["Optimum fp32"]
    rows = []
    for name, values in times.items():
        ratios = sorted(value / base for value, base in zip(values, anchor))
        quarter = len(ratios) // 4
        rows.append(
            {
                "shape": shape,
                "engine": name,
                "median_s": statistics.median(values),
                "min_s": min(values),
                "speed_vs_optimum_fp32": 1 / statistics.median(ratios),
                "spread": [1 / ratios[-1 - quarter], 1 / ratios[quarter]],
                "min_speed_vs_optimum_fp32": min(anchor) / min(values),
            }
        )
        print(
            f"| {shape} | {name} | {statistics.median(values):.2f} | {min(values):.2f} | "
            f"{1 / statistics.median(ratios):.2f}x ({1 / ratios[-1 - quarter]:.2f}-{1 / ratios[quarter]:.2f}) | "
            f"{min(anchor) / min(values):.2f}x |",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--optimum-python",
        default=DEFAULT_OPTIMUM_PYTHON,
        help="python of the environment with bench/optimum-requirements.txt (env OPTIMUM_PYTHON)",
    )
    parser.add_argument("--shapes", default="15x1,10x4", help="seconds x batch, comma-separated; suffix p: padded")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--no-eager", dest="eager", action="store_false", help="leave out transformers eager")
    parser.add_argument("--work", type=Path, help="keep the models here (reused when present)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()
    versions = check_optimum(args.optimum_python)
    work = args.work or Path(tempfile.mkdtemp(prefix="optimum-compare-"))
    work.mkdir(parents=True, exist_ok=True)
    graphs = json.loads((work / "graphs.json").read_text()) if (work / "graphs.json").is_file() else None
    if graphs is None:
        graphs = {name: str(path) for name, path in prepare(work, args.optimum_python).items()}
        (work / "graphs.json").write_text(json.dumps(graphs))
    runs = engines({name: Path(path) for name, path in graphs.items()}, work, args.threads, args.eager)
    load = os.getloadavg()
    print(
        f"{args.threads} threads, {os.cpu_count()} CPUs, load average {load[0]:.1f}; onnxruntime "
        f"{onnxruntime.__version__}; Optimum's environment: transformers, onnxruntime {versions}; "
        f"{args.rounds} interleaved rounds\n"
    )
    print(
        "| audio x batch | engine | median s | fastest s | speed vs Optimum fp32 (median of per-round ratios, "
        "interquartile) | fastest vs fastest |"
    )
    print("|---|---|---|---|---|---|", flush=True)
    rows = []
    for shape in args.shapes.split(","):
        rows += report(shape, measure(runs, shape, args.rounds))
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
