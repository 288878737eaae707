"""Command line: `python -m export onnx ...` and `python -m export tensorrt ...`."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

# Frame-level agreement with fp32 below which a reduced-precision variant is refused.
MIN_AGREEMENT = {"int8": 0.90, "fp16": 0.98}
FP32_TOLERANCE = 1e-3  # largest logit difference allowed between onnxruntime fp32 and PyTorch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export", description="export wav2vec 2.0 CTC models")
    commands = parser.add_subparsers(dest="command", required=True)

    onnx = commands.add_parser("onnx", help="export to ONNX and verify against PyTorch")
    onnx.add_argument("--model", required=True, help="Hugging Face folder or Hub id, or fairseq checkpoint (.pt)")
    onnx.add_argument("--out", required=True, type=Path, help="folder to write model.onnx and its settings to")
    onnx.add_argument("--quantize", choices=["int8"], help="dynamic int8 quantisation of the matrix products")
    onnx.add_argument("--fp16", action="store_true", help="fp16 weights and arithmetic, for GPUs")
    onnx.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    onnx.add_argument(
        "--no-fuse",
        dest="fuse",
        action="store_false",
        help="keep attention as plain ONNX operators (for runtimes other than ONNX Runtime, or a "
        "TensorRT engine built from every node); by default fp32 and int8 graphs get ONNX "
        "Runtime's fused Attention operator, which is faster on CPU",
    )
    onnx.add_argument(
        "--tolerance",
        type=float,
        default=FP32_TOLERANCE,
        help="largest logit difference accepted between the fp32 graph and PyTorch (default: %(default)g)",
    )
    onnx.add_argument(
        "--verify-audio",
        nargs="*",
        default=[],
        metavar="AUDIO",
        help="real recordings to verify on, besides the built-in signals",
    )

    trt = commands.add_parser("tensorrt", help="build a TensorRT engine (NVIDIA GPUs) for an exported model")
    trt.add_argument("--onnx", required=True, type=Path, help="DIR/model.onnx written by `python -m export onnx`")
    trt.add_argument("--min-seconds", type=float, default=0.5)
    trt.add_argument("--opt-seconds", type=float, default=10.0)
    trt.add_argument("--max-seconds", type=float, default=30.0)
    trt.add_argument("--max-batch", type=int, default=8)
    trt.add_argument("--no-fp16", dest="fp16", action="store_false", help="build a float32 engine")

    args = parser.parse_args(argv)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # the exporter narrates every step
    if args.command == "onnx" and args.quantize and args.fp16:
        parser.error("choose one of --quantize int8 and --fp16")
    try:
        return export_onnx(args) if args.command == "onnx" else build_tensorrt(args)
    except Exception as error:  # report any failure as one line; the traceback helps nobody at the CLI
        from model.audio import AudioError
        from model.hub import ModelNotFoundError
        from model.pytorch.checkpoint import CheckpointError

        from .tensorrt import TensorRTUnavailable

        if not isinstance(error, (AudioError, CheckpointError, ModelNotFoundError, TensorRTUnavailable, OSError)):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 1


def export_onnx(args: argparse.Namespace) -> int:
    from model.audio import load_audio
    from model.onnx import BATCHED_MODEL_FILE, MANIFEST_FILE, MODEL_FILE
    from model.pytorch.checkpoint import load_ctc_checkpoint

    checkpoint = load_ctc_checkpoint(args.model)
    real_audio = [load_audio(path, checkpoint.features.sampling_rate) for path in args.verify_audio]
    variant = "int8" if args.quantize else "fp16" if args.fp16 else "fp32"
    uses_mask = checkpoint.features.return_attention_mask
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the destination and move into place only once verified.
    with tempfile.TemporaryDirectory(dir=args.out.parent, prefix=f".{args.out.name}.") as work:
        staging = Path(work) / "export"
        staging.mkdir()
        write_settings(checkpoint, staging)
        print(
            f"exporting {args.model} ({checkpoint.config.num_hidden_layers} layers, "
            f"{'with' if uses_mask else 'without'} attention mask) ...",
            flush=True,
        )
        report, failure = export_graph(checkpoint, staging, MODEL_FILE, variant, args, real_audio, batched=False)
        if not failure and not uses_mask:
            print("exporting the padding-exact graph for batches ...", flush=True)
            report["batched"], failure = export_graph(
                checkpoint, staging, BATCHED_MODEL_FILE, variant, args, real_audio, batched=True
            )
            if not failure and optimized(args, variant):
                print("joining them: the padding-exact computation only for padded batches ...", flush=True)
                report["batched"]["joined"], failure = join_graphs(checkpoint, staging, variant, args, real_audio)
        if failure:
            print(f"error: verification failed: {failure}; nothing written to {args.out}", file=sys.stderr)
            return 1
        manifest = {
            "variant": variant,
            "source": str(args.model),
            "opset": _opset(staging / MODEL_FILE),
            "inputs": ["input_values", "attention_mask"] if uses_mask else ["input_values"],
            "outputs": ["logits"],
            "batched_model": None if uses_mask else BATCHED_MODEL_FILE,
            "fused_attention": optimized(args, variant),
            "verification": report,
        }
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        if args.out.exists():
            shutil.rmtree(args.out)
        staging.rename(args.out)
    print(f"wrote {args.out / MODEL_FILE} ({variant}, {(args.out / MODEL_FILE).stat().st_size / 1e6:.1f} MB)")
    return 0


def export_graph(
    checkpoint, staging: Path, name: str, variant: str, args: argparse.Namespace, real_audio: list, batched: bool
) -> tuple[dict, str | None]:
    """Export one graph in fp32, verify it, then derive and verify the variant. Returns (report, failure)."""
    from model.onnx import OnnxRecognizer

    from .exporter import convert_fp16, export_fp32, quantize_int8
    from .fusion import optimize_graph
    from .verify import verify

    path = export_fp32(checkpoint, staging / name, args.opset, batched=batched)
    if optimized(args, variant):
        config = checkpoint.config
        fused = optimize_graph(path, config.num_attention_heads, list(zip(config.conv_kernel, config.conv_stride)))
        print(f"fused {fused} attention blocks", flush=True)
    label = "batched fp32" if batched else "fp32"
    fp32 = verify(checkpoint, OnnxRecognizer(staging, model_file=name), label, real_audio)
    print(fp32.table())
    report = {"fp32": fp32.summary()}
    if fp32.max_abs_diff > args.tolerance:
        return report, f"{label} export differs from PyTorch by {fp32.max_abs_diff:.2e} > {args.tolerance:g}"
    if variant == "fp32":
        return report, None
    reduced_path = path.with_suffix(f".{variant}.onnx")
    (quantize_int8 if variant == "int8" else convert_fp16)(path, reduced_path)
    reduced = verify(
        checkpoint,
        OnnxRecognizer(staging, model_file=reduced_path.name),
        f"batched {variant}" if batched else variant,
        real_audio,
    )
    print(reduced.table())
    report[variant] = reduced.summary()
    reduced_path.replace(path)
    if reduced.frame_agreement < MIN_AGREEMENT[variant]:
        return report, (
            f"{variant} agrees with fp32 on {reduced.frame_agreement:.2%} of frames, below {MIN_AGREEMENT[variant]:.0%}"
        )
    return report, None


def optimized(args: argparse.Namespace, variant: str) -> bool:
    """Whether graphs get ONNX Runtime's fused operators and the padding branch. Not fp16: it is for
    GPUs, where TensorRT fuses for itself and cannot take ONNX Runtime's own operators."""
    return args.fuse and variant != "fp16"


