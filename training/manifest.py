"""Manifests: one JSON object per line, `{"audio": path, "duration": seconds, "text": ...}` (text optional).

Audio paths are stored relative to the manifest's folder when they lie below it, so a corpus and
its manifest move together; `read_manifest` resolves them back.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import soundfile  # reads durations from file headers, without decoding the audio

from model.audio import AUDIO_SUFFIXES


@dataclass
class Entry:
    audio: Path
    duration: float
    text: str | None = None


def read_transcripts(path: Path) -> dict[Path, str]:
    """A TSV of `audio<TAB>text` (paths relative to the TSV's folder); a header row naming the
    columns `audio` and `text` is allowed, with any other columns beside them."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    audio_column, text_column = 0, 1
    if rows and "audio" in rows[0] and "text" in rows[0]:
        audio_column, text_column = rows[0].index("audio"), rows[0].index("text")
        rows = rows[1:]
    transcripts = {}
    for number, row in enumerate(rows, start=1):
        if len(row) <= max(audio_column, text_column):
            raise ValueError(f"{path}: row {number} has no text column: {row!r}")
        transcripts[(path.parent / row[audio_column]).resolve()] = row[text_column].strip()
    return transcripts


def build_manifest(
    audio_dir: Path | None = None,
    transcripts: Path | list[Path] | None = None,
    min_seconds: float = 0.0,
    max_seconds: float = float("inf"),
    include: str | None = None,
    exclude: str | None = None,
) -> tuple[list[Entry], int]:
    """Entries for every audio file under `audio_dir` and/or every row of `transcripts` (one TSV or
    several) whose path matches `include` and not `exclude` (regular expressions), with the transcript's
    text where there is one; and how many were left out for their duration."""
    tables = [transcripts] if isinstance(transcripts, Path) else list(transcripts or [])
    texts = {}
    for table in tables:
        texts.update(read_transcripts(table))
    if audio_dir is not None:
        files = sorted(path.resolve() for path in audio_dir.rglob("*") if path.suffix.lower() in AUDIO_SUFFIXES)
    else:
        files = list(texts)
    files = [
        path
        for path in files
        if (include is None or re.search(include, path.as_posix()))
        and (exclude is None or not re.search(exclude, path.as_posix()))
    ]
    entries, skipped = [], 0
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: listed in {', '.join(map(str, tables))} but not found")
        try:
            duration = soundfile.info(str(path)).duration
        except (RuntimeError, TypeError, soundfile.LibsndfileError) as error:  # TypeError: headerless raw audio
            raise ValueError(f"{path}: not a readable audio file ({error})") from None
        if min_seconds <= duration <= max_seconds:
            entries.append(Entry(path, round(duration, 3), texts.get(path)))
        else:
            skipped += 1
    return entries, skipped


def write_manifest(entries: list[Entry], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve()
    with open(path, "w", encoding="utf-8") as handle:
        for entry in entries:
            audio = Path(entry.audio).resolve()
            relative = os.path.relpath(audio, base)
            record = {
                "audio": audio.as_posix() if relative.startswith("..") else Path(relative).as_posix(),
                "duration": entry.duration,
            }
            if entry.text is not None:
                record["text"] = entry.text
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_manifest(path: Path) -> list[Entry]:
    entries = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                entries.append(Entry(path.parent / record["audio"], float(record["duration"]), record.get("text")))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
                raise ValueError(f"{path}: line {number} is not a manifest entry ({error})") from None
    return entries


def read_manifests(paths: str) -> list[Entry]:
    """The entries of one manifest or of several, comma-separated (`a.jsonl,b.jsonl`), in that order."""
    return [entry for path in paths.split(",") if path.strip() for entry in read_manifest(Path(path.strip()))]


def split(
    entries: list[Entry], match: str | None = None, fraction: float = 0.0, seed: int = 0, count: int | None = None
) -> tuple[list[Entry], list[Entry]]:
    """(rest, chosen): `chosen` holds the entries whose path matches `match`, or else `count` of them
    (default: `fraction` of them) drawn at random within each transcript, so that every word or
    digit keeps its share; both keep the manifest's order."""
    if match is not None:
        chosen = {id(entry) for entry in entries if re.search(match, entry.audio.as_posix())}
    else:
        by_text: dict[str | None, list[Entry]] = defaultdict(list)
        for entry in entries:
            by_text[entry.text].append(entry)
        wanted = round(fraction * len(entries)) if count is None else min(count, len(entries))
        # Each transcript's share, rounded so that the shares add up to `wanted` (largest remainders first).
        exact = {text: wanted * len(group) / len(entries) for text, group in by_text.items()}
        shares = {text: int(value) for text, value in exact.items()}
        for text in sorted(exact, key=lambda text: shares[text] - exact[text])[: wanted - sum(shares.values())]:
            shares[text] += 1
        generator = random.Random(seed)
        chosen = set()
        for text, group in by_text.items():
            chosen.update(id(entry) for entry in generator.sample(group, shares[text]))
    return (
        [entry for entry in entries if id(entry) not in chosen],
        [entry for entry in entries if id(entry) in chosen],
    )
