"""The ONNX Runtime recognizer: an exported model folder, run without torch.

A folder holds `model.onnx` and everything needed to use it: `config.json` (frame arithmetic),
`preprocessor_config.json` (sample rate, normalisation, attention mask), the vocabulary files,
and `export.json` (variant, opset, verification results, TensorRT profile if built).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .audio import model_inputs
from .config import FeatureSettings, Wav2Vec2Config
from .cpu import usable_cores
from .ctc import CTCVocabulary
from .recognizer import Recognizer
from .runtime import MANIFEST_FILE, Provider, execution_providers, read_manifest

MODEL_FILE = "model.onnx"
# Group-norm models only: the graph whose rows do not depend on padding (see export.exporter.export_fp32).
BATCHED_MODEL_FILE = "model.batched.onnx"
__all__ = ["BATCHED_MODEL_FILE", "MANIFEST_FILE", "MODEL_FILE", "OnnxRecognizer"]


class OnnxRecognizer(Recognizer):
    """An exported CTC model: audio batches in, per-utterance logits out.

    `threads`: ONNX Runtime's intra-op threads (0: one per core this process may use, `model.cpu`).
    `provider` (cpu, cuda, tensorrt: `model.runtime`) chooses ONNX Runtime's execution providers,
    unless `providers` lists them itself. `model_file` defaults to the graph a TensorRT engine was
    built for, else the graph a server runs: for group-norm models the padding-exact one
    (`model.batched.onnx`), so batching changes no result; else `model.onnx`. `memory_arena`:
    ONNX Runtime's CPU arena, which keeps the largest run's memory for good (a batch of eight 40 s
    windows: 3.1 GB held, against a 0.2 GB peak without it). `keep_memory_seconds` bounds that: a
    run of more audio (batch x seconds, padding included) gives the arena's memory back when it
    ends (ONNX Runtime's arena shrinkage), while smaller runs keep theirs for the next, which then
    maps no fresh pages (without an arena, every run does: a batch of eight digit strings took
    1.7x as long). A long-running server sets it.
    """

    def __init__(
        self,
        folder: str | Path,
        providers: list[Any] | None = None,
        threads: int = 0,
        model_file: str | None = None,
        memory_arena: bool = True,
        provider: Provider = "cpu",
        keep_memory_seconds: float | None = None,
    ):
        self.folder = Path(folder)
        self.config = Wav2Vec2Config.from_json_file(self.folder / "config.json")
        self.features = FeatureSettings.from_folder(self.folder, self.config)
        self.vocab = CTCVocabulary.from_folder(self.folder)
        self.manifest = read_manifest(self.folder)
        if providers is None:  # RuntimeUnavailable (a ValueError) if the provider cannot run this folder
            providers, engine_file = execution_providers(
                provider, self.folder, self.manifest, self.features.sampling_rate
            )
            model_file = model_file or engine_file
        if model_file is None:
            model_file = BATCHED_MODEL_FILE if (self.folder / BATCHED_MODEL_FILE).is_file() else MODEL_FILE
        try:
            import onnxruntime  # the inference engine: CPU here, CUDA and TensorRT providers with onnxruntime-gpu
        except ImportError:
            raise ImportError(
                "running an exported model needs onnxruntime: pip install '.[serve]' (or '.[export]')"
            ) from None
        options = onnxruntime.SessionOptions()
        # 0: one per core this process may use (onnxruntime's own default ignores affinity and quotas: model.cpu)
        options.intra_op_num_threads = threads or usable_cores()
        options.enable_cpu_mem_arena = memory_arena
        self.session = onnxruntime.InferenceSession(str(self.folder / model_file), options, providers=providers)
        self._release = None  # the run options of a run that gives its memory back
        self._keep_samples = None
        if memory_arena and keep_memory_seconds is not None:
            self._release = onnxruntime.RunOptions()
            self._release.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
            self._keep_samples = keep_memory_seconds * self.features.sampling_rate
        self.uses_attention_mask = "attention_mask" in {given.name for given in self.session.get_inputs()}

    def run(self, input_values: np.ndarray, attention_mask: np.ndarray | None = None) -> np.ndarray:
        """(batch, samples) float32 [+ (batch, samples) int64] -> logits (batch, frames, vocab)."""
        feeds = {"input_values": input_values}
        if self.uses_attention_mask:
            feeds["attention_mask"] = (
                attention_mask if attention_mask is not None else np.ones_like(input_values, dtype=np.int64)
            )
        large = self._keep_samples is not None and input_values.size > self._keep_samples
        return self.session.run(["logits"], feeds, self._release if large else None)[0]

    @property
    def padding_exact(self) -> bool:
        """Graphs with an attention mask keep padding out of every row; the group-norm family's plain
        graph, like transformers, does not."""
        return self.uses_attention_mask

    def logits(self, utterances: list[np.ndarray]) -> list[np.ndarray]:
        input_values, attention_mask = model_inputs(utterances, self.features, self.padding_exact)
        logits = self.run(input_values, attention_mask)
        return [row[: self.config.num_frames(len(samples))] for row, samples in zip(logits, utterances)]
