"""Training audio at the model's rate: decoded and resampled once and kept in memory when it fits,
else decoded batch by batch in threads (libsndfile and soxr release the GIL, so they overlap).

A plain training loop decodes its corpus once; decoding and resampling every file again on every
update cost a small model a large share of its step time.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from model.audio import load_audio

BYTES_PER_SAMPLE = 4  # float32


class AudioStore:
    """`store.batch(indices)` -> the utterances' float32 samples at `rate` Hz."""

    def __init__(self, paths: list[Path], durations: list[float], rate: int, preload_bytes: float, workers: int = 2):
        self.paths, self.rate = paths, rate
        self.decodes = 0  # files decoded so far: once per file when preloaded
        self._pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="decode")
        self.bytes = sum(durations) * rate * BYTES_PER_SAMPLE  # an estimate, from the manifest's durations
        self.preloaded = self.bytes <= preload_bytes
        self._samples: list[np.ndarray] | None = None
        if self.preloaded:
            self._samples = self._decode(range(len(paths)))

    def _decode(self, indices) -> list[np.ndarray]:
        indices = list(indices)
        self.decodes += len(indices)
        return list(self._pool.map(lambda index: load_audio(self.paths[index], self.rate), indices))

    def batch(self, indices: list[int]) -> list[np.ndarray]:
        if self._samples is not None:
            return [self._samples[index] for index in indices]
        return self._decode(indices)

    def close(self) -> None:
        self._pool.shutdown()
