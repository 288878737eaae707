"""The server beside the raw engine and beside the machine's limit, in one run, on this CPU.

    nice -n 10 python bench/cores.py [--seconds 10] [--rounds 3] [--model DIR] [--baseline ../main]

Real connected digit strings (AN4 in ../shared/data/digits-multi, 16 kHz, 1-4 s), greedy, the
shipped digits model by default. Printed side by side, as Markdown:

- raw single session, 1 client: one ONNX Runtime session (onnxruntime's default threads, and one
  thread; the faster is the reference), the utterances one at a time, nothing around it;
- the machine's limit: one process per usable core, each a single-thread session running
  utterances back to back (alone, and in batches of 8 as 16 waiting clients would allow: the
  better counts), summed;
- the server (`python -m service`, on a free loopback port) at 1 client and 16 clients, with each
  set of options asked (`--server`; default: its defaults, one single-thread session per core, and
  `--sessions 1`, one session with every core), and, with `--baseline DIR`, the server of another
  checkout with its defaults (e.g. the code before this change).

Clients are threads with keep-alive connections posting WAV bodies to /transcribe. Each level
runs `--seconds`; every contender takes its turn each round, so a slow spell of a busy machine
falls on all alike; the median of the rounds is shown, with the 1-minute load averages seen at
the levels' ends (other work on the machine).
"""

from __future__ import annotations

import argparse
import csv
import http.client
import io
import multiprocessing
import os
import shlex
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile
from server_process import ROOT, serving

sys.path.insert(0, str(ROOT))

from model.audio import load_audio  # noqa: E402
from model.cpu import usable_cores  # noqa: E402
from model.onnx import OnnxRecognizer  # noqa: E402
from model.package import DEFAULT_MODEL  # noqa: E402

DIGITS = ROOT.parent / "shared" / "data" / "digits-multi"


