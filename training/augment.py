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
- pad_seconds: with probability pad_prob, silence of [low, high] seconds before and after the utterance
  (drawn apart), so that the noise below also fills stretches with no speech: a model must learn to say
  nothing there.
- reverb_seconds: with probability reverb_prob, a room: the utterance convolved with a synthetic impulse
  response (a direct path, then exponentially decaying noise) whose reverberation time (RT60) is drawn
  from [low, high] seconds.
- noise_snr_db: with probability noise_prob (default 1), noise at a signal-to-noise ratio drawn from
  [low, high] dB (the power of the utterance itself, not of the padding), of one of noise_kinds: white,
  pink (1/f, like a fan or rain), brown (1/f^2, like traffic or wind), hum (mains at 50 or 60 Hz with
  harmonics, over faint pink noise) or babble (other utterances of the batch, overlapped: voices in
  the background, which the model must not transcribe), whose SNR is drawn from babble_snr_db instead
  (default 15-40 dB: background voices as loud as the speaker's would contradict the transcript), or
  talk: babble made of `talkers`, speech without the model's words (people talking English around
  someone saying digits), at noise_snr_db like the steady kinds, since it never says a word of the
  transcript's vocabulary (finetune's talk_manifest gives the talkers).
- mic_db: with probability mic_prob, a microphone's frequency response, applied last (to the noise too,
  as a microphone hears it): a smooth gain curve through random gains drawn from [low, high] dB at
  points spaced evenly in log frequency from 100 Hz to the Nyquist frequency, the level kept. Drawn only
  when mic_prob is above 0, so that configurations without it draw exactly as before.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import soxr

