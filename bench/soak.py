"""Soak the real server: N clients for M minutes, with faults, then check the books.

    python bench/soak.py --model DIR [--lm LM] [--minutes 2] [--decoder greedy beam] [--no-faults]

For each decoder, a fresh `python -m service` on loopback serves DIR (an exported ONNX folder)
and `--clients` threads post real recordings back to back. With faults on (the default), one
client uploads slowly (4 KB every 50 ms), one aborts uploads (half the body, or the whole body
then no wait for the answer), and every `--kill-every` seconds a beam-search worker is killed
with SIGKILL and a decompression bomb is posted (a forged FLAC length, refused with 413, then
250 s of 384 kHz silence, decoded and refused with 422). Meanwhile /health is timed every
100 ms. Then it prints one Markdown row per decoder: requests sent, answered 2xx / 4xx / 5xx
(5xx split into the searches a killed worker held and anything else), aborted by the client on
purpose, lost (no answer to a request the client waited for), latency percentiles of the 2xx,
/health's p99 and worst time, the server's RSS after warm-up and at the end, and whether
/metrics counted exactly what was sent.

Websockets run beside the HTTP clients (`--no-streams`: not): two /v1/stream and two /v1/realtime
clients stream recordings 4x faster than real time, one drops its connection mid-stream, one
squats (control messages only, never audio: the server must close it as idle, after 10 s here),
and one floods (5,000 two-byte frames, then JSON nested 50,000 deep: 1007). At the end, four
streams are opened and the server gets SIGTERM while they are open: each must get a "closing"
message, the final of its audio and a 1001 close. A second table says what the websockets saw.

`--source DIR` runs the server from another source tree (e.g. an older commit, extracted with
`git archive`) to compare; such a server gets only --model, --lm, --decode-workers and --port.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import random
import re
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import soundfile
from server_process import REALSPEECH, ROOT, Server
from stream_clients import StreamTally, client, sigterm_during_streams

sys.path.insert(0, str(ROOT))

from model.audio import load_audio  # noqa: E402


def recordings(limit: int = 24) -> list[bytes]:
    """Real speech of 2-12 s as 16 kHz wav bodies."""
    with open(REALSPEECH / "manifest.tsv", newline="") as handle:
        rows = [
            row
            for row in csv.DictReader(handle, delimiter="\t")
            if row["audio"].endswith((".wav", ".mp3")) and 2.0 <= float(row["duration_s"]) <= 12.0
        ]
    bodies = []
    for row in rows[:limit]:
        buffer = io.BytesIO()
        soundfile.write(buffer, load_audio(REALSPEECH / row["audio"], 16000), 16000, format="WAV", subtype="PCM_16")
        bodies.append(buffer.getvalue())
    return bodies


# -- the clients -----------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the clients saw. Shared by the client threads, under `lock`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: int = 0
    statuses: Counter = field(default_factory=Counter)  # HTTP status -> answers
    errors: Counter = field(default_factory=Counter)  # error code -> answers (4xx and 5xx)
    worker_lost: int = 0  # 503s for a search whose worker was killed
    aborted: int = 0  # requests the client gave up on by design
    lost: list = field(default_factory=list)  # requests the client waited for and got no answer to
    latencies: list = field(default_factory=list)  # seconds, 2xx only

    def answer(self, response: httpx.Response, seconds: float | None) -> None:
        with self.lock:
            self.statuses[response.status_code] += 1
            if response.status_code < 300:
                if seconds is not None:
                    self.latencies.append(seconds)
                return
            try:
                error = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                error = {"code": f"not JSON: {response.text[:60]!r}", "message": ""}
            self.errors[error["code"]] += 1
            if error["code"] == "decoder_unavailable" and "worker stopped" in error["message"]:
                self.worker_lost += 1


def transcribe_url(url: str, decoder: str) -> str:
    return f"{url}/transcribe?decoder={decoder}&word_timestamps=false"


def normal_client(url: str, decoder: str, bodies: list[bytes], tally: Tally, stop: float, seed: int) -> None:
    _post_until(url, decoder, bodies, tally, stop, seed, lambda body: body)


def slow_client(url: str, decoder: str, bodies: list[bytes], tally: Tally, stop: float, seed: int) -> None:
    """Uploads 4 KB every 50 ms: slow, but never idle for the body timeout."""

    def trickle(body: bytes):
        for start in range(0, len(body), 4096):
            time.sleep(0.05)
            yield body[start : start + 4096]

    _post_until(url, decoder, bodies, tally, stop, seed, trickle)


def _post_until(url: str, decoder: str, bodies: list[bytes], tally: Tally, stop: float, seed: int, upload) -> None:
    """Posts random bodies back to back until `stop`, each sent as `upload(body)`; tallies every answer."""
    order = random.Random(seed)
    with httpx.Client(timeout=300) as session:
        while time.monotonic() < stop:
            body = order.choice(bodies)
            with tally.lock:
                tally.sent += 1
            started = time.perf_counter()
            try:
                response = session.post(
                    transcribe_url(url, decoder),
                    content=upload(body),
                    headers={"content-type": "audio/wav", "content-length": str(len(body))},
                )
            except httpx.HTTPError as error:
                with tally.lock:
                    tally.lost.append(repr(error))
                continue
            tally.answer(response, time.perf_counter() - started)


def aborting_client(url: str, decoder: str, bodies: list[bytes], tally: Tally, stop: float, seed: int) -> None:
    """Sends half a body and hangs up, or the whole body and hangs up before the answer."""
    order = random.Random(seed)
    host, port = url.removeprefix("http://").split(":")
    path = transcribe_url(url, decoder).removeprefix(url)
    while time.monotonic() < stop:
        body = order.choice(bodies)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: audio/wav\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        sent = body[: len(body) // 2] if order.random() < 0.5 else body
        with socket.create_connection((host, int(port))) as connection:
            connection.sendall(head + sent)
            time.sleep(0.05)
        with tally.lock:
            tally.sent += 1
            tally.aborted += 1
        time.sleep(0.5)


def zeros_flac(seconds: int, rate: int) -> bytes:
    """A small file that decodes to a lot: `seconds` of mono silence."""
    buffer = io.BytesIO()
    with soundfile.SoundFile(buffer, "w", rate, 1, format="FLAC", subtype="PCM_16") as out:
        for _ in range(seconds // 10):
            out.write(np.zeros(rate * 10, dtype=np.int16))
    return buffer.getvalue()


def forged_length(flac: bytes, total_samples: int) -> bytes:
    """The FLAC with its STREAMINFO total-samples field (36 bits in bytes 18-25) set."""
    fields = int.from_bytes(flac[18:26], "big")
    return flac[:18] + ((fields & ~((1 << 36) - 1)) | total_samples).to_bytes(8, "big") + flac[26:]


def faults(server: Server, decoder: str, every: float, stop: float, tally: Tally, kills: list) -> None:
    """Every `every` seconds: kill -9 a beam-search worker, then post two decompression bombs."""
    silence = zeros_flac(250, 384_000)
    bombs = [forged_length(silence, 2**36 - 1), silence]
    while time.monotonic() + every < stop:
        time.sleep(every)
        workers = server.beam_workers()
        if workers:
            os.kill(random.choice(workers), signal.SIGKILL)
            kills.append(time.monotonic())
        for bomb in bombs:
            with tally.lock:
                tally.sent += 1
            try:
                response = httpx.post(
                    transcribe_url(server.url, decoder),
                    content=bomb,
                    timeout=300,
                    headers={"content-type": "audio/flac"},
                )
            except httpx.HTTPError as error:
                with tally.lock:
                    tally.lost.append(repr(error))
                continue
            tally.answer(response, None)  # not a transcription: no latency


def probe_health(url: str, stop: float, latencies: list) -> None:
    with httpx.Client(timeout=60) as session:
        while time.monotonic() < stop:
            started = time.perf_counter()
            session.get(url + "/health")
            latencies.append(time.perf_counter() - started)
            time.sleep(0.1)


# -- one run ---------------------------------------------------------------------------------------------


def served_counts(url: str) -> Counter:
    """/metrics' asr_requests_total for /transcribe, by status label."""
    counts = Counter()
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        match = re.match(r'asr_requests_total\{endpoint="/transcribe",status="(\w+)"\} ([\d.e+]+)', line)
        if match:
            counts[match.group(1)] = int(float(match.group(2)))
    return counts