def digit_strings(count: int = 48) -> list[np.ndarray]:
    with open(DIGITS / "manifest.tsv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle, delimiter="\t") if row["source"] == "an4"][:count]
    return [load_audio(DIGITS / row["audio"], 16000) for row in rows]


def wav_bytes(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, 16000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def raw_level(folder: Path, audio: list[np.ndarray], seconds: float, threads: int) -> dict:
    """One session, one utterance at a time, for `seconds`: audio seconds per second and latency."""
    engine = OnnxRecognizer(folder, threads=threads)  # its arena on: the raw engine at its best
    engine.logits(audio[:1])
    latencies, done, index = [], 0.0, 0
    stop = time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < stop:
        samples = audio[index % len(audio)]
        begin = time.perf_counter()
        engine.logits([samples])
        latencies.append(time.perf_counter() - begin)
        done += len(samples) / 16000
        index += 1
    return {"throughput": done / (time.perf_counter() - started), "p50": statistics.median(latencies)}


def _limit_worker(folder: str, batch: int, seconds: float, ready, go, results, offset: int) -> None:
    audio = digit_strings()
    engine = OnnxRecognizer(folder, threads=1)
    engine.logits(audio[:batch])
    ready.release()
    go.wait()
    done, index = 0.0, offset
    started = time.perf_counter()
    while time.perf_counter() < started + seconds:
        utterances = [audio[(index + i) % len(audio)] for i in range(batch)]
        engine.logits(utterances)
        done += sum(len(samples) for samples in utterances) / 16000
        index += batch
    results.put(done / (time.perf_counter() - started))


def limit_level(folder: Path, seconds: float, processes: int, batch: int) -> dict:
    """`processes` independent single-thread sessions, one process each, running at once."""
    context = multiprocessing.get_context("spawn")
    ready, go, results = context.Semaphore(0), context.Event(), context.Queue()
    workers = [
        context.Process(target=_limit_worker, args=(str(folder), batch, seconds, ready, go, results, 7 * index))
        for index in range(processes)
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        ready.acquire()
    go.set()
    rates = [results.get() for _ in workers]
    for worker in workers:
        worker.join()
    return {"throughput": sum(rates), "p50": float("nan")}


def client_level(url: str, bodies: list[tuple[bytes, float]], clients: int, seconds: float) -> dict:
    """`clients` threads, each posting one utterance after another on its own connection."""
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    done = [0.0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client(offset: int) -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=120)
        index = offset
        while time.perf_counter() < stop:
            body, duration = bodies[index % len(bodies)]
            begin = time.perf_counter()
            connection.request(
                "POST",
                "/transcribe?decoder=greedy&word_timestamps=false",
                body,
                {"content-type": "audio/wav"},
            )
            response = connection.getresponse()
            response.read()
            elapsed = time.perf_counter() - begin
            if response.status == 200:
                with lock:
                    latencies.append(elapsed)
                    done[0] += duration
            index += clients
        connection.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(index * 5,)) for index in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"throughput": done[0] / (time.perf_counter() - started), "p50": statistics.median(latencies)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="each level's length")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each contender once a round")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL / "onnx", help="an exported model folder")
    parser.add_argument(
        "--server",
        action="append",
        help="the options of a server to measure, e.g. '--sessions 1' (repeatable; default: '' (its "
        "defaults) and '--sessions 1')",
    )
    parser.add_argument("--baseline", type=Path, help="another checkout whose server to measure too (its defaults)")
    args = parser.parse_args()
    cores = usable_cores()
    audio = digit_strings()
    bodies = [(wav_bytes(samples), len(samples) / 16000) for samples in audio]
    print(
        f"{len(audio)} AN4 digit strings, {sum(len(s) for s in audio) / 16000:.0f} s of audio; "
        f"{cores} usable cores; model {args.model}\n"
    )
    servers = [
        (f"server {options}".strip() if options else "server, defaults", shlex.split(options), ROOT)
        for options in (args.server if args.server is not None else ["", "--sessions 1"])
    ]
    if args.baseline:
        servers.append((f"server of {args.baseline.name} (its defaults)", [], args.baseline.resolve()))

    rows: dict[str, list[dict]] = {}
    logs = Path(tempfile.mkdtemp())

    def note(label: str, result: dict) -> None:
        result["load"] = os.getloadavg()[0]
        rows.setdefault(label, []).append(result)
        print(f"  {label}: {result['throughput']:.1f} audio s/s, p50 {result['p50'] * 1000:.1f} ms", flush=True)

    for round_ in range(args.rounds):
        print(f"round {round_ + 1} (load average {os.getloadavg()[0]:.1f})", flush=True)
        note("raw single session (default threads), 1 client", raw_level(args.model, audio, args.seconds, 0))
        note("raw single session (1 thread), 1 client", raw_level(args.model, audio, args.seconds, 1))
        limit = max(
            (limit_level(args.model, args.seconds, cores, batch) for batch in (1, 8)), key=lambda r: r["throughput"]
        )
        note(f"machine limit: {cores} single-thread sessions", limit)
        for label, options, source in servers:
            model = ["--model", str(args.model.resolve())]
            with serving([*model, "--model-name", "m", *options], logs / f"{round_}-{len(rows)}.log", source) as server:
                client_level(server.url, bodies, 1, 1.0)  # warm the connection paths
                for clients in (1, 16):
                    note(
                        f"{label}, {clients} client{'s' * (clients > 1)}",
                        client_level(server.url, bodies, clients, args.seconds),
                    )
                rss = server.rss_mb()
            rows[f"{label}, 16 clients"][-1]["rss"] = rss

    def median(label: str, key: str) -> float:
        return statistics.median(result[key] for result in rows[label])

    raw = max(
        median(f"raw single session ({threads}), 1 client", "throughput") for threads in ("default threads", "1 thread")
    )
    limit = median(f"machine limit: {cores} single-thread sessions", "throughput")
    print(f"\nmedian of {args.rounds} rounds, {args.seconds:g} s each; load average at each level's end in brackets\n")
    print("| contender | audio s/s | p50 latency | vs raw session, 1 client | vs machine limit | server RSS |")
    print("|---|---|---|---|---|---|")
    for label, results in rows.items():
        loads = "-".join(f"{value:.1f}" for value in sorted({round(r["load"], 1) for r in results}))
        throughput = median(label, "throughput")
        p50 = median(label, "p50")
        rss = f"{statistics.median(r['rss'] for r in results):.0f} MB" if "rss" in results[0] else ""
        latency = "" if np.isnan(p50) else f"{p50 * 1000:.1f} ms"
        print(
            f"| {label} (load {loads}) | {throughput:.1f} | {latency} | {throughput / raw:.2f} | "
            f"{throughput / limit:.2f} | {rss} |"
        )


if __name__ == "__main__":
    main()
