"""`python -m service` as a child process on a free loopback port, for the benchmarks: started,
waited for until /ready says 200, inspected (its worker processes, its memory), stopped with SIGTERM.

    from server_process import serving
    with serving(["--model", "DIR"], log=Path("server.log")) as server: ...
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
REALSPEECH = ROOT.parent / "shared" / "data" / "realspeech"


class Server:
    """`python -m service` on a free loopback port; SIGTERM on exit."""

    def __init__(self, options: list[str], source: Path, log: Path):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "wb") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service", "--port", str(self.port), *options],
                cwd=source,
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self) -> None:
        """Until /ready answers 200, however long loading takes; SystemExit if the server exits or
        says it could not load its model."""
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"the server exited:\n{self.log.read_text()[-3000:]}")
            try:
                ready = httpx.get(self.url + "/ready", timeout=60)
                if ready.status_code == 200:
                    return
                if "could not be loaded" in ready.json().get("detail", ""):
                    raise SystemExit(f"the server could not load its model:\n{self.log.read_text()[-3000:]}")
            except httpx.TransportError:
                pass
            time.sleep(0.2)

    def children(self) -> list[int]:
        pids = []
        for listing in Path(f"/proc/{self.process.pid}/task").glob("*/children"):
            pids += [int(pid) for pid in listing.read_text().split()]
        return pids

    def beam_workers(self) -> list[int]:
        return [pid for pid in self.children() if b"spawn_main" in _read(f"/proc/{pid}/cmdline")]

    def rss_mb(self, pid: int | None = None) -> float:
        status = _read(f"/proc/{pid or self.process.pid}/status").decode()
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        return int(match.group(1)) / 1024 if match else 0.0

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


@contextlib.contextmanager
def serving(options: list[str], log: Path, source: Path = ROOT):
    """A ready server with these options, stopped on leaving."""
    server = Server(options, source, log)
    try:
        server.wait_ready()
        yield server
    finally:
        if server.process.poll() is None:
            server.stop()


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError:  # the process is gone
        return b""
