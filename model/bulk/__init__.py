"""Bulk transcription: a list of any size (a JSONL manifest, folders, files) transcribed once each,
in any number of worker processes, with a resumable JSONL journal and a progress bar.

The pieces, each usable alone:
- `inputs`: manifests and folders -> `Item`s (key, where a worker reads the audio, the input's fields);
- `task`: what a worker does with one item (`TranscribeTask`; training's pseudo-labels are another);
- `pool`: who does it: this process, or a pool of local processes (`LocalPool`); the Ray backend
  (the separate `cluster` package) offers the same interface on a cluster;
- `journal`: the output JSONL, read back on a rerun so that every input lands in it exactly once;
- `run`: the driver joining them, with `progress` and the per-file `outputs` (txt, json, srt, vtt).

Imports no torch and no Ray.
"""

from .inputs import Inputs, Item, folder_items, manifest_items
from .journal import Journal
from .pool import InProcess, LocalPool
from .run import Summary, run_bulk
from .task import Task, TranscribeTask

__all__ = [
    "InProcess",
    "Inputs",
    "Item",
    "Journal",
    "LocalPool",
    "Summary",
    "Task",
    "TranscribeTask",
    "folder_items",
    "manifest_items",
    "run_bulk",
]
