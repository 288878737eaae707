"""Per-file outputs of a bulk run (`--output-dir`, `--format`): the transcript as plain text, JSON,
or SRT / WebVTT subtitles, written as `<output-dir>/<input's name>.<format>`."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..subtitles import segments, srt, vtt

FORMATS = ("txt", "json", "srt", "vtt")
NEEDS_WORDS = ("srt", "vtt")  # subtitles are cut from the word timings


def render(line: dict, format: str) -> str:
    """One output line (the JSONL's fields) in `format`."""
    if format == "txt":
        return line["text"] + "\n"
    if format == "json":
        return json.dumps(line, ensure_ascii=False, indent=2) + "\n"
    if format in NEEDS_WORDS:
        parts = segments(line.get("words", []))
        return srt(parts) if format == "srt" else vtt(parts)
    raise ValueError(f"unknown output format {format!r}: one of {', '.join(FORMATS)}")


def output_path(output_dir: Path, name: str, format: str) -> Path:
    """`name` (a relative path, see `inputs.output_name`) under `output_dir`, its suffix replaced."""
    return (output_dir / name).with_suffix(f".{format}")


def write_output(output_dir: Path, name: str, format: str, line: dict) -> Path:
    """Write one input's output whole (a temporary file renamed: a crash leaves no half file)."""
    path = output_path(output_dir, name, format)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(render(line, format), encoding="utf-8")
    os.replace(partial, path)
    return path
