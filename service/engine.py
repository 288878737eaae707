"""Find or make the ONNX model to serve, and run it.

A folder with `model.onnx` is served as it is. Anything else `model/` loads (a Hugging Face
folder or Hub id, a fairseq checkpoint) is exported once into the cache folder by
`python -m export onnx`, in a child process, so the server itself never imports torch.
"""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
from pathlib import Path

from model.hub import resolve_model
from model.onnx import BATCHED_MODEL_FILE, MODEL_FILE, OnnxRecognizer
from model.package import package_onnx

from .settings import ModelSpec, Settings


class ModelUnavailable(Exception):
    """The configured model cannot be served; the message says what to do."""


def onnx_folder(reference: str, cache_dir: Path) -> Path:
    """The exported folder to serve for a model reference, exported into `cache_dir` first if need be."""
    path = package_onnx(resolve_model(reference))
    if path.is_dir() and (path / MODEL_FILE).is_file():
        return path
    cached = cache_dir / f"{path.name}-{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}"
    if (cached / MODEL_FILE).is_file():
        return cached
    if importlib.util.find_spec("torch") is None:
        raise ModelUnavailable(
            f"'{reference}' is not an exported ONNX model folder and torch is not installed to export it; "
            f"run `python -m export onnx --model {reference} --out DIR` where torch is, then serve DIR")
    print(f"exporting {reference} to {cached} (once) ...", file=sys.stderr, flush=True)
    result = subprocess.run([sys.executable, "-m", "export", "onnx", "--model", str(path), "--out", str(cached)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelUnavailable(f"exporting '{reference}' failed: {last}")
    return cached


def providers(settings: Settings, folder: Path) -> tuple[list, str | None]:
    """(execution providers, graph file the TensorRT engine was built for, if any)."""
    if settings.provider == "cuda":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"], None
    if settings.provider == "tensorrt":
        import json

        from export.tensorrt import TensorRTProfile, tensorrt_providers
        from model.config import FeatureSettings, Wav2Vec2Config

        built = json.loads((folder / "export.json").read_text()).get("tensorrt")
        if not built:
            raise ModelUnavailable(f"no TensorRT engine for {folder}; run `python -m export tensorrt --onnx "
                                   f"{folder / MODEL_FILE}` first")
        profile = TensorRTProfile(**{key: value for key, value in built.items() if key not in ("model_file", "cache")})
        rate = FeatureSettings.from_folder(folder, Wav2Vec2Config.from_json_file(folder / "config.json")).sampling_rate
        inputs = ["input_values", "attention_mask"] if built["model_file"] == BATCHED_MODEL_FILE else ["input_values"]
        return tensorrt_providers(folder, profile, inputs, rate), built["model_file"]
    return ["CPUExecutionProvider"], None


def load_engine(settings: Settings, spec: ModelSpec) -> OnnxRecognizer:
    """The graph to serve: the recognizer's own choice (for group-norm models the padding-exact graph,
    so batching changes no result), or the one a TensorRT engine was built for. Without ONNX
    Runtime's CPU memory arena: the memory a large request takes goes back when it is answered."""
    folder = onnx_folder(spec.reference, settings.cache_dir)
    execution_providers, engine_file = providers(settings, folder)
    return OnnxRecognizer(folder, providers=execution_providers, threads=settings.threads, model_file=engine_file,
                          memory_arena=False)
