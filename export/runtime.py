"""Run an exported model folder with onnxruntime. Imports no torch.

A folder holds `model.onnx` and everything needed to use it: `config.json` (frame arithmetic),
`preprocessor_config.json` (sample rate, normalisation, attention mask), the vocabulary files,
and `export.json` (variant, opset, verification results, TensorRT profile if built).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime  # the inference engine: CPU here, CUDA and TensorRT providers with onnxruntime-gpu

from model.audio import batch_input_values
from model.config import FeatureSettings, Wav2Vec2Config
from model.ctc import CTCVocabulary

MODEL_FILE = "model.onnx"
# Group-norm models only: the graph whose rows do not depend on padding (see export.exporter.export_fp32).
BATCHED_MODEL_FILE = "model.batched.onnx"
MANIFEST_FILE = "export.json"


class OnnxCTCModel:
    """An exported CTC model: audio batches in, per-utterance logits out."""

    def __init__(self, folder: str | Path, providers: list[Any] | None = None, threads: int = 0,
                 model_file: str = MODEL_FILE):
        self.folder = Path(folder)
        self.config = Wav2Vec2Config.from_json_file(self.folder / "config.json")
        self.features = FeatureSettings.from_folder(self.folder, self.config)
        self.vocab = CTCVocabulary.from_folder(self.folder)
        manifest = self.folder / MANIFEST_FILE
        self.manifest = json.loads(manifest.read_text()) if manifest.is_file() else {}
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads  # 0: onnxruntime's default, one thread per core
        self.session = onnxruntime.InferenceSession(str(self.folder / model_file), options,
                                                    providers=providers or ["CPUExecutionProvider"])
        self.uses_attention_mask = "attention_mask" in {given.name for given in self.session.get_inputs()}

    def run(self, input_values: np.ndarray, attention_mask: np.ndarray | None = None) -> np.ndarray:
        """(batch, samples) float32 [+ (batch, samples) int64] -> logits (batch, frames, vocab)."""
        feeds = {"input_values": input_values}
        if self.uses_attention_mask:
            feeds["attention_mask"] = attention_mask if attention_mask is not None else np.ones_like(
                input_values, dtype=np.int64)
        return self.session.run(["logits"], feeds)[0]

    def logits(self, utterances: list[np.ndarray]) -> list[np.ndarray]:
        """Samples at the model's rate, one array per utterance -> (frames_i, vocab) logits for each."""
        input_values, attention_mask = batch_input_values(utterances, self.features.do_normalize,
                                                          self.features.padding_value)
        logits = self.run(input_values, attention_mask)
        return [row[:self.config.num_frames(len(samples))] for row, samples in zip(logits, utterances)]
