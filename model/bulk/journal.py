"""The output of a bulk run: a JSONL file, one line per input, which is also the run's memory.

A rerun of the same command reads the file back and skips every input already in it, so a run
that crashed, was interrupted or lost its machine continues where it stopped, and each input lands
in the file exactly once: lines are written whole by one process (the driver), which also drops a
result it already has (a retried worker's second answer). A line cut off by a crash mid-write is
removed before appending. The settings the lines were made with are kept beside the file
(`<out>.settings.json`): a rerun with another model or decoder is refused instead of mixing the two.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import IO

try:
    import fcntl  # one writer at a time; POSIX only
except ImportError:  # pragma: no cover - Windows: no lock
    fcntl = None

SYNC_SECONDS = 5.0  # how often lines are forced to disk: bounds what a power cut loses, not a crash


class JournalError(ValueError):
    """The output file cannot be continued: written with other settings, damaged, or in use."""


class Journal:
    """Append-only JSONL keyed by each line's `audio`. Use as a context manager:
    `with Journal(path, settings) as journal: done = journal.done; journal.write(line)`."""

    def __init__(self, path: str | Path, settings: dict | None = None):
        self.path = Path(path)
        self.settings_path = self.path.with_name(self.path.name + ".settings.json")
        self.settings = settings
        self.done: set[str] = set()  # the keys already in the file
        self.lines_before = 0  # lines found when opened
        self._handle: IO[str] | None = None
        self._synced = time.monotonic()

    def __enter__(self) -> Journal:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a+", encoding="utf-8", newline="")  # newline="": byte counts stay exact
        if fcntl is not None:
            try:
                fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._handle.close()
                raise JournalError(
                    f"{self.path} is being written by another run; wait for it or choose another output file"
                ) from None
        self._check_settings()
        self._read_back()
        return self

    def __exit__(self, *_) -> None:
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None

    def write(self, line: dict) -> bool:
        """Append one result; False (and nothing written) if its input is already in the file."""
        key = line["audio"]
        if key in self.done:
            return False
        self._handle.write(json.dumps(line, ensure_ascii=False) + "\n")
        self._handle.flush()  # whole lines reach the file as they come: a crash loses none written
        self.done.add(key)
        if time.monotonic() - self._synced > SYNC_SECONDS:
            os.fsync(self._handle.fileno())
            self._synced = time.monotonic()
        return True

    def _check_settings(self) -> None:
        if self.settings is None:
            return
        wanted = json.loads(json.dumps(self.settings))  # as it reads back: tuples become lists
        if self.settings_path.is_file() and self.path.stat().st_size > 0:
            found = json.loads(self.settings_path.read_text())
            if found != wanted:
                changed = sorted(key for key in set(found) | set(wanted) if found.get(key) != wanted.get(key))
                raise JournalError(
                    f"{self.path} was written with other settings ({', '.join(changed)} differ: see "
                    f"{self.settings_path.name}); rerun with those, or write to another file"
                )
        self.settings_path.write_text(json.dumps(wanted, indent=2) + "\n")

    def _read_back(self) -> None:
        """Collect the keys already written; cut off a last line that a crash left unfinished."""
        handle = self._handle
        handle.seek(0)
        kept = 0  # bytes of whole lines
        for number, line in enumerate(iter(handle.readline, ""), start=1):
            if not line.endswith("\n"):
                break  # torn: written in part when the previous run died
            kept += len(line.encode("utf-8"))
            if not line.strip():
                continue
            try:
                self.done.add(json.loads(line)["audio"])
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise JournalError(
                    f"{self.path}: line {number} is not a result line ({error}); it is not an "
                    "output of this command, or was damaged: move it aside"
                ) from None
            self.lines_before += 1
        handle.truncate(kept)
        handle.seek(0, os.SEEK_END)