def join_graphs(
    checkpoint, staging: Path, variant: str, args: argparse.Namespace, real_audio: list
) -> tuple[dict, str | None]:
    """Make the batched graph run the plain one on unpadded batches (export.branching), and verify it."""
    from model.onnx import BATCHED_MODEL_FILE, MODEL_FILE, OnnxRecognizer

    from .branching import exact_only_when_padded
    from .verify import verify

    joined = staging / f"joined.{BATCHED_MODEL_FILE}"
    exact_only_when_padded(staging / MODEL_FILE, staging / BATCHED_MODEL_FILE, joined)
    result = verify(checkpoint, OnnxRecognizer(staging, model_file=joined.name), f"joined {variant}", real_audio)
    print(result.table())
    joined.replace(staging / BATCHED_MODEL_FILE)
    if variant == "fp32" and result.max_abs_diff > args.tolerance:
        return result.summary(), f"joined export differs from PyTorch by {result.max_abs_diff:.2e} > {args.tolerance:g}"
    if variant != "fp32" and result.frame_agreement < MIN_AGREEMENT[variant]:
        return result.summary(), (
            f"joined {variant} agrees with fp32 on {result.frame_agreement:.2%} of frames, "
            f"below {MIN_AGREEMENT[variant]:.0%}"
        )
    return result.summary(), None


def write_settings(checkpoint, folder: Path) -> None:
    """What a server needs besides the graph: vocabulary, audio settings and the config's frame arithmetic."""
    checkpoint.config.to_json_file(folder / "config.json", "Wav2Vec2ForCTC")
    checkpoint.features.save(folder)
    checkpoint.vocab.save(folder)


def _opset(path: Path) -> int:
    import onnx

    graph = onnx.load(str(path), load_external_data=False)
    return next(entry.version for entry in graph.opset_import if entry.domain in ("", "ai.onnx"))


def build_tensorrt(args: argparse.Namespace) -> int:
    from model.runtime import TENSORRT_CACHE_FOLDER, TensorRTProfile

    from .tensorrt import build_engine

    profile = TensorRTProfile(args.min_seconds, args.opt_seconds, args.max_seconds, args.max_batch, fp16=args.fp16)
    engine = build_engine(args.onnx, profile)
    print(
        f"built TensorRT engine for {args.onnx} in {engine.folder / TENSORRT_CACHE_FOLDER} "
        f"(batch 1-{profile.max_batch}, {profile.min_seconds:g}-{profile.max_seconds:g} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