def soak(args, decoder: str, bodies: list[bytes], logs: Path) -> dict:
    options = ["--model", str(args.model), "--decode-workers", str(args.decode_workers), "--stream-idle-seconds", "10"]
    options += ["--lm", str(args.lm)] if args.lm else []
    server = Server(options + (args.server_option or []), args.source, logs / f"server-{decoder}.log")
    try:
        server.wait_ready()
        tally, kills = Tally(), []
        started = time.monotonic()
        stop = started + args.minutes * 60
        warm_up = min(30.0, args.minutes * 60 / 4)
        kinds = [normal_client] * args.clients
        if args.faults:
            kinds[-2:] = [slow_client, aborting_client]
        threads = [
            threading.Thread(target=kind, args=(server.url, decoder, bodies, tally, stop, seed))
            for seed, kind in enumerate(kinds)
        ]
        health: list[float] = []
        threads.append(threading.Thread(target=probe_health, args=(server.url, stop, health)))
        if args.faults:
            threads.append(threading.Thread(target=faults, args=(server, decoder, args.kill_every, stop, tally, kills)))
        streams = StreamTally()
        if args.streams:
            audio = [soundfile.read(io.BytesIO(body), dtype="float32")[0] for body in bodies]
            url = server.url.replace("http", "ws")
            for kind in ["stream", "stream", "realtime", "realtime", "abort", "squat", "flood"]:
                threads.append(threading.Thread(target=client, args=(kind, url, audio, streams, stop)))
        for thread in threads:
            thread.start()
        time.sleep(warm_up)
        rss_start = server.rss_mb()
        for thread in threads:
            thread.join()
        time.sleep(1.0)  # let the server finish counting the last aborted requests
        rss_end = server.rss_mb()
        served = served_counts(server.url)
        if args.streams:
            sigterm = sigterm_during_streams(server, audio)
            exit_code = sigterm[2]
        else:
            sigterm, exit_code = None, server.stop()
    finally:
        if server.process.poll() is None:
            server.process.kill()
    return {
        "decoder": decoder,
        "tally": tally,
        "kills": len(kills),
        "served": served,
        "rss": (rss_start, rss_end),
        "exit": exit_code,
        "health": health,
        "streams": streams,
        "sigterm": sigterm,
    }


