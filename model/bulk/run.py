"""The driver of a bulk run: inputs -> a backend's workers -> one output line per input.

Only the driver writes: the JSONL journal (which makes the run resumable and exactly-once), the
per-file outputs, and whatever `emit` does with each line (the CLI prints it). Results arrive in
any order and possibly twice (a dead worker's inputs are sent again): the first one counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .inputs import Inputs, Item
from .journal import Journal
from .outputs import write_output
from .pool import Backend
from .progress import Progress, clock
from .task import Task


@dataclass
class Summary:
    """What a run did; `line()` says it in one line."""

    total: int  # distinct inputs
    before: int = 0  # already in the output when the run started
    done: int = 0  # finished by this run
    errors: int = 0  # of `done`: lines with `error`
    repeated: int = 0  # inputs listed more than once (done once)
    seconds: float = 0.0  # audio done by this run
    elapsed: float = 0.0  # wall-clock seconds
    lost: int = 0  # workers that died and were replaced
    by_worker: dict[str, int] = field(default_factory=dict)  # inputs done per worker or node

    @property
    def complete(self) -> bool:
        return self.before + self.done == self.total

    def line(self) -> str:
        rate = self.done / self.elapsed if self.elapsed else 0.0
        text = (
            f"{self.done} transcribed ({self.errors} errors), {self.before} already done, of {self.total} "
            f"inputs; {self.seconds / 3600:.3f} audio-h in {clock(self.elapsed)} ({rate:.1f} files/s, "
            f"{self.seconds / max(self.elapsed, 1e-9):.0f}x real time)"
        )
        if self.repeated:
            text += f"; {self.repeated} listed again (done once)"
        if self.lost:
            text += f"; {self.lost} worker(s) lost and replaced, their inputs sent again"
        if len(self.by_worker) > 1:
            text += "; per worker: " + ", ".join(f"{name} {count}" for name, count in sorted(self.by_worker.items()))
        return text


def output_line(item: Item, fields: dict) -> dict:
    """The input's fields, then the result's. An input's own `text` (a reference transcript) is kept
    as `reference`, so the output's `text` is always the model's."""
    line = dict(item.record)
    line["audio"] = item.key
    if "text" in line:
        line.setdefault("reference", line.pop("text"))
    line.update(fields)
    return line


def run_bulk(
    inputs: Inputs,
    task: Task,
    backend: Backend,
    journal: Journal | None = None,
    emit: Callable[[dict], None] | None = None,
    output_dir: Path | None = None,
    format: str = "txt",
    progress: Progress | bool | None = None,
) -> Summary:
    """Run `task` over every input not in `journal` yet (all of them without one), each result appended
    to the journal, written to `output_dir` in `format` and passed to `emit`. `progress`: a Progress, or
    whether to show one on standard error (None: redrawn on a terminal, a line now and then elsewhere;
    False: none). KeyboardInterrupt stops the
    workers and propagates; what was written stays, and the same command continues from there."""
    started = time.monotonic()
    done = journal.done if journal is not None else set()
    scan = inputs.scan(done)
    summary = Summary(scan.items, scan.done, repeated=scan.repeated)
    if not isinstance(progress, Progress):
        progress = Progress(scan.items, scan.done, terminal=progress) if progress is not False else None
    seen: set[str] = set(done)
    try:
        for item, fields in backend.results(task, (item for item in inputs if item.key not in done)):
            if item.key in seen:
                continue  # a second answer for an input: its worker was presumed dead and it was sent again
            seen.add(item.key)
            line = output_line(item, fields)
            failed = "error" in line
            if output_dir is not None and not failed:
                write_output(output_dir, item.name, format, line)  # before the journal: a line means its file is there
            if journal is not None:
                journal.write(line)
            if emit is not None:
                emit(line)
            summary.done += 1
            summary.errors += failed
            summary.seconds += line.get("duration") or 0.0
            if progress is not None:
                progress.update(line.get("duration") or 0.0, failed)
    finally:
        backend.close()
        if progress is not None:
            progress.close()
        summary.elapsed = time.monotonic() - started
        summary.lost, summary.by_worker = backend.lost, dict(backend.by_worker)
    return summary
