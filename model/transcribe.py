"""Greedy CTC transcription with a loaded checkpoint, on the CPU."""

from __future__ import annotations

import numpy as np
import torch

from .audio import AudioSource, batch_input_values, check_duration, load_audio
from .checkpoint import Checkpoint, load_ctc_checkpoint


class Transcriber:
    def __init__(self, checkpoint: Checkpoint):
        if checkpoint.vocab is None:
            raise ValueError("a Transcriber needs a checkpoint with a CTC vocabulary")
        self.checkpoint = checkpoint
        self.model = checkpoint.model.eval()
        self.vocab = checkpoint.vocab

    @classmethod
    def load(cls, reference: str) -> Transcriber:
        return cls(load_ctc_checkpoint(reference))

    @property
    def sampling_rate(self) -> int:
        return self.checkpoint.features.sampling_rate

    def read(self, source: AudioSource) -> np.ndarray:
        """Samples at the model's rate, checked to be long enough for one frame."""
        samples = load_audio(source, self.sampling_rate)
        check_duration(samples, self.checkpoint.config.receptive_field, self.sampling_rate)
        return samples

    def logits(self, samples: np.ndarray) -> np.ndarray:
        """(samples,) at the model's rate -> (frames, vocab) logits."""
        input_values, _ = batch_input_values([samples], self.checkpoint.features.do_normalize)
        with torch.inference_mode():
            return self.model(torch.from_numpy(input_values))[0].numpy()

    def transcribe(self, source: AudioSource) -> str:
        return self.vocab.greedy_decode(self.logits(self.read(source)))
