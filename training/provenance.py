"""Where a model came from: the commit the code that made it was at.

A training run appends each of its starts (the first and every resume) to OUTPUT/sources.json; a model
folder's provenance.json carries that list beside the commit that packaged it, so a model can be traced
to the code that trained it, not only to the one that copied it into place.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

SOURCES_FILE = "sources.json"


def source(leave_out: Path | None = None) -> dict:
    """The commit, and whether tracked files differ from it (None outside a git checkout), leaving out
    the folder `leave_out` (what is being written is no change to what writes it)."""
    top = _git("rev-parse", "--show-toplevel")
    if top == "unknown":
        return {"commit": "unknown", "uncommitted_changes": None}
    excluded = []
    if leave_out is not None:
        try:
            excluded = [f":(top,exclude){leave_out.resolve().relative_to(Path(top).resolve()).as_posix()}"]
        except ValueError:  # outside the checkout
            pass
    changes = _git("status", "--porcelain", "--untracked-files=no", "--", ":/", *excluded)
    return {"commit": _git("rev-parse", "HEAD"), "uncommitted_changes": bool(changes)}


def record_start(output: Path, step: int) -> None:
    """Append this start of the training run in `output` (at update `step`: 0, or where it resumed)."""
    starts = read_starts(output) or []
    starts.append({"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "step": step, **source()})
    (output / SOURCES_FILE).write_text(json.dumps(starts, indent=2) + "\n", encoding="utf-8")


def read_starts(output: Path) -> list | None:
    """The starts `record_start` wrote for the run in `output`, or None for a run from before it did."""
    path = output / SOURCES_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _git(*args: str) -> str:
    try:
        result = subprocess.run(["git", *args], capture_output=True, text=True)
    except FileNotFoundError:  # no git installed
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"
