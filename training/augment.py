"""Data augmentation for fine-tuning, drawn per utterance per update from the update's random
generator (so a resumed run replays it exactly). Applied in this order, each one optional:

- speed: play the utterance faster or slower by a factor drawn from [low, high] (pitch moves with
  it, as in Kaldi's speed perturbation): resampled from rate x factor to rate, so it gets shorter
  or longer by 1 / factor.
- resample_rates: with probability resample_prob, a round trip through one of these sampling rates
  (e.g. 8000 for telephone audio, 44100): what the server does to audio recorded at that rate, with
  the band limit that comes with rates below the model's.
- band_prob: with this probability, a telephone channel: only band_hz (default 300-3400 Hz) is kept.
- volume_db: a gain drawn from [low, high] dB (samples are clipped to [-1, 1] as a recording would be).
- noise_snr_db: with probability noise_prob (default 1), white noise at a signal-to-noise ratio drawn
  from [low, high] dB.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import soxr

RANGES = ("speed", "volume_db", "noise_snr_db", "band_hz")
PROBABILITIES = ("resample_prob", "band_prob", "noise_prob")


@dataclass
class Augmentation:
    speed: tuple[float, float] = (1.0, 1.0)
    resample_rates: tuple[int, ...] = ()
    resample_prob: float = 0.0
    band_prob: float = 0.0
    band_hz: tuple[float, float] = (300.0, 3400.0)
    volume_db: tuple[float, float] | None = None
    noise_snr_db: tuple[float, float] | None = None
    noise_prob: float = 1.0

    @classmethod
    def from_dict(cls, values: dict) -> Augmentation:
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"augment: unknown {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        settings = {}
        for name, value in values.items():
            if value is None:
                continue
            if name in RANGES:
                if (not isinstance(value, (list, tuple)) or len(value) != 2
                        or not all(isinstance(v, (int, float)) for v in value) or value[0] > value[1]):
                    raise ValueError(f"augment.{name}: a range [low, high], got {value!r}")
                settings[name] = (float(value[0]), float(value[1]))
            elif name in PROBABILITIES:
                if not isinstance(value, (int, float)) or not 0 <= value <= 1:
                    raise ValueError(f"augment.{name}: a probability between 0 and 1, got {value!r}")
                settings[name] = float(value)
            else:  # resample_rates
                if (not isinstance(value, (list, tuple)) or not value
                        or not all(isinstance(v, int) and 1000 <= v <= 192000 for v in value)):
                    raise ValueError(f"augment.{name}: a list of sampling rates in Hz, e.g. [8000, 44100], "
                                     f"got {value!r}")
                settings[name] = tuple(value)
        if "speed" in settings and settings["speed"][0] <= 0:
            raise ValueError(f"augment.speed: factors above 0, got {list(settings['speed'])}")
        if settings.get("resample_prob") and not settings.get("resample_rates"):
            raise ValueError("augment.resample_prob: give resample_rates too")
        if "band_hz" in settings and settings["band_hz"][0] < 0:
            raise ValueError(f"augment.band_hz: frequencies of 0 Hz and above, got {list(settings['band_hz'])}")
        return cls(**settings)

    @property
    def active(self) -> bool:
        return (self.speed != (1.0, 1.0) or self.resample_prob > 0 or self.band_prob > 0
                or self.volume_db is not None or (self.noise_snr_db is not None and self.noise_prob > 0))

    def __call__(self, samples: np.ndarray, rate: int, generator: np.random.Generator) -> np.ndarray:
        # Every draw happens whether or not it is used, so one setting's change does not shift the others'.
        factor = generator.uniform(*self.speed)
        resample, through = generator.random() < self.resample_prob, generator.choice(self.resample_rates or (rate,))
        band = generator.random() < self.band_prob
        gain_db = generator.uniform(*self.volume_db) if self.volume_db is not None else 0.0
        noisy = generator.random() < self.noise_prob
        snr = generator.uniform(*self.noise_snr_db) if self.noise_snr_db is not None else None

        if factor != 1.0:
            samples = soxr.resample(samples, rate * factor, rate)
        if resample and through != rate:
            samples = soxr.resample(soxr.resample(samples, rate, int(through)), int(through), rate)
        if band:
            samples = band_pass(samples, rate, *self.band_hz)
        if gain_db:
            samples = np.clip(samples * 10 ** (gain_db / 20), -1.0, 1.0)
        if noisy and snr is not None:
            power = float(np.mean(np.square(samples, dtype=np.float64)))
            samples = samples + generator.standard_normal(len(samples)) * np.sqrt(power / 10 ** (snr / 10))
        return np.asarray(samples, dtype=np.float32)


def band_pass(samples: np.ndarray, rate: int, low_hz: float, high_hz: float) -> np.ndarray:
    """Keep only the frequencies in [low_hz, high_hz] (zeroing the others in the spectrum)."""
    spectrum = np.fft.rfft(samples)
    frequencies = np.fft.rfftfreq(len(samples), 1 / rate)
    spectrum[(frequencies < low_hz) | (frequencies > high_hz)] = 0
    return np.fft.irfft(spectrum, n=len(samples)).astype(np.float32)
