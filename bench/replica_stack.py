"""docker-compose.yml's `replicas` profile brought up for real: N server replicas behind the balancer
(docker/balancer), a load of concurrent clients through the balancer's port, and what happened to
each request. Shared by bench/replicas.py and tests/test_replicas.py.

    with ReplicaStack("w2v-asr-bench", replicas=3, threads=1) as stack:
        stack.up()                       # built (cached layers) and started; waits for every replica
        outcomes = Load(stack.url, clients=16, audio=[...]).run(seconds=20)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
REPLICA, BALANCER = "asr-replica", "balancer"


def compose_command() -> list[str] | None:
    """`docker compose` (v2) where it is installed, else `docker-compose` (v1), else None."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


def docker_problem() -> str | None:
    """Why the replicas cannot run here (one line), or None when a Docker engine answers and compose is installed."""
    if shutil.which("docker") is None:
        return "needs Docker (no `docker` command; ../shared/tools/docker-local.sh installs one)"
    info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    if info.returncode != 0:
        return "needs a running Docker engine (`docker info` failed; ../shared/tools/docker-local.sh starts one)"
    if compose_command() is None:
        return "needs docker compose (v2) or docker-compose (v1)"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ReplicaStack:
    """The compose project `project` with the `replicas` profile: `replicas` servers (each with
    `threads` onnxruntime threads) behind the balancer on a free loopback port; torn down on exit."""

    def __init__(self, project: str, replicas: int, threads: int = 1):
        self.project, self.replicas_wanted = project, replicas
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.models = tempfile.mkdtemp(prefix="w2v-asr-replicas-")  # nothing in it: the image's default model
        self.env = {
            **os.environ,
            "COMPOSE_PROJECT_NAME": project,
            "ASR_REPLICAS": str(replicas),
            "ASR_THREADS": str(threads),
            "ASR_BALANCER_PORT": str(self.port),
            "ASR_MODELS_DIR": self.models,
        }
        self.compose = compose_command()

    def run(self, *args: str, timeout: float = 1800) -> str:
        done = subprocess.run(
            [*self.compose, "--profile", "replicas", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {done.stderr[-3000:]}")
        return done.stdout

    def build(self) -> float:
        """Build the server and balancer images (seconds it took: a few when Docker has the layers)."""
        started = time.perf_counter()
        self.run("build", REPLICA, BALANCER)
        return time.perf_counter() - started

    def up(self, replicas: int | None = None, timeout: float = 600) -> float:
        """Start (or rescale to) `replicas` replicas and the balancer; return the seconds until the
        balancer had sent a request to each of them (every one loaded, warmed up and checked ready)."""
        count = replicas or self.replicas_wanted
        started = time.perf_counter()
        self.run("up", "-d", "--scale", f"{REPLICA}={count}", BALANCER)
        deadline = started + timeout
        while True:
            addresses = set(self.addresses())
            seen: set[str] = set()
            if len(addresses) == count:
                for _ in range(4 * count):
                    try:
                        answer = httpx.get(self.url + "/ready", timeout=5)
                    except httpx.TransportError:
                        break
                    if answer.status_code == 200:
                        seen.add(answer.headers.get("x-asr-replica", ""))
                if seen == addresses:
                    return time.perf_counter() - started
            if time.perf_counter() > deadline:
                raise RuntimeError(
                    f"not every replica became ready through the balancer in {timeout:.0f} s "
                    f"(replicas {sorted(addresses)}, answered {sorted(seen)}):\n" + self.logs()[-4000:]
                )
            time.sleep(1)

    def containers(self, service: str = REPLICA, running: bool = True) -> list[str]:
        args = [
            "docker",
            "ps",
            "-q",
            "--filter",
            f"label=com.docker.compose.project={self.project}",
            "--filter",
            f"label=com.docker.compose.service={service}",
        ]
        if not running:
            args.append("-a")
        return subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()

    def inspect(self, container: str) -> dict:
        done = subprocess.run(["docker", "inspect", container], capture_output=True, text=True, check=True)
        return json.loads(done.stdout)[0]

    def address(self, container: str) -> str:
        """The replica's address as the balancer names it (X-ASR-Replica): IP:8000."""
        networks = self.inspect(container)["NetworkSettings"]["Networks"]
        (ip,) = [network["IPAddress"] for network in networks.values()]
        return f"{ip}:8000"

    def addresses(self) -> dict[str, str]:
        """Each running replica's address, to its container id."""
        return {self.address(container): container for container in self.containers()}

    def kill(self, container: str) -> None:
        """SIGKILL: the replica vanishes with its requests in flight."""
        subprocess.run(["docker", "kill", container], capture_output=True, check=True)

    def stop(self, container: str, timeout: int = 40) -> int:
        """SIGTERM, as a rolling update or a scale-down does; waits until it exits; its exit code."""
        subprocess.run(["docker", "stop", "-t", str(timeout), container], capture_output=True, check=True)
        return int(self.inspect(container)["State"]["ExitCode"])

    def memory_bytes(self) -> dict[str, int]:
        """Each running replica's memory use now (its cgroup's, as `docker stats` reports it)."""
        units = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
        done = subprocess.run(
            ["docker", "stats", "--no-stream", "--format", "{{.ID}} {{.MemUsage}}", *self.containers()],
            capture_output=True,
            text=True,
            check=True,
        )
        usage = {}
        for line in done.stdout.splitlines():
            container, amount = line.split()[0], line.split()[1]
            number = amount.rstrip("KMGiB")
            usage[container] = int(float(number) * units[amount[len(number) :]])
        return usage

    def logs(self, service: str | None = None) -> str:
        return self.run("logs", "--no-color", *([service] if service else []), timeout=120)

    def balancer_retries(self) -> int:
        """Requests the balancer sent again (in its log: the last of the connection counts
        actconn/feconn/beconn/srv_conn/retries, `+N` when sent to another replica)."""
        counts = re.findall(r" \d+/\d+/\d+/\d+/\+?(\d+) \d+/\d+ \"", self.logs(BALANCER))
        return sum(int(retries) for retries in counts)

    def down(self) -> None:
        self.run("down", "--volumes", "--remove-orphans", "--timeout", "5", timeout=300)
        shutil.rmtree(self.models, ignore_errors=True)

    def __enter__(self) -> ReplicaStack:
        return self

    def __exit__(self, *_) -> None:
        self.down()


@dataclass
class Outcome:
    """One request through the balancer: when it was sent and answered (time.perf_counter()), its
    status (0: no HTTP answer, with `error` saying why), the replica that answered, the text."""

    started: float
    ended: float
    decoder: str
    audio: str
    status: int = 0
    replica: str = ""
    text: str = ""
    error: str = ""


@dataclass
class Load:
    """`clients` threads, each on its own keep-alive connection, sending POST /transcribe one after
    the other with the audio files in turn, alternating the decoders (client i starts with decoder i)."""

    url: str
    clients: int
    audio: list[Path]
    decoders: tuple[str, ...] = ("greedy", "beam")
    outcomes: list[Outcome] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def client(self, index: int) -> None:
        bodies = [(path.name, path.read_bytes()) for path in self.audio]
        with httpx.Client(base_url=self.url, timeout=120) as http:
            turn = index
            while not self.stopping.is_set():
                name, body = bodies[turn % len(bodies)]
                decoder = self.decoders[turn % len(self.decoders)]
                turn += 1
                outcome = Outcome(time.perf_counter(), 0.0, decoder, name)
                try:
                    answer = http.post("/transcribe", files={"file": (name, body)}, data={"decoder": decoder})
                    outcome.status, outcome.replica = answer.status_code, answer.headers.get("x-asr-replica", "")
                    if answer.status_code == 200:
                        outcome.text = answer.json()["text"]
                    else:
                        outcome.error = answer.text[:300]
                except httpx.HTTPError as error:
                    outcome.error = f"{type(error).__name__}: {error}"
                outcome.ended = time.perf_counter()
                self.outcomes.append(outcome)

    def start(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self.client, args=(index,), daemon=True) for index in range(self.clients)]
        for thread in threads:
            thread.start()
        return threads

    def run(self, seconds: float) -> list[Outcome]:
        threads = self.start()
        time.sleep(seconds)
        self.stopping.set()
        for thread in threads:
            thread.join()
        return self.outcomes
