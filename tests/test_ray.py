"""`--ray`: bulk transcription on a real Ray cluster of two nodes on loopback (one CPU each), started
and stopped by these tests in a folder and on ports of their own. The cluster's output equals the
single-process command's, both nodes work, a worker killed mid-run costs nothing, and a rerun after an
interrupted run finishes without repeating work. Ray is an optional extra: the server never gets it."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys

import pytest
from digit_strings import read_lines
from test_bulk import (
    ENV,
    folder,  # noqa: F401 - a fixture, imported so that pytest finds it
    labelled_manifest,
    pseudo_label,
    start,
    strings,  # noqa: F401 - a fixture, imported so that pytest finds it
    transcribe,
    wait_for_lines,
)

from conftest import REPO

needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="needs Ray: pip install '.[ray]' (the dev extra has it)"
)


@pytest.fixture(scope="module")
def cluster():
    from cluster.local import LocalCluster

    with LocalCluster(nodes=2, cpus=1, env={"PYTHONPATH": ENV["PYTHONPATH"]}) as started:
        yield started
    assert not [pid for pid in started.pids() if os.path.exists(f"/proc/{pid}")], "the cluster left processes"


@pytest.fixture(scope="module")
def single_process(folder, strings, tmp_path_factory) -> dict[str, str]:
    """The texts of the same command without --ray: one process."""
    out = tmp_path_factory.mktemp("single") / "out.jsonl"
    result = transcribe("--out", str(out), str(folder))
    assert result.returncode == 0, result.stderr[-2000:]
    return {line["audio"]: line["text"] for line in read_lines(out)}


def check_complete(out, single_process: dict[str, str]) -> None:
    lines = read_lines(out)
    assert sorted(line["audio"] for line in lines) == sorted(single_process), "every input exactly once"
    assert {line["audio"]: line["text"] for line in lines} == single_process
    assert not any("error" in line for line in lines)


@needs_ray
def test_the_cluster_gives_the_single_process_text_and_both_nodes_work(cluster, folder, single_process, tmp_path):
    out = tmp_path / "out.jsonl"
    result = transcribe("--ray", cluster.address, "--out", str(out), str(folder))
    assert result.returncode == 0, result.stderr[-3000:]
    check_complete(out, single_process)
    assert "2 Ray worker(s) x 1 thread(s) on a cluster of 2 node(s), 2 CPU(s)" in result.stderr
    per_worker = result.stderr.split("per worker: ", 1)[1].splitlines()[0].split(", ")
    assert len(per_worker) == 2 and all(int(part.rsplit(" ", 1)[1]) > 0 for part in per_worker), per_worker


@needs_ray
def test_a_worker_killed_mid_run_costs_nothing(cluster, folder, single_process, tmp_path):
    out = tmp_path / "out.jsonl"
    process = start("--ray", cluster.address, "--out", str(out), str(folder))
    wait_for_lines(out, process, 1)
    assert len(cluster.worker_pids("BulkWorker")) == 2, "one worker per node"
    # A worker in the middle of an input: Ray titles its process ray::BulkWorker.run while it runs one.
    busy = []
    while not busy and process.poll() is None:
        busy = cluster.worker_pids("BulkWorker.run")
    assert busy and out.read_text().count("\n") < len(single_process), "killed mid-run"
    os.kill(busy[0], signal.SIGKILL)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    check_complete(out, single_process)
    assert "1 worker(s) lost and replaced" in stderr


@needs_ray
def test_a_rerun_after_an_interrupted_run_does_not_repeat_work(cluster, folder, single_process, tmp_path):
    out = tmp_path / "out.jsonl"
    args = ("--ray", cluster.address, "--out", str(out), str(folder))
    process = start(*args)
    wait_for_lines(out, process, 2)
    os.killpg(process.pid, signal.SIGKILL)  # the driver dies: Ray ends its workers with it
    process.communicate()
    before = out.read_text().count("\n")
    assert 2 <= before < len(single_process), "interrupted mid-way"
    rerun = transcribe(*args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    check_complete(out, single_process)
    assert f"{len(single_process) - before} transcribed (0 errors), {before} already done" in rerun.stderr


@needs_ray
def test_pseudo_labels_on_the_cluster_equal_the_local_ones(cluster, folder, strings, tmp_path):
    manifest = labelled_manifest(strings, folder)
    local = pseudo_label("--manifest", str(manifest), "--out", str(tmp_path / "local.jsonl"))
    assert local.returncode == 0, local.stderr[-2000:]
    remote = pseudo_label("--manifest", str(manifest), "--out", str(tmp_path / "ray.jsonl"), "--ray", cluster.address)
    assert remote.returncode == 0, remote.stderr[-3000:]
    rows = {row["audio"]: row for row in read_lines(tmp_path / "local.scores.jsonl")}
    on_cluster = {row["audio"]: row for row in read_lines(tmp_path / "ray.scores.jsonl")}
    assert sorted(on_cluster) == sorted(rows) and len(rows) == len(strings)
    for audio, row in rows.items():
        assert on_cluster[audio]["text"] == row["text"]
        assert on_cluster[audio]["posterior"] == pytest.approx(row["posterior"], abs=1e-4)
    assert (tmp_path / "ray.jsonl").read_text() == (tmp_path / "local.jsonl").read_text()


def test_the_server_image_and_the_core_have_no_ray():
    """The server's requirements (what its image installs) leave Ray out; the import contract keeps
    the core and the server from importing it (checked by lint-imports in `make test`)."""
    serve = subprocess.run(
        [sys.executable, "docker/requirements.py", "serve", "--pyproject", "pyproject.toml"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    ).stdout.split()
    assert serve and not any(line.split("==")[0].lower() == "ray" for line in serve)
    contracts = (REPO / "pyproject.toml").read_text()
    assert 'forbidden_modules = ["ray", "cluster"]' in contracts
