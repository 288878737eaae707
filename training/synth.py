"""`python -m training synth`: a synthetic English corpus from a text file, spoken by espeak-ng and
flite voices at varied speed and pitch, with its manifest. For tests, demos and pretraining data.

Each utterance is one sentence of the text (chosen at random, within a word range), one voice, one
speed and one pitch; the audio is written as 16 kHz mono wav beside `manifest.jsonl`.
"""

from __future__ import annotations

import gzip
import random
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import soundfile  # writes the wav files

from model.audio import load_audio
from model.ctc import normalize_text

from .manifest import Entry, write_manifest

RATE = 16000
# Voices that ship with Debian's espeak-ng and flite packages (no extra voice data needed).
DEFAULT_VOICES = ("espeak:en-us", "espeak:en-gb", "espeak:en-us+f2", "espeak:en-gb-scotland", "espeak:en-029+m3",
                  "espeak:en-gb-x-rp+f4", "flite:slt", "flite:rms", "flite:awb", "flite:kal16")


@dataclass(frozen=True)
class Voice:
    engine: str  # espeak or flite
    name: str

    @classmethod
    def parse(cls, text: str) -> Voice:
        engine, _, name = text.partition(":")
        if engine not in ("espeak", "flite") or not name:
            raise ValueError(f"voice {text!r}: expected espeak:NAME or flite:NAME, e.g. espeak:en-us or flite:slt")
        return cls(engine, name)

    @property
    def program(self) -> str:
        return "espeak-ng" if self.engine == "espeak" else "flite"

    def command(self, text: str, out: Path, speed: float, pitch: float) -> list[str]:
        """speed: 1.0 is the voice's normal rate; pitch: 1.0 its normal pitch."""
        if self.engine == "espeak":
            # -s words per minute (default 175); -p pitch 0-99 (default 50).
            return ["espeak-ng", "-v", self.name, "-s", str(round(175 * speed)),
                    "-p", str(max(0, min(99, round(50 * pitch)))), "-w", str(out), text]
        return ["flite", "-voice", self.name, "--setf", f"duration_stretch={1 / speed:.3f}",
                "--setf", f"int_f0_target_mean={round(100 * pitch)}", "-t", text, "-o", str(out)]


def check_voices(voices: list[Voice]) -> None:
    """Both synthesizers fall back to a default voice, silently, on a name they do not know: check first."""
    missing = sorted({voice.program for voice in voices if shutil.which(voice.program) is None})
    if missing:
        raise RuntimeError(f"{' and '.join(missing)} not installed (Debian/Ubuntu: apt-get install {' '.join(missing)})")
    known = {"espeak": set(), "flite": set()}
    variants: set[str] = set()
    if any(voice.engine == "espeak" for voice in voices):
        known["espeak"] = _espeak_names("--voices")
        variants = _espeak_names("--voices=variant")
    if any(voice.engine == "flite" for voice in voices):
        listing = subprocess.run(["flite", "-lv"], capture_output=True, text=True).stdout
        known["flite"] = set(listing.partition(":")[2].split())
    for voice in voices:
        name, _, variant = voice.name.partition("+")
        if voice.engine == "flite" and Path(voice.name).is_file():
            continue  # a .flitevox file
        if name not in known[voice.engine] or (variant and variant not in variants):
            if voice.engine == "flite":
                raise ValueError(f"flite has no voice {voice.name!r}; it has: {', '.join(sorted(known['flite']))}")
            english = sorted(name for name in known["espeak"] if name.lower().startswith("en"))
            raise ValueError(f"espeak-ng has no voice {voice.name!r}; its English ones: {', '.join(english)} "
                             "(`espeak-ng --voices` lists all; variants after '+', e.g. en-us+f2)")


def _espeak_names(option: str) -> set[str]:
    """Languages, voice names and voice files of `espeak-ng --voices` (or of its variants)."""
    names = set()
    for line in subprocess.run(["espeak-ng", option], capture_output=True, text=True).stdout.splitlines()[1:]:
        columns = line.split()
        if len(columns) >= 5:
            names.update({columns[1], columns[3], columns[4].rsplit("/", 1)[-1]})
    return names


def pick_sentences(path: Path, count: int, min_words: int, max_words: int, seed: int) -> list[str]:
    """`count` lines of a text file (.gz read as gzip) with min..max words, drawn uniformly (reservoir sampling)."""
    generator = random.Random(seed)
    chosen: list[str] = []
    seen = 0
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            words = normalize_text(line).split()
            if not min_words <= len(words) <= max_words:
                continue
            seen += 1
            if len(chosen) < count:
                chosen.append(" ".join(words))
            else:
                slot = generator.randrange(seen)
                if slot < count:
                    chosen[slot] = " ".join(words)
    if not chosen:
        raise ValueError(f"{path}: no line of {min_words}-{max_words} words")
    generator.shuffle(chosen)
    return chosen


def synthesize(text_file: Path, out: Path, count: int, voices: list[Voice], min_words: int = 3, max_words: int = 20,
               speed_range: tuple[float, float] = (0.8, 1.2), pitch_range: tuple[float, float] = (0.7, 1.3),
               seed: int = 0, workers: int = 4) -> list[Entry]:
    """Write `count` utterances and `out/manifest.jsonl`; returns the manifest's entries."""
    check_voices(voices)
    sentences = pick_sentences(text_file, count, min_words, max_words, seed)
    generator = random.Random(seed)
    jobs = [(index, sentences[index % len(sentences)], voices[index % len(voices)],
             generator.uniform(*speed_range), generator.uniform(*pitch_range)) for index in range(count)]
    (out / "audio").mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(workers) as pool:  # each job is its own synthesizer process
        entries = list(pool.map(lambda job: _speak(out, *job), jobs))
    write_manifest(entries, out / "manifest.jsonl")
    return entries


def _speak(out: Path, index: int, text: str, voice: Voice, speed: float, pitch: float) -> Entry:
    target = out / "audio" / f"{index:06d}.wav"
    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch) / "raw.wav"
        result = subprocess.run(voice.command(text, raw, speed, pitch), capture_output=True, text=True, timeout=120)
        if result.returncode != 0 or not raw.is_file():
            raise RuntimeError(f"{voice.program} failed on {text!r}: {result.stderr.strip() or result.returncode}")
        samples = load_audio(raw, RATE)  # espeak-ng speaks at 22.05 kHz, flite at 8 or 16 kHz
    soundfile.write(target, samples, RATE, subtype="PCM_16")
    return Entry(target, round(len(samples) / RATE, 3), text)
