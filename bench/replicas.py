"""Throughput and latency through the balancer with 1 and with 3 server replicas (docker-compose.yml's
`replicas` profile), and what one replica needs: its warm-up time and its memory.

Run by hand, with a Docker engine (about 5 minutes once the images are built):

    python bench/replicas.py [--clients 16] [--seconds 30] [--replicas 1 3]

Each replica gets cores/replicas onnxruntime threads (at least 1), so every configuration uses the
machine's cores and no more. The load is `--clients` clients sending the shipped example and, when
../shared/data has them, FSDD recordings, alternating greedy and beam search. On one machine, more
replicas add no CPU: expect the throughput flat (replicas add availability, and capacity only when
they run on more machines). Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time

import httpx
from replica_stack import ROOT, Load, Outcome, ReplicaStack, docker_problem, free_port

EXAMPLE = ROOT / "examples" / "four-one-five-zero-two.wav"
FSDD = ROOT.parent / "shared" / "data" / "fsdd" / "recordings"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def audio_seconds(path) -> float:
    import soundfile

    return soundfile.info(str(path)).duration


def summarize(outcomes: list[Outcome], seconds: float, durations: dict[str, float]) -> dict:
    ok = [outcome for outcome in outcomes if outcome.status == 200]
    row = {
        "requests": len(outcomes),
        "not_200": len(outcomes) - len(ok),
        "per_second": len(ok) / seconds,
        "audio_per_second": sum(durations[outcome.audio] for outcome in ok) / seconds,
        "replicas_answering": len({outcome.replica for outcome in ok}),
    }
    for decoder in ("greedy", "beam"):
        latencies = [(outcome.ended - outcome.started) * 1000 for outcome in ok if outcome.decoder == decoder]
        if latencies:
            row[decoder] = tuple(percentile(latencies, share) for share in (0.5, 0.95, 0.99))
    return row


def warmup_seconds(image: str) -> float:
    """One server container, from `docker run` to its /ready answering 200 (polled every 0.1 s):
    the process starting, the model loading and warming up, the beam-search workers starting."""
    port = free_port()
    started = time.perf_counter()
    container = subprocess.run(
        ["docker", "run", "-d", "--rm", "-p", f"127.0.0.1:{port}:8000", image],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        while time.perf_counter() - started < 600:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise SystemExit("the server did not become ready in 10 minutes")
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0, help="load per configuration")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 3])
    args = parser.parse_args()
    problem = docker_problem()
    if problem:
        raise SystemExit(problem)
    files = [EXAMPLE, *(sorted(FSDD.glob("*_theo_0.wav"))[:3] if FSDD.is_dir() else [])]
    durations = {path.name: audio_seconds(path) for path in files}
    cores = os.cpu_count() or 1
    rows, memory = {}, {}
    for count in args.replicas:
        threads = max(1, cores // count)
        with ReplicaStack(f"w2v-asr-bench-{count}", replicas=count, threads=threads) as stack:
            stack.build()
            ready = stack.up()
            Load(stack.url, clients=args.clients, audio=files).run(seconds=3)  # connections and caches warm
            load = Load(stack.url, clients=args.clients, audio=files)
            outcomes = load.run(seconds=args.seconds)
            rows[count] = {**summarize(outcomes, args.seconds, durations), "threads": threads, "ready": ready}
            memory[count] = sorted(stack.memory_bytes().values())
    image = os.environ.get("ASR_IMAGE", "w2v-asr:latest")
    warmup = [warmup_seconds(image) for _ in range(3)]
    size = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Size}}", image], capture_output=True, text=True, check=True
    ).stdout.strip()

    print(
        f"\n{args.clients} clients, {args.seconds:.0f} s each, greedy and beam search alternating; "
        f"{len(files)} audio files; {cores} cores\n"
    )
    print(
        "| replicas | threads each | requests/s | audio s/s | greedy p50 / p95 / p99 ms | beam p50 / p95 / p99 ms "
        "| not 200 | replicas answering | up to ready (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for count, row in rows.items():
        latency = {
            decoder: " / ".join(f"{value:.0f}" for value in row.get(decoder, ())) for decoder in ("greedy", "beam")
        }
        print(
            f"| {count} | {row['threads']} | {row['per_second']:.1f} | {row['audio_per_second']:.1f} | "
            f"{latency['greedy']} | {latency['beam']} | {row['not_200']} | {row['replicas_answering']} | "
            f"{row['ready']:.1f} |"
        )
    print("\n| what one replica needs | measured |\n|---|---|")
    for count, values in memory.items():
        print(
            f"| memory after the load, {count} replica(s) (MiB each) | "
            f"{', '.join(f'{value / 2**20:.0f}' for value in values)} |"
        )
    print(
        f"| warm-up: `docker run` to /ready 200 (s, 3 runs) | {', '.join(f'{value:.1f}' for value in warmup)} "
        f"(median {statistics.median(warmup):.1f}) |"
    )
    print(f"| image {image} | {int(size) / 2**20:.0f} MiB |")


if __name__ == "__main__":
    main()
