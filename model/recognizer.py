"""The recognizer interface: a batch of utterances in, one logit matrix per utterance out, with the
model's audio settings and vocabulary.

Two backends implement it: `model.onnx.OnnxRecognizer` (ONNX Runtime, no torch) and
`model.pytorch.recognizer.TorchRecognizer`. Everything above it, from `model.transcribe` to the
server, is the same for both. Imports no torch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from .audio import AudioSource, check_duration, load_audio
from .config import FeatureSettings, Wav2Vec2Config
from .ctc import CTCVocabulary


class Recognizer(ABC):
    """A CTC model that turns samples at its rate into logits."""

    config: Wav2Vec2Config  # the architecture: frame arithmetic
    features: FeatureSettings  # the audio settings: sample rate, normalisation, attention mask
    vocab: CTCVocabulary

    @abstractmethod
    def logits(self, utterances: list[np.ndarray]) -> list[np.ndarray]:
        """Samples at `sampling_rate`, one array per utterance -> (frames_i, vocab) float32 logits each."""

    @property
    def padding_exact(self) -> bool:
        """True when batching changes no utterance's logits (beyond float rounding), so callers may pad."""
        return True

    @property
    def sampling_rate(self) -> int:
        return self.features.sampling_rate

    @property
    def frame_seconds(self) -> float:
        return self.config.frame_seconds(self.sampling_rate)

    @property
    def min_samples(self) -> int:
        """The shortest input that gives one frame."""
        return self.config.receptive_field

    def read(self, source: AudioSource) -> np.ndarray:
        """Samples at the model's rate, checked to be long enough for one frame (AudioError if not)."""
        samples = load_audio(source, self.sampling_rate)
        check_duration(samples, self.min_samples, self.sampling_rate)
        return samples