def books_balance(tally: Tally, served: Counter) -> tuple[bool, str]:
    """/metrics must count every request the clients sent: every answer a client saw under its
    status, and each request a client hung up on under whatever the server got to first (an
    answer, or "disconnected")."""
    problems = []
    if sum(served.values()) != tally.sent:
        problems.append(f"{sum(served.values())} counted, {tally.sent} sent")
    for status, count in tally.statuses.items():
        if served[str(status)] < count:
            problems.append(f"{status}: {served[str(status)]} counted, {count} answered")
    hung_up = sum(served.values()) - sum(tally.statuses.values())
    if hung_up != tally.aborted:
        problems.append(f"{hung_up} counted beyond the answers, {tally.aborted} aborted")
    return not problems, "; ".join(problems) or "yes"


def row(result: dict) -> str:
    tally, served = result["tally"], result["served"]
    count = lambda low, high: sum(n for status, n in tally.statuses.items() if low <= status < high)  # noqa: E731
    p50, p95, p99 = (np.percentile(tally.latencies, q) if tally.latencies else float("nan") for q in (50, 95, 99))
    rss_start, rss_end = result["rss"]
    _, balance = books_balance(tally, served)
    other_5xx = count(500, 600) - tally.worker_lost
    health = np.array(result["health"]) * 1000
    return (
        f"| {result['decoder']} | {tally.sent} | {count(200, 300)} | {count(400, 500)} | {count(500, 600)} "
        f"({tally.worker_lost} held by {result['kills']} killed workers, {other_5xx} other) | {tally.aborted} | "
        f"{len(tally.lost)} | {p50:.2f} / {p95:.2f} / {p99:.2f} s | {np.percentile(health, 99):.0f} / "
        f"{health.max():.0f} ms | {rss_start:.0f} → {rss_end:.0f} MB ({(rss_end - rss_start) / rss_start:+.1%}) | "
        f"{balance} | {result['exit']} |"
    )


