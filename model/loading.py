"""The recognizer for a model reference: ONNX Runtime for exported folders, PyTorch for checkpoints.

An exported folder needs no torch: `python -m model transcribe` runs one where only the server's
packages are installed.
"""

from __future__ import annotations

from pathlib import Path

from .hub import resolve_model
from .onnx import MODEL_FILE, OnnxRecognizer
from .recognizer import Recognizer


def load_recognizer(reference: str | Path, device: str = "cpu") -> Recognizer:
    """A folder written by `python -m export onnx` runs with ONNX Runtime; anything `load_checkpoint`
    reads (a Hugging Face folder or Hub id, a fairseq checkpoint) with PyTorch on `device`.
    Raises ModelNotFoundError, CheckpointError (a ValueError) or ImportError (torch missing)."""
    path = resolve_model(reference)
    if path.is_dir() and (path / MODEL_FILE).is_file():
        return OnnxRecognizer(path)
    from .pytorch.checkpoint import load_ctc_checkpoint
    from .pytorch.recognizer import TorchRecognizer

    return TorchRecognizer.from_checkpoint(load_ctc_checkpoint(reference), device)
