"""TensorRT engines through onnxruntime's TensorRT execution provider, with explicit shape profiles.

TensorRT compiles one engine per shape profile. We give it one narrow profile (batch 1 to
`max_batch`, `min_seconds` to `max_seconds` of audio, tuned for `opt_seconds`), build it once,
and keep it in an engine cache beside the model, so a server starts without rebuilding.
Needs an NVIDIA GPU and onnxruntime-gpu with TensorRT libraries.
"""

from __future__ import annotations

import ctypes
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime

from model.onnx import MANIFEST_FILE, OnnxRecognizer

CACHE_FOLDER = "tensorrt"
TENSORRT_LIBRARY = "libnvinfer.so.10"  # the TensorRT major version onnxruntime-gpu 1.31 is built against


class TensorRTUnavailable(RuntimeError):
    """This machine cannot run onnxruntime's TensorRT execution provider."""


@dataclass
class TensorRTProfile:
    min_seconds: float = 0.5
    opt_seconds: float = 10.0
    max_seconds: float = 30.0
    max_batch: int = 8
    opt_batch: int = 1
    fp16: bool = True

    def shapes(self, inputs: list[str], sampling_rate: int) -> dict[str, str]:
        def spec(batch: int, seconds: float) -> str:
            return ",".join(f"{name}:{batch}x{int(seconds * sampling_rate)}" for name in inputs)

        return {"trt_profile_min_shapes": spec(1, self.min_seconds),
                "trt_profile_opt_shapes": spec(self.opt_batch, self.opt_seconds),
                "trt_profile_max_shapes": spec(self.max_batch, self.max_seconds)}


def tensorrt_providers(folder: Path, profile: TensorRTProfile, inputs: list[str], sampling_rate: int) -> list:
    """Provider list for a session that uses (and, the first time, builds) the cached engine."""
    options = {
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(folder / CACHE_FOLDER),
        "trt_timing_cache_enable": True,
        "trt_fp16_enable": profile.fp16,
        **profile.shapes(inputs, sampling_rate),
    }
    # Nodes TensorRT cannot take run on CUDA, then on the CPU.
    return [("TensorrtExecutionProvider", options), "CUDAExecutionProvider", "CPUExecutionProvider"]


def check_available() -> None:
    available = onnxruntime.get_available_providers()
    if "TensorrtExecutionProvider" not in available:
        raise TensorRTUnavailable(
            "TensorRT needs an NVIDIA GPU with onnxruntime-gpu and the TensorRT libraries installed "
            f"(pip install '.[gpu]' tensorrt); this onnxruntime offers only {', '.join(available)}")
    try:  # onnxruntime-gpu lists the provider even when TensorRT itself is missing
        ctypes.CDLL(TENSORRT_LIBRARY)
    except OSError:
        raise TensorRTUnavailable(
            f"onnxruntime-gpu offers TensorRT, but TensorRT's library {TENSORRT_LIBRARY} is not installed or not "
            "on LD_LIBRARY_PATH (pip install tensorrt-cu13, or NVIDIA's TensorRT packages)") from None


def build_engine(model_path: Path, profile: TensorRTProfile) -> OnnxRecognizer:
    """Build the engine for `model_path`'s folder, run it at the profile's corner shapes, record it."""
    check_available()
    folder = model_path.parent
    reference = OnnxRecognizer(folder, model_file=model_path.name)
    inputs = [given.name for given in reference.session.get_inputs()]
    rate = reference.features.sampling_rate
    engine = OnnxRecognizer(folder, providers=tensorrt_providers(folder, profile, inputs, rate),
                          model_file=model_path.name)
    if "TensorrtExecutionProvider" not in engine.session.get_providers():
        raise TensorRTUnavailable("onnxruntime could not start its TensorRT execution provider on this machine")
    generator = np.random.default_rng(0)
    for batch, seconds in ((1, profile.min_seconds), (profile.opt_batch, profile.opt_seconds),
                           (profile.max_batch, profile.max_seconds)):
        engine.logits([0.1 * generator.standard_normal(int(seconds * rate)).astype(np.float32)] * batch)
    manifest_path = folder / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    manifest["tensorrt"] = {"model_file": model_path.name, "cache": CACHE_FOLDER, **asdict(profile)}
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return engine
