"""A progress line for long runs: files and audio done, files/s, audio-hours/s, ETA and errors.

On a terminal it redraws one line in place; elsewhere (a log file, a cluster job's output) it
prints a plain line now and then, so a log shows the run moving without filling up.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

REDRAW_SECONDS = 0.2  # terminal: at most five redraws a second
LOG_SECONDS = 30.0  # not a terminal: one line this often


def clock(seconds: float) -> str:
    """12 -> '0:12', 3725 -> '1:02:05'."""
    minutes, whole = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{whole:02d}" if hours else f"{minutes}:{whole:02d}"


class Progress:
    """`total` inputs, `before` of them done by an earlier run; call `update` per result, `close` at the end.
    Rates count this run's work only."""

    def __init__(self, total: int, before: int = 0, stream: TextIO | None = None, terminal: bool | None = None):
        self.total, self.before = total, before
        self.stream = stream if stream is not None else sys.stderr
        self.terminal = self.stream.isatty() if terminal is None else terminal
        self.done = self.errors = 0
        self.seconds = 0.0  # audio done in this run
        self.started = time.monotonic()
        self._shown = 0.0 if self.terminal else self.started  # a log's first line comes after LOG_SECONDS

    def update(self, seconds: float = 0.0, error: bool = False) -> None:
        self.done += 1
        self.errors += error
        self.seconds += seconds
        now = time.monotonic()
        if now - self._shown >= (REDRAW_SECONDS if self.terminal else LOG_SECONDS):
            self._shown = now
            self._show(self.line())

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        finished = self.before + self.done
        files_rate, audio_rate = self.done / elapsed, self.seconds / elapsed
        parts = [
            f"{finished}/{self.total} files ({100 * finished / max(self.total, 1):.0f}%)",
            f"{files_rate:.1f} files/s",
            f"{audio_rate / 3600:.4f} audio-h/s ({audio_rate:.0f}x real time)",
            f"{self.seconds / 3600:.3f} audio-h",
        ]
        left = self.total - finished
        if left and files_rate > 0:
            parts.append(f"ETA {clock(left / files_rate)}")
        if self.errors:
            parts.append(f"{self.errors} error{'s' * (self.errors != 1)}")
        return " | ".join(parts)

    def _show(self, line: str) -> None:
        if self.terminal:
            width = shutil.get_terminal_size().columns - 1
            self.stream.write("\r" + line[:width].ljust(width))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Clear the terminal's progress line (the caller prints the summary)."""
        if self.terminal:
            self.stream.write("\r" + " " * (shutil.get_terminal_size().columns - 1) + "\r")
            self.stream.flush()
