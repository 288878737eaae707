"""`python -m training connect`: connected speech from isolated recordings, with its manifest.

Each new utterance joins MIN-MAX recordings of one speaker (e.g. FSDD's single digits into "four one
five two"), with a pause of random length before, between and after them, and its text is theirs
joined by spaces. The speaker is a regular expression's first group on the file name (FSDD:
`^\\d+_([a-z]+)_\\d+\\.wav$`), so strings never mix voices. Written as 16 kHz mono wav beside
`manifest.jsonl`; a seed makes the set the same on every run (a test set can be rebuilt, not stored).
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile  # writes the wav files

from model.audio import load_audio

from .manifest import Entry, write_manifest

RATE = 16000


def group_by_speaker(entries: list[Entry], speaker: str) -> dict[str, list[Entry]]:
    """Labelled entries by the first group of the regular expression `speaker` on their file names."""
    pattern = re.compile(speaker)
    if pattern.groups < 1:
        raise ValueError(f"--speaker {speaker!r}: needs a group naming the speaker, e.g. '^\\d+_([a-z]+)_'")
    groups: dict[str, list[Entry]] = defaultdict(list)
    for entry in entries:
        found = pattern.search(entry.audio.name)
        if found is None:
            raise ValueError(f"{entry.audio.name}: --speaker {speaker!r} does not match it")
        if entry.text:
            groups[found.group(1)].append(entry)
    if not groups:
        raise ValueError("no transcribed recordings to connect")
    return dict(sorted(groups.items()))


def connect(
    entries: list[Entry],
    out: Path,
    count: int,
    min_items: int,
    max_items: int,
    speaker: str,
    pause: tuple[float, float] = (0.05, 0.6),
    seed: int = 0,
) -> list[Entry]:
    """Write `count` connected utterances and `out/manifest.jsonl`; returns the manifest's entries.
    Speakers take turns, so each has the same share whatever its number of recordings."""
    groups = list(group_by_speaker(entries, speaker).values())
    generator = random.Random(seed)
    audio: dict[Path, np.ndarray] = {}
    (out / "audio").mkdir(parents=True, exist_ok=True)
    written = []
    for index in range(count):
        group = groups[index % len(groups)]
        chosen = [generator.choice(group) for _ in range(generator.randint(min_items, max_items))]
        pieces = [_silence(generator.uniform(*pause))]
        for entry in chosen:
            if entry.audio not in audio:
                audio[entry.audio] = load_audio(entry.audio, RATE)
            pieces += [audio[entry.audio], _silence(generator.uniform(*pause))]
        samples = np.concatenate(pieces)
        target = out / "audio" / f"{index:06d}.wav"
        soundfile.write(target, samples, RATE, subtype="PCM_16")
        written.append(Entry(target, round(len(samples) / RATE, 3), " ".join(entry.text for entry in chosen)))
    write_manifest(written, out / "manifest.jsonl")
    return written


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * RATE), dtype=np.float32)
