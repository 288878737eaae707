"""The server's memory around single large requests: resident memory before, at its peak and after.

    python bench/service_memory.py [--model DIR] [--seconds 40 100 330 1000] [--decoder greedy]

A fresh `python -m service` (default: the shipped model) gets one request at a time: real speech
tiled to each length, as a 16 kHz wav. Its resident memory is sampled every 20 ms while the
request runs; the row says what it was before the request, its peak, and what it was 2 s after the
answer. The target: a peak at most 1 GB above idle, and back within 10% of the pre-request RSS.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import soundfile
from server_process import REALSPEECH, ROOT, serving

sys.path.insert(0, str(ROOT))

from model.audio import load_audio  # noqa: E402

SPEECH = (
    REALSPEECH
    / "audio"
    / "pocketsphinx"
    / "test"
    / "data"
    / "librivox"
    / "sense_and_sensibility_01_austen_64kb-0880.wav"
)


def body(seconds: float) -> bytes:
    import numpy as np

    speech = load_audio(SPEECH, 16000)
    samples = np.tile(speech, int(seconds * 16000 // len(speech)) + 1)[: int(seconds * 16000)]
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, 16000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def measure(server, seconds: float, decoder: str) -> dict:
    data = body(seconds)
    time.sleep(1.0)
    before = server.rss_mb()
    peak, done = [before], threading.Event()

    def sample():
        while not done.wait(0.02):
            peak.append(server.rss_mb())

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.perf_counter()
    response = httpx.post(
        f"{server.url}/transcribe",
        params={"decoder": decoder, "word_timestamps": "false"},
        content=data,
        headers={"content-type": "audio/wav"},
        timeout=3600,
    )
    took = time.perf_counter() - started
    done.set()
    sampler.join()
    time.sleep(2.0)
    return {
        "seconds": seconds,
        "status": response.status_code,
        "took": took,
        "before": before,
        "peak": max(peak),
        "after": server.rss_mb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model folder (default: the server's default model)")
    parser.add_argument("--seconds", type=float, nargs="+", default=[40, 100, 330, 1000])
    parser.add_argument("--decoder", default="greedy", choices=["greedy", "beam"])
    parser.add_argument("--server-option", action="append", default=[], help="one more server argument")
    args = parser.parse_args()
    options = (["--model", str(args.model)] if args.model else []) + args.server_option
    log = Path(tempfile.mkdtemp(prefix="memory-")) / "server.log"
    print("| audio | status | time | RSS before | peak | after | peak above idle | after vs before |")
    print("|---|---|---|---|---|---|---|---|")
    with serving(options, log) as server:
        idle = server.rss_mb()
        for seconds in args.seconds:
            row = measure(server, seconds, args.decoder)
            print(
                f"| {seconds:g} s | {row['status']} | {row['took']:.1f} s | {row['before']:.0f} MB | "
                f"{row['peak']:.0f} MB | {row['after']:.0f} MB | {row['peak'] - idle:+.0f} MB | "
                f"{(row['after'] - row['before']) / row['before']:+.1%} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
