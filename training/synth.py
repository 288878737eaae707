"""`python -m training synth`: a synthetic English corpus spoken by espeak-ng, flite and Festival voices
at varied speed and pitch, with its manifest. For tests, demos, training and pretraining data.

Each utterance is one sentence of a text file (chosen at random, within a word range) or one random
digit string ("four one five oh two"), one voice, one speed and one pitch; the audio is written as
16 kHz mono wav beside `manifest.jsonl`. The voice `english` stands for every English voice installed:
espeak-ng's English languages with each of its variants, flite's voices, Festival's English voices.
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
DEFAULT_VOICES = (
    "espeak:en-us",
    "espeak:en-gb",
    "espeak:en-us+f2",
    "espeak:en-gb-scotland",
    "espeak:en-029+m3",
    "espeak:en-gb-x-rp+f4",
    "flite:slt",
    "flite:rms",
    "flite:awb",
    "flite:kal16",
)
ENGINES = {"espeak": "espeak-ng", "flite": "flite", "festival": "text2wave"}  # engine -> the program it runs
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass(frozen=True)
class Voice:
    engine: str  # espeak, flite or festival
    name: str

    @classmethod
    def parse(cls, text: str) -> Voice:
        engine, _, name = text.partition(":")
        if engine not in ENGINES or not name:
            raise ValueError(
                f"voice {text!r}: expected espeak:NAME, flite:NAME or festival:NAME, e.g. espeak:en-us, "
                "flite:slt or festival:kal_diphone (or `english` for every English voice installed)"
            )
        return cls(engine, name)

    @property
    def program(self) -> str:
        return ENGINES[self.engine]

    def command(self, text_file: Path, out: Path, speed: float, pitch: float) -> list[str]:
        """speed: 1.0 is the voice's normal rate; pitch: 1.0 its normal pitch (Festival keeps its own)."""
        if self.engine == "espeak":
            # -s words per minute (default 175); -p pitch 0-99 (default 50).
            return [
                "espeak-ng",
                "-v",
                self.name,
                "-s",
                str(round(175 * speed)),
                "-p",
                str(max(0, min(99, round(50 * pitch)))),
                "-w",
                str(out),
                "-f",
                str(text_file),
            ]
        if self.engine == "flite":
            return [
                "flite",
                "-voice",
                self.name,
                "--setf",
                f"duration_stretch={1 / speed:.3f}",
                "--setf",
                f"int_f0_target_mean={round(100 * pitch)}",
                "-f",
                str(text_file),
                "-o",
                str(out),
            ]
        return [
            "text2wave",
            "-eval",
            f"(voice_{self.name})",
            "-eval",
            f"(Parameter.set 'Duration_Stretch {1 / speed:.3f})",
            "-o",
            str(out),
            str(text_file),
        ]


def english_voices() -> list[Voice]:
    """Every English voice installed: espeak-ng's English languages, each plain and with each variant
    (MBROLA voices left out: their data is not packaged), flite's voices, Festival's English voices."""
    voices = []
    if shutil.which("espeak-ng"):
        languages = sorted(
            {
                columns[1]
                for columns in _espeak_listing("--voices=en")
                if columns[1].startswith("en") and not columns[4].startswith("mb/")
            }
        )
        variants = sorted({columns[4].rsplit("/", 1)[-1] for columns in _espeak_listing("--voices=variant")})
        voices += [
            Voice("espeak", f"{language}{'+' + variant if variant else ''}")
            for language in languages
            for variant in ["", *variants]
        ]
    if shutil.which("flite"):
        voices += [Voice("flite", name) for name in sorted(_flite_voices())]
    if shutil.which("text2wave"):
        voices += [Voice("festival", name) for name in sorted(_festival_voices())]
    if not voices:
        raise RuntimeError(
            "no speech synthesizer installed (Debian/Ubuntu: apt-get install espeak-ng flite "
            "festival festvox-kallpc16k festvox-us-slt-hts)"
        )
    return voices


def parse_voices(text: str) -> list[Voice]:
    """A comma-separated list of ENGINE:NAME voices; `english` adds every English voice installed."""
    voices = []
    for item in (item.strip() for item in text.split(",")):
        if item == "english":
            voices += english_voices()
        elif item:
            voices.append(Voice.parse(item))
    if not voices:
        raise ValueError("--voices names no voice")
    return voices


def digit_strings(
    count: int, min_digits: int, max_digits: int, oh_fraction: float, seed: int, zero_fraction: float | None = None
) -> list[str]:
    """`count` random digit strings of min..max digits; each zero is said "oh" with probability `oh_fraction`.
    Each digit is a zero with probability `zero_fraction` (the rest alike), or all ten alike when it is None."""
    generator = random.Random(seed)

    def draw() -> int:
        if zero_fraction is None:
            return generator.randrange(10)
        return 0 if generator.random() < zero_fraction else generator.randrange(1, 10)

    strings = []
    for _ in range(count):
        digits = [draw() for _ in range(generator.randint(min_digits, max_digits))]
        strings.append(
            " ".join("oh" if digit == 0 and generator.random() < oh_fraction else DIGITS[digit] for digit in digits)
        )
    return strings


