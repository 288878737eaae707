"""Data augmentation for fine-tuning, drawn per utterance per update from the update's random
generator (so a resumed run replays it exactly).

- speed: play the utterance faster or slower by a factor drawn from [low, high] (pitch moves with
  it, as in Kaldi's speed perturbation): resampled from rate x factor to rate, so it gets shorter
  or longer by 1 / factor.
- noise_snr_db: add white noise at a signal-to-noise ratio drawn from [low, high] dB.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import soxr


@dataclass
class Augmentation:
    speed: tuple[float, float] = (1.0, 1.0)
    noise_snr_db: tuple[float, float] | None = None

    @classmethod
    def from_dict(cls, values: dict) -> Augmentation:
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"augment: unknown {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        ranges = {}
        for name, value in values.items():
            if value is None:
                continue
            if (not isinstance(value, (list, tuple)) or len(value) != 2
                    or not all(isinstance(v, (int, float)) for v in value) or value[0] > value[1]):
                raise ValueError(f"augment.{name}: a range [low, high], got {value!r}")
            ranges[name] = (float(value[0]), float(value[1]))
        if "speed" in ranges and ranges["speed"][0] <= 0:
            raise ValueError(f"augment.speed: factors above 0, got {list(ranges['speed'])}")
        return cls(**ranges)

    @property
    def active(self) -> bool:
        return self.speed != (1.0, 1.0) or self.noise_snr_db is not None

    def __call__(self, samples: np.ndarray, rate: int, generator: np.random.Generator) -> np.ndarray:
        factor = generator.uniform(*self.speed)
        if factor != 1.0:
            samples = soxr.resample(samples, rate * factor, rate).astype(np.float32, copy=False)
        if self.noise_snr_db is not None:
            snr = generator.uniform(*self.noise_snr_db)
            power = float(np.mean(np.square(samples, dtype=np.float64)))
            noise = generator.standard_normal(len(samples)) * np.sqrt(power / 10 ** (snr / 10))
            samples = (samples + noise).astype(np.float32)
        return samples
