"""A throwaway Ray cluster on this machine's loopback, for tests and benchmarks: `nodes` nodes of
`cpus` CPUs each, started with `ray start` (a head, then workers joining it) in a temporary folder of
its own and on free ports of its own, and stopped by process id, so nothing outlives it and another
Ray on the machine is never touched (`ray stop` would stop every Ray of the user).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

START_SECONDS = 180  # a node's start on a loaded two-core machine: a ceiling, not a measurement
STOP_SECONDS = 15  # SIGTERM's grace before SIGKILL
WORKER_PORTS = 50  # ports per node for its worker processes (one each)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process we can read."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        found[int(entry.name)] = (parent, command)
    return found


class LocalCluster:
    """`with LocalCluster(nodes=2, cpus=1) as cluster:` ... `cluster.address` is HOST:PORT of the head.
    `env`: the nodes' environment (their workers inherit it: PYTHONPATH must reach this project)."""

    def __init__(self, nodes: int = 2, cpus: int = 1, env: dict[str, str] | None = None, object_store_mb: int = 100):
        self.nodes, self.cpus, self.object_store_mb = nodes, cpus, object_store_mb
        self.env = {**os.environ, **(env or {}), "RAY_USAGE_STATS_ENABLED": "0"}
        # Short: Ray's unix sockets live below it, and a socket path has at most 107 characters.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
        self.address = f"127.0.0.1:{free_port()}"
        self.ray = str(Path(sys.executable).with_name("ray"))
        self._taken: set[int] = set()  # ports given to the nodes so far

    def __enter__(self) -> LocalCluster:
        try:
            for node in range(self.nodes):
                self._start(head=node == 0)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_) -> None:
        self.stop()

    def _ports(self, count: int) -> tuple[list[int], int]:
        """`count` free ports, and the first of WORKER_PORTS free ones for the node's worker processes,
        none of the others among them (Ray refuses a node whose ports overlap)."""
        while True:
            ports = [free_port() for _ in range(count)]
            low = free_port()
            taken = set(ports) | self._taken | {int(self.address.rsplit(":", 1)[1])}
            if len(set(ports)) == count and not taken & set(range(low, low + WORKER_PORTS + 1)):
                self._taken |= set(ports) | set(range(low, low + WORKER_PORTS + 1))
                return ports, low

    def _start(self, head: bool) -> None:
        names = [
            "--node-manager-port",
            "--object-manager-port",
            "--metrics-export-port",
            "--dashboard-agent-listen-port",
            "--dashboard-agent-grpc-port",
            "--runtime-env-agent-port",
        ]
        numbers, low = self._ports(len(names) + 1)
        ports = [
            *(part for pair in zip(names, numbers) for part in pair),
            "--min-worker-port",
            low,
            "--max-worker-port",
            low + WORKER_PORTS,
        ]
        role = (
            [
                "--head",
                "--port",
                self.address.rsplit(":", 1)[1],
                "--include-dashboard=false",
                "--dashboard-port",
                numbers[-1],
                "--temp-dir",
                str(self.temp_dir),
            ]
            if head
            else ["--address", self.address]
        )
        command = [
            self.ray,
            "start",
            *map(str, role),
            "--node-ip-address",
            "127.0.0.1",
            "--num-cpus",
            str(self.cpus),
            "--num-gpus",
            "0",
            "--object-store-memory",
            str(self.object_store_mb * 2**20),
            "--disable-usage-stats",
            *map(str, ports),
        ]
        done = subprocess.run(command, capture_output=True, text=True, env=self.env, timeout=START_SECONDS)
        if done.returncode != 0:
            raise RuntimeError(f"`ray start` failed ({done.returncode}): {(done.stderr or done.stdout)[-2000:]}")

    def pids(self) -> list[int]:
        """This cluster's processes: those naming its folder, and their descendants (the workers)."""
        table = _processes()
        ours = {pid for pid, (_, command) in table.items() if str(self.temp_dir) in command}
        grew = True
        while grew:
            children = {pid for pid, (parent, _) in table.items() if parent in ours} - ours
            grew = bool(children)
            ours |= children
        return sorted(ours - {os.getpid()})

    def worker_pids(self, name: str) -> list[int]:
        """The cluster's processes whose title names `name` (Ray titles an actor's process `ray::<Class>`)."""
        table = _processes()
        return [pid for pid in self.pids() if pid in table and f"ray::{name}" in table[pid][1]]

    def stop(self) -> None:
        """Stop every process of the cluster (SIGTERM, then SIGKILL) and remove its folder."""
        pids = self.pids()
        for signal_number in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, signal_number)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + STOP_SECONDS
            while pids and time.monotonic() < deadline:
                time.sleep(0.2)
                pids = [pid for pid in pids if Path(f"/proc/{pid}").exists() and not _zombie(pid)]
            if not pids:
                break
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False