RANGES = ("speed", "volume_db", "noise_snr_db", "band_hz", "pad_seconds", "reverb_seconds", "babble_snr_db", "mic_db")
PROBABILITIES = ("resample_prob", "band_prob", "noise_prob", "pad_prob", "reverb_prob", "mic_prob")
MIC_POINTS = 6  # gains drawn per response: 1.3 octaves apart at 16 kHz
NOISE_KINDS = ("white", "pink", "brown", "hum", "babble", "talk")


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
    noise_kinds: tuple[str, ...] = ("white",)
    babble_snr_db: tuple[float, float] = (15.0, 40.0)
    pad_seconds: tuple[float, float] | None = None
    pad_prob: float = 0.0
    reverb_seconds: tuple[float, float] = (0.2, 0.8)
    reverb_prob: float = 0.0
    mic_db: tuple[float, float] = (-10.0, 10.0)
    mic_prob: float = 0.0

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
                if (
                    not isinstance(value, (list, tuple))
                    or len(value) != 2
                    or not all(isinstance(v, (int, float)) for v in value)
                    or value[0] > value[1]
                ):
                    raise ValueError(f"augment.{name}: a range [low, high], got {value!r}")
                settings[name] = (float(value[0]), float(value[1]))
            elif name in PROBABILITIES:
                if not isinstance(value, (int, float)) or not 0 <= value <= 1:
                    raise ValueError(f"augment.{name}: a probability between 0 and 1, got {value!r}")
                settings[name] = float(value)
            elif name == "noise_kinds":
                if (
                    not isinstance(value, (list, tuple))
                    or not value
                    or not all(isinstance(v, str) and v in NOISE_KINDS for v in value)
                ):
                    raise ValueError(f"augment.{name}: a list of {', '.join(NOISE_KINDS)}, got {value!r}")
                settings[name] = tuple(value)
            else:  # resample_rates
                if (
                    not isinstance(value, (list, tuple))
                    or not value
                    or not all(isinstance(v, int) and 1000 <= v <= 192000 for v in value)
                ):
                    raise ValueError(
                        f"augment.{name}: a list of sampling rates in Hz, e.g. [8000, 44100], got {value!r}"
                    )
                settings[name] = tuple(value)
        if "speed" in settings and settings["speed"][0] <= 0:
            raise ValueError(f"augment.speed: factors above 0, got {list(settings['speed'])}")
        if settings.get("resample_prob") and not settings.get("resample_rates"):
            raise ValueError("augment.resample_prob: give resample_rates too")
        for name in ("pad_seconds", "reverb_seconds"):
            if name in settings and settings[name][0] < 0:
                raise ValueError(f"augment.{name}: seconds of 0 and above, got {list(settings[name])}")
        if "band_hz" in settings and settings["band_hz"][0] < 0:
            raise ValueError(f"augment.band_hz: frequencies of 0 Hz and above, got {list(settings['band_hz'])}")
        return cls(**settings)

    @property
    def active(self) -> bool:
        return (
            self.speed != (1.0, 1.0)
            or self.resample_prob > 0
            or self.band_prob > 0
            or self.volume_db is not None
            or (self.noise_snr_db is not None and self.noise_prob > 0)
            or (self.pad_seconds is not None and self.pad_prob > 0)
            or self.reverb_prob > 0
            or self.mic_prob > 0
        )

    def __call__(
        self,
        samples: np.ndarray,
        rate: int,
        generator: np.random.Generator,
        others: list[np.ndarray] = (),
        talkers: list[np.ndarray] = (),
    ) -> np.ndarray:
        """`others`: utterances that babble may be made of; `talkers`: speech that talk is made of
        (without them, either is pink noise)."""
        # Every draw happens whether or not it is used, so one setting's change does not shift the others'.
        factor = generator.uniform(*self.speed)
        resample, through = generator.random() < self.resample_prob, generator.choice(self.resample_rates or (rate,))
        band = generator.random() < self.band_prob
        gain_db = generator.uniform(*self.volume_db) if self.volume_db is not None else 0.0
        noisy = generator.random() < self.noise_prob
        snr = generator.uniform(*self.noise_snr_db) if self.noise_snr_db is not None else None
        kind = self.noise_kinds[generator.integers(len(self.noise_kinds))]
        padded = generator.random() < self.pad_prob
        before, after = generator.uniform(*(self.pad_seconds or (0.0, 0.0)), size=2)
        reverberant = generator.random() < self.reverb_prob
        rt60 = generator.uniform(*self.reverb_seconds)
        babble_snr = generator.uniform(*self.babble_snr_db)

        if factor != 1.0:
            samples = soxr.resample(samples, rate * factor, rate)
        power = float(np.mean(np.square(samples, dtype=np.float64))) if len(samples) else 0.0
        if padded:
            samples = np.concatenate(
                [np.zeros(round(before * rate), np.float32), samples, np.zeros(round(after * rate), np.float32)]
            )
        if reverberant:
            samples = reverberate(samples, rate, rt60, generator)
        if resample and through != rate:
            samples = soxr.resample(soxr.resample(samples, rate, int(through)), int(through), rate)
        if band:
            samples = band_pass(samples, rate, *self.band_hz)
        if gain_db:
            samples = np.clip(samples * 10 ** (gain_db / 20), -1.0, 1.0)
        if noisy and snr is not None and power > 0:
            gain = 10 ** (gain_db / 20)  # the noise reaches the microphone with the voice
            noise = make_noise(kind, len(samples), rate, generator, talkers if kind == "talk" else others)
            snr = babble_snr if kind == "babble" else snr
            samples = samples + noise * np.sqrt(power * gain * gain / 10 ** (snr / 10))
        if self.mic_prob > 0 and generator.random() < self.mic_prob:
            samples = microphone(samples, rate, generator.uniform(*self.mic_db, size=MIC_POINTS))
        return np.asarray(samples, dtype=np.float32)


def reverberate(samples: np.ndarray, rate: int, rt60: float, generator: np.random.Generator) -> np.ndarray:
    """`samples` in a room with reverberation time `rt60` seconds, at the same RMS level and length."""
    length = max(1, round(rt60 * rate))
    decay = np.exp(-6.9 * np.arange(length) / length)  # 60 dB down (e^-6.9) after rt60
    response = generator.standard_normal(length) * decay * 0.1
    response[0] = 1.0  # the direct path
    size = _fast_size(len(samples) + length - 1)
    wet = np.fft.irfft(np.fft.rfft(samples, size) * np.fft.rfft(response, size), size)[: len(samples)]
    return _at_level_of(wet, samples)


