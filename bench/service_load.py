"""Load on the real server with a wav2vec2-base-sized model, on this machine's CPU.

Run by hand (about 15 minutes on 2 cores):  python bench/service_load.py [--seconds-per-level 20]

1. Throughput (audio seconds per second) and p50/p95/p99 latency of POST /transcribe at 1, 4
   and 16 concurrent clients, with batching on (max batch 8) and off (max batch 1), greedy decoding.
2. The raw onnxruntime engine on the same audio, in batches of 8, and the server's best
   throughput as a fraction of it.
3. Streaming: N real-time websocket streams at once (audio sent at the pace it would be
   spoken); the latency of partial results, and the most streams that keep up.
Prints Markdown tables. Random weights, exact wav2vec2-base architecture.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import soundfile
import websockets
from export_speed import build_base_model
from server_process import REALSPEECH, ROOT, serving

sys.path.insert(0, str(ROOT))

from model.audio import load_audio  # noqa: E402
from model.onnx import BATCHED_MODEL_FILE, OnnxRecognizer  # noqa: E402


def utterances() -> list[np.ndarray]:
    with open(REALSPEECH / "manifest.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    audio = []
    for row in rows:
        if row["audio"].endswith((".wav", ".mp3")) and 2.0 <= float(row["duration_s"]) <= 12.0:
            audio.append(load_audio(REALSPEECH / row["audio"], 16000))
    return audio[:24]


def wav_bytes(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, 16000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def percentile(values: list[float], share: float) -> float:
    return float(np.percentile(values, share * 100)) if values else float("nan")


def load_level(url: str, bodies: list[tuple[bytes, float]], clients: int, seconds: float) -> dict:
    """`clients` threads post utterances back to back for `seconds`; latency and throughput."""
    latencies, audio_done, stop = [], [0.0], time.monotonic() + seconds
    lock = threading.Lock()

    def client(offset: int) -> None:
        with httpx.Client(timeout=120) as session:
            index = offset
            while time.monotonic() < stop:
                body, duration = bodies[index % len(bodies)]
                started = time.perf_counter()
                response = session.post(
                    url + "/transcribe?decoder=greedy&word_timestamps=false",
                    content=body,
                    headers={"content-type": "audio/wav"},
                )
                elapsed = time.perf_counter() - started
                if response.status_code == 200:
                    with lock:
                        latencies.append(elapsed)
                        audio_done[0] += duration
                index += clients

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return {
        "throughput": audio_done[0] / wall,
        "p50": percentile(latencies, 0.5),
        "p95": percentile(latencies, 0.95),
        "p99": percentile(latencies, 0.99),
        "requests": len(latencies),
    }


async def one_stream(url: str, samples: np.ndarray, results: list) -> None:
    """Send `samples` in 100 ms messages at real-time pace; time each partial after the audio it covers."""
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    sent_at: list[float] = []
    partial_latencies = []
    async with websockets.connect(url.replace("http", "ws") + "/v1/stream") as socket:
        await socket.send(
            json.dumps(
                {
                    "sample_rate": 16000,
                    "endpointing": False,
                    "interim_results": True,
                    "decoder": "greedy",
                    "word_timestamps": False,
                }
            )
        )

        async def sender():
            start = time.perf_counter()
            for index, begin in enumerate(range(0, len(pcm), 1600)):
                await asyncio.sleep(max(start + index * 0.1 - time.perf_counter(), 0))
                await socket.send(pcm[begin : begin + 1600].tobytes())
                sent_at.append(time.perf_counter())
            await socket.send(json.dumps({"type": "eof"}))
            return time.perf_counter()

        send_task = asyncio.create_task(sender())
        final_at = None
        async for message in socket:
            kind = json.loads(message)["type"]
            now = time.perf_counter()
            if kind == "partial" and sent_at:
                partial_latencies.append(now - sent_at[-1])
            elif kind == "final":
                final_at = now
        eof_at = await send_task
    results.append({"partials": partial_latencies, "final_after_eof": (final_at or eof_at) - eof_at})


async def streams_level(url: str, samples: np.ndarray, count: int) -> dict:
    results: list = []
    await asyncio.gather(*(one_stream(url, samples, results) for _ in range(count)))
    partials = [latency for result in results for latency in result["partials"]]
    return {
        "p50": percentile(partials, 0.5),
        "p95": percentile(partials, 0.95),
        "final": max(result["final_after_eof"] for result in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds-per-level", type=float, default=20.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    build_base_model(work / "hf")
    subprocess.run(
        [sys.executable, "-m", "export", "onnx", "--model", str(work / "hf"), "--out", str(work / "onnx")],
        check=True,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    audio = utterances()
    bodies = [(wav_bytes(samples), len(samples) / 16000) for samples in audio]
    total_audio = sum(duration for _, duration in bodies)
    print(f"{len(audio)} real utterances, {total_audio:.0f} s of audio, 2-12 s each\n")

    engine = OnnxRecognizer(work / "onnx", model_file=BATCHED_MODEL_FILE)
    engine.logits(audio[:8])
    raw_rates = {}
    for label, size in (("one at a time", 1), ("batches of 8, in arrival order", 8)):
        passes = []
        for _ in range(3):  # the best of three passes: the engine's speed with no server around it
            started = time.perf_counter()
            for begin in range(0, len(audio), size):
                engine.logits(audio[begin : begin + size])
            passes.append(total_audio / (time.perf_counter() - started))
        raw_rates[label] = max(passes)
        print(f"raw onnxruntime engine, {label}: {raw_rates[label]:.1f} audio seconds per second")
    raw = max(raw_rates.values())
    del engine
    print(f"reference: the raw engine's best, {raw:.1f} audio seconds per second\n")

    print("| batching | clients | throughput (audio s/s) | of raw engine | p50 latency | p95 | p99 | requests |")
    print("|---|---|---|---|---|---|---|---|")
    best = 0.0
    logs = Path(tempfile.mkdtemp())
    for label, batch in (("on (max 8)", "8"), ("off", "1")):
        with serving(
            ["--model", str(work / "onnx"), "--max-batch-size", batch, "--max-wait-ms", "10"],
            logs / f"server-batch-{batch}.log",
        ) as server:
            for clients in (1, 4, 16):
                result = load_level(server.url, bodies, clients, args.seconds_per_level)
                best = max(best, result["throughput"])
                print(
                    f"| {label} | {clients} | {result['throughput']:.1f} | {result['throughput'] / raw:.0%} | "
                    f"{result['p50']:.2f} s | {result['p95']:.2f} s | {result['p99']:.2f} s | "
                    f"{result['requests']} |",
                    flush=True,
                )
    print(f"\nbest server throughput / raw engine: {best / raw:.0%}\n")

    print("| real-time streams | partial latency p50 | p95 | last final after eof |")
    print("|---|---|---|---|")
    speech = np.concatenate(audio[:3])[: 16000 * 12]
    sustained = 0
    with serving(["--model", str(work / "onnx"), "--max-batch-size", "8"], logs / "server-streams.log") as server:
        for count in (1, 2, 4, 8, 12):
            result = asyncio.run(streams_level(server.url, speech, count))
            print(f"| {count} | {result['p50']:.2f} s | {result['p95']:.2f} s | {result['final']:.2f} s |", flush=True)
            if result["p95"] < 1.0:  # partials keep pace with the audio
                sustained = count
    print(f"\nreal-time streams sustained (partial latency p95 under 1 s): {sustained}")


if __name__ == "__main__":
    main()