def stream_row(result: dict) -> str:
    streams, sigterm = result["streams"], result["sigterm"]
    sessions = " / ".join(str(streams.sessions[kind]) for kind in ("stream", "realtime", "abort", "squat", "flood"))
    closes = ", ".join(f"{kind} {code}: {count}" for (kind, code), count in sorted(streams.closes.items()))
    return (
        f"| {result['decoder']} | {sessions} | {streams.finals} | {closes} | {len(streams.lost)} | "
        f"{sigterm[1]} of {sigterm[0]} | {sigterm[2]} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="exported ONNX model folder")
    parser.add_argument("--lm", type=Path, help="KenLM language model for beam search")
    parser.add_argument("--minutes", type=float, default=2.0, help="per decoder")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--decoder", nargs="+", default=["greedy", "beam"], choices=["greedy", "beam"])
    parser.add_argument("--decode-workers", type=int, default=2)
    parser.add_argument("--no-faults", dest="faults", action="store_false", help="no kills, slow or aborted uploads")
    parser.add_argument("--no-streams", dest="streams", action="store_false", help="no websocket clients")
    parser.add_argument("--kill-every", type=float, default=20.0, help="seconds between worker kills and bombs")
    parser.add_argument("--source", type=Path, default=ROOT, help="source tree to run the server from")
    parser.add_argument(
        "--server-option",
        action="append",
        help="one more server argument (repeatable), e.g. --server-option=--max-batch-size=1",
    )
    args = parser.parse_args()
    bodies = recordings()
    logs = Path(tempfile.mkdtemp(prefix="soak-"))
    print(
        f"{len(bodies)} real recordings; {args.clients} clients, {args.minutes:g} min per decoder, "
        f"faults {'on' if args.faults else 'off'}; server logs in {logs}\n"
    )
    print(
        "| decoder | sent | 2xx | 4xx | 5xx | aborted by client | lost | p50 / p95 / p99 (2xx) | "
        "/health p99 / worst | server RSS after warm-up → end | /metrics = sent | exit code |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    results = []
    for decoder in args.decoder:
        result = soak(args, decoder, bodies, logs)
        results.append(result)
        print(row(result), flush=True)
        tally = result["tally"]
        if tally.errors:
            print(f"  errors by code: {dict(tally.errors)}")
        if tally.lost:
            print(f"  lost: {Counter(tally.lost).most_common(3)}")
    if args.streams:
        print(
            "\n| decoder | sessions: stream / realtime / abort / squat / flood | finals with text | closes by code | "
            "lost | SIGTERM: streams with their final and 1001 | exit code |"
        )
        print("|---|---|---|---|---|---|---|")
        for result in results:
            print(stream_row(result))
            if result["streams"].lost:
                print(f"  lost: {Counter(result['streams'].lost).most_common(3)}")


if __name__ == "__main__":
    main()