def microphone(samples: np.ndarray, rate: int, gains_db: np.ndarray) -> np.ndarray:
    """`samples` through a frequency response that passes through `gains_db` at points spaced evenly in
    log frequency from 100 Hz to rate / 2 (linear in log frequency between them, flat beyond), at the
    same RMS level and length."""
    if len(samples) < 2:
        return samples
    size = _fast_size(len(samples))
    frequencies = np.fft.rfftfreq(size, 1 / rate)
    points = np.geomspace(100.0, rate / 2, len(gains_db))
    curve = np.interp(np.log(np.maximum(frequencies, 1.0)), np.log(points), gains_db)
    shaped = np.fft.irfft(np.fft.rfft(samples, size) * 10 ** (curve / 20), size)[: len(samples)]
    return _at_level_of(shaped, samples)


def _at_level_of(processed: np.ndarray, original: np.ndarray) -> np.ndarray:
    """`processed` scaled to the RMS level of `original`, as float32."""
    level = np.sqrt(np.mean(np.square(original, dtype=np.float64)) / max(np.mean(np.square(processed)), 1e-20))
    return (processed * level).astype(np.float32)


def make_noise(
    kind: str, length: int, rate: int, generator: np.random.Generator, others: list[np.ndarray] = ()
) -> np.ndarray:
    """`length` samples of noise of unit power; babble and talk are made of `others`."""
    if kind in ("babble", "talk") and others:
        noise = np.zeros(length)
        for _ in range(int(generator.integers(3, 7))):  # a few voices at once, each from a random point
            voice = others[int(generator.integers(len(others)))]
            if len(voice):
                tiled = np.resize(voice, length + len(voice))
                start = int(generator.integers(len(voice)))
                noise += tiled[start : start + length] / max(np.sqrt(np.mean(np.square(voice))), 1e-6)
    elif kind == "hum":
        mains = generator.choice([50.0, 60.0])
        time = np.arange(length) / rate
        noise = sum(
            np.sin(2 * np.pi * mains * harmonic * time + generator.uniform(0, 2 * np.pi)) / harmonic
            for harmonic in range(1, 6)
        )
        noise = noise + 0.3 * _coloured(length, 1.0, generator)
    else:
        noise = _coloured(
            length, {"white": 0.0, "pink": 1.0, "brown": 2.0, "babble": 1.0, "talk": 1.0}[kind], generator
        )
    return noise / max(np.sqrt(np.mean(np.square(noise))), 1e-12)


def _coloured(length: int, exponent: float, generator: np.random.Generator) -> np.ndarray:
    """Gaussian noise whose power falls as 1 / f**exponent (0 white, 1 pink, 2 brown)."""
    if exponent == 0 or length < 2:
        return generator.standard_normal(length)
    size = _fast_size(length)
    spectrum = np.fft.rfft(generator.standard_normal(size))
    frequencies = np.arange(len(spectrum), dtype=np.float64) * length / size
    frequencies[0] = 1.0  # the mean stays as drawn
    return np.fft.irfft(spectrum / np.maximum(frequencies, 1.0) ** (exponent / 2), size)[:length]


def _fast_size(length: int) -> int:
    """The power of two at or above `length`: numpy's FFT is many times slower on lengths with large
    prime factors, which most utterance lengths have."""
    return 1 << max(0, length - 1).bit_length()


def band_pass(samples: np.ndarray, rate: int, low_hz: float, high_hz: float) -> np.ndarray:
    """Keep only the frequencies in [low_hz, high_hz] (zeroing the others in the spectrum)."""
    size = _fast_size(len(samples))  # zero-padded: no wrap-around, and a fast FFT length
    spectrum = np.fft.rfft(samples, size)
    frequencies = np.fft.rfftfreq(size, 1 / rate)
    spectrum[(frequencies < low_hz) | (frequencies > high_hz)] = 0
    return np.fft.irfft(spectrum, n=size)[: len(samples)].astype(np.float32)