def check_voices(voices: list[Voice]) -> None:
    """Both synthesizers fall back to a default voice, silently, on a name they do not know: check first."""
    missing = sorted({voice.program for voice in voices if shutil.which(voice.program) is None})
    if missing:
        packages = " ".join("festival festvox-kallpc16k" if program == "text2wave" else program for program in missing)
        raise RuntimeError(f"{' and '.join(missing)} not installed (Debian/Ubuntu: apt-get install {packages})")
    known: dict[str, set[str]] = {"espeak": set(), "flite": set(), "festival": set()}
    variants: set[str] = set()
    if any(voice.engine == "espeak" for voice in voices):
        known["espeak"] = _espeak_names("--voices")
        variants = _espeak_names("--voices=variant")
    if any(voice.engine == "flite" for voice in voices):
        known["flite"] = _flite_voices()
    if any(voice.engine == "festival" for voice in voices):
        known["festival"] = _festival_voices()
    for voice in voices:
        name, _, variant = voice.name.partition("+")
        if voice.engine == "flite" and Path(voice.name).is_file():
            continue  # a .flitevox file
        if voice.engine != "espeak" and voice.name not in known[voice.engine]:
            raise ValueError(
                f"{voice.engine} has no voice {voice.name!r}; it has: "
                f"{', '.join(sorted(known[voice.engine])) or 'none'}"
            )
        if name not in known[voice.engine] or (variant and variant not in variants):
            english = sorted(name for name in known["espeak"] if name.lower().startswith("en"))
            raise ValueError(
                f"espeak-ng has no voice {voice.name!r}; its English ones: {', '.join(english)} "
                "(`espeak-ng --voices` lists all; variants after '+', e.g. en-us+f2)"
            )


def _espeak_listing(option: str) -> list[list[str]]:
    """The rows of `espeak-ng --voices...`: priority, language, gender, name, file, ..."""
    lines = subprocess.run(["espeak-ng", option], capture_output=True, text=True).stdout.splitlines()[1:]
    return [columns for columns in (line.split() for line in lines) if len(columns) >= 5]


def _espeak_names(option: str) -> set[str]:
    """Languages, voice names and voice files of `espeak-ng --voices` (or of its variants)."""
    return {
        name for columns in _espeak_listing(option) for name in (columns[1], columns[3], columns[4].rsplit("/", 1)[-1])
    }


def _flite_voices() -> set[str]:
    listing = subprocess.run(["flite", "-lv"], capture_output=True, text=True).stdout
    return set(listing.partition(":")[2].split())


def _festival_voices() -> set[str]:
    """Festival's installed voices, e.g. kal_diphone (festvox-kallpc16k), cmu_us_slt_arctic_hts (festvox-us-slt-hts)."""
    listing = subprocess.run(["festival", "-b", "(print (voice.list))"], capture_output=True, text=True).stdout
    return set(listing.replace("(", " ").replace(")", " ").split())


def pick_sentences(
    path: Path, count: int, min_words: int, max_words: int, seed: int, without: set[str] = frozenset()
) -> list[str]:
    """`count` lines of a text file (.gz read as gzip) with min..max words and none of the words `without`,
    drawn uniformly (reservoir sampling)."""
    generator = random.Random(seed)
    chosen: list[str] = []
    seen = 0
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            words = normalize_text(line).split()
            if not min_words <= len(words) <= max_words or without.intersection(words):
                continue
            seen += 1
            if len(chosen) < count:
                chosen.append(" ".join(words))
            else:
                slot = generator.randrange(seen)
                if slot < count:
                    chosen[slot] = " ".join(words)
    if not chosen:
        raise ValueError(
            f"{path}: no line of {min_words}-{max_words} words"
            + (f" without {', '.join(sorted(without))}" if without else "")
        )
    generator.shuffle(chosen)
    return chosen


def synthesize(
    sentences: list[str],
    out: Path,
    count: int,
    voices: list[Voice],
    speed_range: tuple[float, float] = (0.8, 1.2),
    pitch_range: tuple[float, float] = (0.7, 1.3),
    seed: int = 0,
    workers: int = 4,
) -> list[Entry]:
    """Write `count` utterances of `sentences` (in turn) and `out/manifest.jsonl`; returns the manifest's entries.
    Each utterance's voice is drawn at random, each engine as often as the others (espeak-ng alone has
    hundreds of voice-variant pairs, flite and Festival a few voices each)."""
    check_voices(voices)
    generator = random.Random(seed)
    by_engine = [[voice for voice in voices if voice.engine == engine] for engine in ENGINES]
    by_engine = [group for group in by_engine if group]
    jobs = [
        (
            index,
            sentences[index % len(sentences)],
            generator.choice(by_engine[index % len(by_engine)]),
            generator.uniform(*speed_range),
            generator.uniform(*pitch_range),
        )
        for index in range(count)
    ]
    (out / "audio").mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(workers) as pool:  # each job is its own synthesizer process
        entries = list(pool.map(lambda job: _speak(out, *job), jobs))
    write_manifest(entries, out / "manifest.jsonl")
    return entries


def _speak(out: Path, index: int, text: str, voice: Voice, speed: float, pitch: float) -> Entry:
    target = out / "audio" / f"{index:06d}.wav"
    with tempfile.TemporaryDirectory() as scratch:
        raw, text_file = Path(scratch) / "raw.wav", Path(scratch) / "text.txt"
        text_file.write_text(text + "\n", encoding="utf-8")
        result = subprocess.run(
            voice.command(text_file, raw, speed, pitch), capture_output=True, text=True, timeout=120
        )
        if result.returncode != 0 or not raw.is_file():
            raise RuntimeError(
                f"{voice.program} ({voice.engine}:{voice.name}) failed on {text!r}: "
                f"{result.stderr.strip() or result.returncode}"
            )
        samples = load_audio(raw, RATE)  # espeak-ng speaks at 22.05 kHz, flite at 8 or 16, Festival at 16 or 32
    soundfile.write(target, samples, RATE, subtype="PCM_16")
    return Entry(target, round(len(samples) / RATE, 3), text)
