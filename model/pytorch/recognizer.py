"""The PyTorch recognizer: a `Wav2Vec2ForCTC`, loaded from a checkpoint or in training."""

from __future__ import annotations

import numpy as np
import torch

from ..audio import model_inputs
from ..config import FeatureSettings, Wav2Vec2Config
from ..ctc import CTCVocabulary
from ..recognizer import Recognizer
from .checkpoint_types import Checkpoint
from .wav2vec2 import Wav2Vec2ForCTC


class TorchRecognizer(Recognizer):
    """A `Wav2Vec2ForCTC` on `device`: audio batches in, per-utterance logits out.

    `padding_exact` (the default) gives padded batches an attention mask, so each row equals its
    utterance alone; False runs them as transformers does (a mask only for models that take one),
    to compare with graphs exported that way. The model may be one in training: it runs in eval
    mode here and goes back to its mode afterwards.
    """

    def __init__(
        self,
        model: Wav2Vec2ForCTC,
        features: FeatureSettings,
        vocab: CTCVocabulary,
        device: torch.device | str = "cpu",
        padding_exact: bool = True,
    ):
        self.model, self.features, self.vocab = model, features, vocab
        self.config: Wav2Vec2Config = model.config
        self.device = torch.device(device)
        self._padding_exact = padding_exact

    @classmethod
    def from_checkpoint(
        cls, checkpoint: Checkpoint, device: torch.device | str = "cpu", padding_exact: bool = True
    ) -> TorchRecognizer:
        if not isinstance(checkpoint.model, Wav2Vec2ForCTC) or checkpoint.vocab is None:
            raise ValueError("a recognizer needs a CTC checkpoint with a vocabulary")
        return cls(checkpoint.model.to(device), checkpoint.features, checkpoint.vocab, device, padding_exact)

    @property
    def padding_exact(self) -> bool:
        return self._padding_exact

    def logits(self, utterances: list[np.ndarray]) -> list[np.ndarray]:
        input_values, attention_mask = model_inputs(utterances, self.features, self._padding_exact)
        training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                mask = None if attention_mask is None else torch.from_numpy(attention_mask).to(self.device)
                logits = self.model(torch.from_numpy(input_values).to(self.device), mask).float().cpu().numpy()
        finally:
            self.model.train(training)
        return [row[: self.config.num_frames(len(samples))] for row, samples in zip(logits, utterances)]
