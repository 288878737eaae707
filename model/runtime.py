"""Where an exported model runs: ONNX Runtime's execution providers (CPU, CUDA, TensorRT), the
export manifest (`export.json`) that records what was exported and built, and TensorRT's shape
profiles.

`python -m export` writes the manifest and builds TensorRT engines; the recognizer (`model.onnx`)
and the server read them here, so both agree on the file names and the profile a cached engine
was built for. Imports nothing heavier than json: ONNX Runtime itself is imported by whoever runs
a session.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

MANIFEST_FILE = "export.json"
TENSORRT_CACHE_FOLDER = "tensorrt"  # beside the graph: the engine and timing caches

Provider = Literal["cpu", "cuda", "tensorrt"]
PROVIDERS: tuple[Provider, ...] = ("cpu", "cuda", "tensorrt")


class RuntimeUnavailable(ValueError):
    """The model folder cannot run on the provider asked for (e.g. no TensorRT engine was built)."""


@dataclass
class TensorRTProfile:
    """The one shape profile a TensorRT engine is built for: batch 1 to `max_batch`, `min_seconds`
    to `max_seconds` of audio, tuned for `opt_batch` x `opt_seconds`."""

    min_seconds: float = 0.5
    opt_seconds: float = 10.0
    max_seconds: float = 30.0
    max_batch: int = 8
    opt_batch: int = 1
    fp16: bool = True

    def shapes(self, inputs: list[str], sampling_rate: int) -> dict[str, str]:
        """ONNX Runtime's profile options: each input's (batch x samples) at the three corners."""

        def spec(batch: int, seconds: float) -> str:
            return ",".join(f"{name}:{batch}x{int(seconds * sampling_rate)}" for name in inputs)

        return {
            "trt_profile_min_shapes": spec(1, self.min_seconds),
            "trt_profile_opt_shapes": spec(self.opt_batch, self.opt_seconds),
            "trt_profile_max_shapes": spec(self.max_batch, self.max_seconds),
        }


def read_manifest(folder: Path) -> dict:
    """A folder's export manifest; {} when it has none (a folder exported by hand)."""
    path = Path(folder) / MANIFEST_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def record_tensorrt(folder: Path, model_file: str, inputs: list[str], profile: TensorRTProfile) -> None:
    """Note in the folder's manifest which graph (with which inputs) the cached engine was built for,
    with which profile."""
    manifest = read_manifest(folder)
    manifest["tensorrt"] = {
        "model_file": model_file,
        "inputs": inputs,
        "cache": TENSORRT_CACHE_FOLDER,
        **asdict(profile),
    }
    (Path(folder) / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")


def built_tensorrt(folder: Path, manifest: dict) -> tuple[TensorRTProfile, str, list[str]]:
    """(the profile, the graph file, its inputs) of the engine built for `folder`; RuntimeUnavailable if
    none was."""
    built = manifest.get("tensorrt")
    if not built:
        raise RuntimeUnavailable(
            f"no TensorRT engine for {folder}; run `python -m export tensorrt --onnx {folder / 'model.onnx'}` first"
        )
    names = {field.name for field in fields(TensorRTProfile)}
    profile = TensorRTProfile(**{key: value for key, value in built.items() if key in names})
    # Engines built before the manifest named their inputs: the padding-exact graph takes a mask, and
    # the plain graph what the export recorded.
    inputs = built.get("inputs") or (
        ["input_values", "attention_mask"]
        if built["model_file"] == manifest.get("batched_model")
        else manifest.get("inputs", ["input_values"])
    )
    return profile, built["model_file"], inputs


def tensorrt_providers(folder: Path, profile: TensorRTProfile, inputs: list[str], sampling_rate: int) -> list:
    """Provider list for a session that uses (and, the first time, builds) the engine cached in `folder`."""
    options = {
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(Path(folder) / TENSORRT_CACHE_FOLDER),
        "trt_timing_cache_enable": True,
        "trt_fp16_enable": profile.fp16,
        **profile.shapes(inputs, sampling_rate),
    }
    # Nodes TensorRT cannot take run on CUDA, then on the CPU.
    return [("TensorrtExecutionProvider", options), "CUDAExecutionProvider", "CPUExecutionProvider"]


def execution_providers(
    provider: Provider, folder: Path, manifest: dict, sampling_rate: int
) -> tuple[list[Any], str | None]:
    """(ONNX Runtime's provider list, the graph file to run, None: the recognizer's own choice) for
    `provider`. TensorRT runs the graph its engine was built for."""
    if provider == "cpu":
        return ["CPUExecutionProvider"], None
    if provider == "cuda":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"], None
    if provider == "tensorrt":
        profile, model_file, inputs = built_tensorrt(Path(folder), manifest)
        return tensorrt_providers(Path(folder), profile, inputs, sampling_rate), model_file
    raise RuntimeUnavailable(f"unknown execution provider {provider!r}; use one of {', '.join(PROVIDERS)}")
