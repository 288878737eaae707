"""Test audio for bulk transcription: spoken digit strings of several seconds, each made of real
FSDD recordings (../shared/data/fsdd) joined with short pauses, so a file takes the shipped digits
model a noticeable moment (a run can be interrupted mid-way) while a dozen stay cheap."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile

from conftest import DATA, require_data

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SPEAKERS = ["jackson", "theo", "george", "nicolas", "yweweler", "lucas"]
PAUSE_SECONDS = 0.25


def write_digit_strings(folder: Path, count: int = 12, digits: int = 12) -> list[Path]:
    """`count` wav files (8 kHz) under `folder`, a third of them in `folder/more/`; each says `digits`
    digits by one speaker. Returns their paths in sorted order (a folder's order)."""
    require_data("fsdd")
    recordings = DATA / "fsdd" / "recordings"
    paths = []
    for index in range(count):
        speaker = SPEAKERS[index % len(SPEAKERS)]
        pieces = []
        for position in range(digits):
            digit = (index * 7 + position * 3) % 10
            samples, rate = soundfile.read(
                recordings / f"{digit}_{speaker}_{(index + position) % 50}.wav", dtype="float32"
            )
            pieces += [samples, np.zeros(int(PAUSE_SECONDS * rate), dtype=np.float32)]
        path = folder / ("more" if index % 3 == 2 else "") / f"string-{index:02d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, np.concatenate(pieces), rate)
        paths.append(path)
    return sorted(paths)


def write_manifest(paths: list[Path], manifest: Path, **extra) -> Path:
    """A JSONL manifest of `paths` (relative to its folder) with a `speaker` field and `extra` fields."""
    with open(manifest, "w", encoding="utf-8") as handle:
        for path in paths:
            record = {"audio": str(path.relative_to(manifest.parent)), "speaker": path.stem, **extra}
            handle.write(json.dumps(record) + "\n")
    return manifest


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]
