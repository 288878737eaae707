"""What to transcribe: a JSONL manifest, or audio files and folders, as a stream of `Item`s.

A manifest is the training manifest format: one JSON object per line with `audio` (a path relative
to the manifest's folder, an absolute path, or an http(s) URL); every other field is kept and
passed through to the output. Folders are searched recursively for audio files, in sorted order.
An input's identity (`Item.key`) is its `audio` as written, so a rerun of the same command finds
what is already done; an input listed twice is transcribed once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..audio import AUDIO_SUFFIXES


@dataclass(frozen=True)
class Item:
    key: str  # the input's `audio` as written: its identity in the output
    source: str  # where a worker reads it: an absolute path or an http(s) URL
    record: dict = field(default_factory=dict, compare=False)  # the input's fields, passed through
    duration: float | None = None  # seconds, when the input says
    name: str = ""  # a relative path to name its per-file outputs by (`--output-dir`)


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


@dataclass
class Scan:
    """What a first pass over the inputs found, before any work: totals for the progress bar."""

    items: int = 0  # distinct inputs
    seconds: float = 0.0  # audio, summed over the inputs whose duration is known
    unknown: int = 0  # inputs without a duration
    repeated: int = 0  # inputs listed again (transcribed once)
    done: int = 0  # inputs already in the output (see `scan`'s `done`)


class Inputs:
    """A manifest (`manifest`) or audio files and folders (`paths`), read lazily: iterating twice
    reads them twice, so a list of millions is never held whole."""

    def __init__(self, manifest: str | Path | None = None, paths: list[str] | None = None):
        if (manifest is None) == (not paths):
            raise ValueError("give either a manifest or audio files and folders")
        self.manifest = Path(manifest) if manifest is not None else None
        self.paths = list(paths or [])
        if self.manifest is not None and not self.manifest.is_file():
            raise ValueError(f"no such manifest: '{self.manifest}'")
        for path in self.paths:
            if not is_url(path) and not Path(path).exists():
                raise ValueError(f"no such audio file or folder: '{path}'")

    def __iter__(self) -> Iterator[Item]:
        """Each distinct input once, in the order listed."""
        seen: set[str] = set()
        for item in self._all():
            if item.key not in seen:
                seen.add(item.key)
                yield item

    def scan(self, done: set[str] | frozenset = frozenset()) -> Scan:
        """Count the inputs, their known audio, and those among `done` (keys already in the output);
        ValueError for a malformed manifest line, so a bad manifest fails before any work starts."""
        scan, seen = Scan(), set()
        for item in self._all():
            if item.key in seen:
                scan.repeated += 1
                continue
            seen.add(item.key)
            scan.items += 1
            scan.done += item.key in done
            if item.duration is None:
                scan.unknown += 1
            else:
                scan.seconds += item.duration
        return scan

    def _all(self) -> Iterator[Item]:
        if self.manifest is not None:
            yield from manifest_items(self.manifest)
        else:
            yield from folder_items(self.paths)


def manifest_items(path: Path) -> Iterator[Item]:
    """The manifest's lines as items; relative audio paths are relative to the manifest's folder."""
    base = path.parent.resolve()
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                audio = record["audio"]
                if not isinstance(audio, str) or not audio:
                    raise TypeError("'audio' is not a path")
                duration = record.get("duration")
                duration = float(duration) if duration is not None else None
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
                raise ValueError(
                    f"{path}: line {number} is not a manifest entry with an 'audio' path "
                    f"({type(error).__name__}: {error})"
                ) from None
            source = audio if is_url(audio) else str(base / audio)  # `base / absolute` is the absolute path
            yield Item(audio, source, record, duration, output_name(audio))


def folder_items(paths: list[str]) -> Iterator[Item]:
    """Audio files as given, and every audio file below each folder (sorted); keys are the paths as
    found from the given ones, so the output names them as the user did."""
    for given in paths:
        path = Path(given)
        if is_url(given) or not path.is_dir():
            yield Item(
                given,
                given if is_url(given) else str(path.resolve()),
                {"audio": given},
                None,
                output_name(given if is_url(given) else path.name),
            )
            continue
        for found in sorted(
            found for found in path.rglob("*") if found.suffix.lower() in AUDIO_SUFFIXES and found.is_file()
        ):
            yield Item(
                str(found), str(found.resolve()), {"audio": str(found)}, None, found.relative_to(path).as_posix()
            )


def output_name(audio: str) -> str:
    """A relative path naming an input's per-file outputs: a relative path as it is (without `..`), an
    absolute one without its root, a URL as host/path."""
    if is_url(audio):
        audio = audio.split("://", 1)[1].split("?", 1)[0]
    parts = [part for part in PurePosixPath(audio.replace("\\", "/")).parts if part not in ("/", "..", ".")]
    return "/".join(parts) or "audio"
