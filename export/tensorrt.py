"""TensorRT engines through onnxruntime's TensorRT execution provider, with explicit shape profiles.

TensorRT compiles one engine per shape profile. We give it one narrow profile (batch 1 to
`max_batch`, `min_seconds` to `max_seconds` of audio, tuned for `opt_seconds`), build it once,
and keep it in an engine cache beside the model, so a server starts without rebuilding. The
profile, the provider options and the manifest entry are `model.runtime`'s, where the server reads them.
Needs an NVIDIA GPU and onnxruntime-gpu with TensorRT libraries.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import onnxruntime

from model.onnx import OnnxRecognizer
from model.runtime import TensorRTProfile, record_tensorrt, tensorrt_providers

__all__ = ["TensorRTProfile", "TensorRTUnavailable", "build_engine", "check_available"]

TENSORRT_LIBRARY = "libnvinfer.so.10"  # the TensorRT major version onnxruntime-gpu 1.31 is built against


class TensorRTUnavailable(RuntimeError):
    """This machine cannot run onnxruntime's TensorRT execution provider."""


def check_available() -> None:
    available = onnxruntime.get_available_providers()
    if "TensorrtExecutionProvider" not in available:
        raise TensorRTUnavailable(
            "TensorRT needs an NVIDIA GPU with onnxruntime-gpu and the TensorRT libraries installed "
            f"(pip install '.[gpu]' tensorrt); this onnxruntime offers only {', '.join(available)}"
        )
    try:  # onnxruntime-gpu lists the provider even when TensorRT itself is missing
        ctypes.CDLL(TENSORRT_LIBRARY)
    except OSError:
        raise TensorRTUnavailable(
            f"onnxruntime-gpu offers TensorRT, but TensorRT's library {TENSORRT_LIBRARY} is not installed or not "
            "on LD_LIBRARY_PATH (pip install tensorrt-cu13, or NVIDIA's TensorRT packages)"
        ) from None


def build_engine(model_path: Path, profile: TensorRTProfile) -> OnnxRecognizer:
    """Build the engine for `model_path`'s folder, run it at the profile's corner shapes, record it."""
    check_available()
    folder = model_path.parent
    reference = OnnxRecognizer(folder, model_file=model_path.name)
    inputs = [given.name for given in reference.session.get_inputs()]
    rate = reference.features.sampling_rate
    engine = OnnxRecognizer(
        folder, providers=tensorrt_providers(folder, profile, inputs, rate), model_file=model_path.name
    )
    if "TensorrtExecutionProvider" not in engine.session.get_providers():
        raise TensorRTUnavailable("onnxruntime could not start its TensorRT execution provider on this machine")
    generator = np.random.default_rng(0)
    for batch, seconds in (
        (1, profile.min_seconds),
        (profile.opt_batch, profile.opt_seconds),
        (profile.max_batch, profile.max_seconds),
    ):
        engine.logits([0.1 * generator.standard_normal(int(seconds * rate)).astype(np.float32)] * batch)
    record_tensorrt(folder, model_path.name, inputs, profile)
    return engine
