"""Bulk transcription throughput: a Ray cluster of two nodes against one node, and each worker against
the plain single-process command, on the same input in one run.

Run by hand (about 4 minutes on 2 cores):  python bench/bulk.py [--input librispeech|fsdd] [--files N]

Input: ../shared/data/unlabeled-librispeech (251 utterances of 2-17 s, 52 min in all: each file is
work enough that the driver's share is small), or the first N recordings of FSDD (0.2-2 s each:
short files, where the driver's work per result shows). Each
setup transcribes all of them with the model's default decoding (the shipped model: beam search with
its LM and lexicon). Rates are steady-state: from the first result to the last, so process and
cluster start-up (reported apart, as "wall") do not count. The clusters are throwaway loopback
clusters (cluster.local), one CPU per node, each worker one inference thread. The plain command is
`python -m model transcribe` given the same files, on the same ONNX export, timed by its output
lines; once pinned to one core (what a worker has: the per-worker comparison) and once on all; and a
worker's own code in one process with one thread, without pool or cluster: the ceiling of a worker.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cluster.local import LocalCluster  # noqa: E402
from model.bulk import Inputs, TranscribeTask, run_bulk  # noqa: E402
from model.bulk.pool import Backend, InProcess, LocalPool  # noqa: E402
from model.bulk.progress import Progress  # noqa: E402
from model.package import package_lexicon, package_lm, package_onnx  # noqa: E402
from model.transcribe import model_decoding  # noqa: E402


class Timing(Progress):
    """A silent progress that notes when each result came and how much audio it held."""

    def __init__(self, total: int):
        super().__init__(total, stream=open(os.devnull, "w"), terminal=False)
        self.times: list[float] = []
        self.durations: list[float] = []

    def update(self, seconds: float = 0.0, error: bool = False) -> None:
        assert not error, "the benchmark's input transcribes without errors"
        self.times.append(time.monotonic())
        self.durations.append(seconds)


def steady(times: list[float], durations: list[float]) -> tuple[float, float]:
    """(files/s, audio-s/s) from the first result to the last, counting the results after the first
    arrival (results come in batches: the first batch's work was done before the clock started)."""
    first = sum(1 for moment in times if moment - times[0] < 1e-3)
    span = times[-1] - times[0]
    return (len(times) - first) / span, sum(durations[first:]) / span


def plain_command(files: list[Path], model: Path, one_core: bool) -> dict:
    """`python -m model transcribe --json FILES` as anyone would run it; timed by its output lines."""
    lm, lexicon = package_lm(model), package_lexicon(model)
    command = [
        sys.executable,
        "-m",
        "model",
        "transcribe",
        "--model",
        str(package_onnx(model)),
        "--json",
        *(["--lm", str(lm)] if lm else []),
        *(["--lexicon", str(lexicon)] if lexicon else []),
        *map(str, files),
    ]
    if one_core:
        command = ["taskset", "-c", "0", *command]
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    times, durations = [], []
    for line in process.stdout:
        times.append(time.monotonic())
        durations.append(json.loads(line)["duration"])
    assert process.wait() == 0 and len(times) == len(files), "the plain command failed"
    files_rate, audio_rate = steady(times, durations)
    return {
        "files/s": files_rate,
        "audio-s/s": audio_rate,
        "workers": 1,
        "wall": time.monotonic() - started,
        "seconds": sum(durations),
    }


def bulk(files: list[Path], task: TranscribeTask, backend: Backend, started: float) -> dict:
    timing = Timing(len(files))
    summary = run_bulk(Inputs(paths=[str(path) for path in files]), task, backend, progress=timing)
    assert summary.done == len(files) and not summary.errors
    files_rate, audio_rate = steady(timing.times, timing.durations)
    return {
        "files/s": files_rate,
        "audio-s/s": audio_rate,
        "workers": len(summary.by_worker),
        "wall": time.monotonic() - started,
        "by worker": summary.by_worker,
        "seconds": summary.seconds,
    }


def on_cluster(nodes: int, files: list[Path], task: TranscribeTask) -> dict:
    from cluster.ray_pool import RayPool

    with LocalCluster(nodes=nodes, cpus=1, env={"PYTHONPATH": str(REPO)}) as cluster:
        started = time.monotonic()  # from connecting: the cluster's own start is not the command's
        return bulk(files, task, RayPool(cluster.address), started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", choices=("librispeech", "fsdd"), default="librispeech")
    parser.add_argument("--files", type=int, help="the first N files (default: all of librispeech, 600 of fsdd)")
    parser.add_argument("--model", type=Path, default=REPO / "models" / "digits")
    args = parser.parse_args()
    data = REPO.parent / "shared" / "data"
    if args.input == "fsdd":
        files = sorted((data / "fsdd" / "recordings").glob("*.wav"))[: args.files or 600]
    else:
        files = sorted((data / "unlabeled-librispeech").glob("*.flac"))[: args.files]
    if len(files) < (args.files or 2):
        print(f"needs {args.files or 2} {args.input} files in {data}, found {len(files)}", file=sys.stderr)
        return 1
    lm, lexicon = model_decoding(args.model)
    task = TranscribeTask(str(args.model.resolve()), lm and str(lm), lexicon=lexicon)
    rows = {
        "plain command, 1 core": plain_command(files, args.model, one_core=True),
        "plain command, all cores": plain_command(files, args.model, one_core=False),
        "one process, 1 thread (a worker's code, no pool)": bulk(files, task, InProcess(threads=1), time.monotonic()),
        "--workers 2 (local pool)": bulk(files, task, LocalPool(2), time.monotonic()),
        "--ray, 1 node x 1 CPU": on_cluster(1, files, task),
        "--ray, 2 nodes x 1 CPU": on_cluster(2, files, task),
    }
    one_core = rows["plain command, 1 core"]["files/s"]  # a worker's share of the machine
    all_cores = rows["plain command, all cores"]["files/s"]
    one_node = rows["--ray, 1 node x 1 CPU"]["files/s"]
    hours = sum(row["seconds"] for row in rows.values()) / len(rows) / 3600
    print(f"{len(files)} {args.input} files ({hours:.2f} h), {os.cpu_count()} cores\n")
    print(
        "| setup | workers | files/s | audio-s/s | per worker files/s | per worker vs plain command on 1 core "
        "| per worker vs plain command on all cores | vs 1 node | wall s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, row in rows.items():
        per_worker = row["files/s"] / row["workers"]
        print(
            f"| {name} | {row['workers']} | {row['files/s']:.1f} | {row['audio-s/s']:.1f} | {per_worker:.1f} | "
            f"{per_worker / one_core:.2f}x | {per_worker / all_cores:.2f}x | {row['files/s'] / one_node:.2f}x | "
            f"{row['wall']:.1f} |"
        )
    print("\nper worker:", {name: row["by worker"] for name, row in rows.items() if "by worker" in row})
    return 0


if __name__ == "__main__":
    sys.exit(main())
