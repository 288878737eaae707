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
from model.onnx import MODEL_FILE, OnnxRecognizer
from model.package import package_onnx
from model.runtime import RuntimeUnavailable

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
            f"run `python -m export onnx --model {reference} --out DIR` where torch is, then serve DIR"
        )
    print(f"exporting {reference} to {cached} (once) ...", file=sys.stderr, flush=True)
    result = subprocess.run(
        [sys.executable, "-m", "export", "onnx", "--model", str(path), "--out", str(cached)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelUnavailable(f"exporting '{reference}' failed: {last}")
    return cached


def load_engines(settings: Settings, spec: ModelSpec) -> tuple[list[OnnxRecognizer], OnnxRecognizer | None]:
    """The sessions to serve a model with (`Settings.layout`: one single-thread session per core by
    default) and its wide session for lone requests (None without one), each on the graph to serve:
    the recognizer's own choice (for group-norm models the padding-exact graph, so batching changes
    no result), or the one a TensorRT engine was built for. ONNX Runtime's CPU memory arena keeps
    the working memory of runs up to --inference-memory-seconds of audio, so that they map no fresh
    pages; a larger run gives its back when it ends, so the memory a large request takes goes back
    when it is answered. Each session holds its own weights (see docs/performance.md)."""
    folder = onnx_folder(spec.reference, settings.cache_dir)
    layout = settings.layout

    def session(threads: int) -> OnnxRecognizer:
        return OnnxRecognizer(
            folder, provider=settings.provider, threads=threads, keep_memory_seconds=settings.inference_memory_seconds
        )

    try:
        return [session(threads) for threads in layout.threads], (session(layout.wide) if layout.wide else None)
    except RuntimeUnavailable as error:
        raise ModelUnavailable(str(error)) from None
