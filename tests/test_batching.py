"""Batching without idle waits, and several inference sessions per model: the `Batcher` in process
on the shipped digits model and real connected digit strings, then `python -m service` for real.

A lone request must not wait for company however long --max-wait-ms allows (a client sending one
request after another got half the raw engine's speed when every batch waited); requests that come
together must still share batches; with two sessions both must work, and answer what one would."""

from __future__ import annotations

import asyncio
import csv
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from model.audio import load_audio
from model.cpu import usable_cores
from model.onnx import OnnxRecognizer
from model.package import DEFAULT_MODEL
from service.batching import Arrivals, Batcher
from service.cores import session_layout

from conftest import DATA, infer_all_at_once, metric_in, require_data, run_server

ONNX = DEFAULT_MODEL / "onnx"
LONG_WAIT_MS = 2000  # a bound no lone request may come near


@pytest.fixture(scope="module")
def digit_strings() -> list[tuple[str, np.ndarray]]:
    """(path, 16 kHz samples) of 16 real connected digit strings (AN4, 1-4 s each)."""
    require_data("digits-multi")
    with open(DATA / "digits-multi" / "manifest.tsv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle, delimiter="\t") if row["source"] == "an4"][:16]
    paths = [str(DATA / "digits-multi" / row["audio"]) for row in rows]
    return [(path, load_audio(path, 16000)) for path in paths]


def engine(threads: int = 1) -> OnnxRecognizer:
    return OnnxRecognizer(ONNX, threads=threads, memory_arena=False)


# -- choosing the sessions --------------------------------------------------------------------------


def test_session_layout_shares_the_threads_out():
    assert session_layout("cpu", 0, 0, cores=2).threads == (1, 1)  # the default: a single-thread session a core
    assert session_layout("cpu", 0, 3).threads == (1, 1, 1)  # --threads 3: three of them
    assert session_layout("cpu", 1, 0, cores=2).threads == (2,)  # --sessions 1: one session, every core
    assert session_layout("cpu", 2, 5).threads == (3, 2)
    assert session_layout("cpu", 4, 2).threads == (1, 1, 1, 1)  # at least one thread each
    assert session_layout("cuda", 0, 0, cores=8).threads == (8,)  # one session feeds a GPU
    assert str(session_layout("cpu", 2, 5)) == "2 sessions x 3/2 threads + 1 x 5 threads for lone requests"
    assert str(session_layout("cpu", 0, 0, cores=2, wide=False)) == "2 sessions x 1 thread"
    # A wide session with every thread for lone requests: on cpu, where a session has fewer than all.
    assert session_layout("cpu", 0, 0, cores=2).wide == 2
    assert str(session_layout("cpu", 0, 0, cores=2)) == "2 sessions x 1 thread + 1 x 2 threads for lone requests"
    assert session_layout("cpu", 2, 6).wide == 6
    assert session_layout("cpu", 1, 0, cores=2).wide == 0  # its one session has every core already
    assert session_layout("cpu", 0, 0, cores=1).wide == 0
    assert session_layout("cuda", 0, 0, cores=8).wide == 0
    assert session_layout("cpu", 0, 0, cores=2, wide=False).wide == 0
    assert 1 <= usable_cores() <= len(__import__("os").sched_getaffinity(0))


def test_arrivals_say_whether_requests_keep_coming():
    arrivals = Arrivals()
    assert arrivals.gap(0.0) is None
    arrivals.record(10.0)
    assert arrivals.gap(10.0) is None  # one request is nobody arriving
    for when in (10.002, 10.004, 10.006):
        arrivals.record(when)
    assert arrivals.gap(10.007) == pytest.approx(0.002)
    assert arrivals.gap(10.5) is None  # none for far longer than their gap: they stopped


# -- the batcher, in process --------------------------------------------------------------------------


def test_a_lone_request_runs_at_once_however_long_the_wait_allowed(digit_strings):
    """One request after another, as one client sends them: none waits for company (before, each
    waited the whole --max-wait-ms)."""
    batcher = Batcher(engine(), max_batch_size=8, max_wait_ms=LONG_WAIT_MS, capacity=16)
    batcher.start()

    async def one_after_another():
        answers = []
        for _, samples in digit_strings[:6]:
            started = time.perf_counter()
            (result,) = await batcher.infer([samples])
            answers.append((result, time.perf_counter() - started))
        return answers

    try:
        answers = asyncio.run(one_after_another())
    finally:
        batcher.stop()
    for result, seconds in answers:
        assert result.batch_size == 1
        assert result.queue_ms < LONG_WAIT_MS / 2, f"a lone request waited {result.queue_ms:.0f} ms"
        assert seconds < LONG_WAIT_MS / 2 / 1000
    assert sorted(result.queue_ms for result, _ in answers)[len(answers) // 2] < 100  # typically well under 1 ms


def test_two_sessions_share_one_queue_and_answer_as_one(digit_strings):
    """Requests that come together are batched, both sessions run batches, and every answer equals
    the utterance's logits alone."""
    alone = engine(threads=2)
    sizes: list[tuple[int, int]] = []
    batcher = Batcher(
        [engine(), engine()],
        max_batch_size=2,
        max_wait_ms=LONG_WAIT_MS,
        capacity=64,
        on_batch=lambda size, _, session: sizes.append((size, session)),
    )
    batcher.start()
    utterances = [samples for _, samples in digit_strings] * 2
    results = infer_all_at_once(batcher, utterances)
    assert sum(size for size, _ in sizes) == len(utterances)
    assert max(size for size, _ in sizes) == 2, "requests that came together should share batches"
    assert all(batcher.batches), f"both sessions should run batches: {batcher.batches}"
    assert {session for _, session in sizes} == {0, 1}
    assert min(result.queue_ms for (result,) in results) < LONG_WAIT_MS / 2  # the first ran without waiting
    for samples, (result,) in zip(utterances, results):
        expected = alone.logits([samples])[0]
        assert result.logits.shape == expected.shape
        assert np.abs(result.logits - expected).max() < 1e-4


def test_the_wide_session_runs_what_comes_alone_and_the_others_run_a_crowd(digit_strings):
    """With a wide session, one request after another runs on it (every core for one client), while
    requests that come together run on the single-thread sessions; every answer is the utterance's
    own logits."""
    reference = engine()
    sessions: list[int] = []
    batcher = Batcher(
        [engine(), engine()],
        max_batch_size=2,
        max_wait_ms=0,
        capacity=64,
        on_batch=lambda size, _, session: sessions.append(session),
        wide=engine(threads=2),
    )
    batcher.start()
    utterances = [samples for _, samples in digit_strings]

    async def alone_then_together():
        alone = [(await batcher.infer([samples]))[0] for samples in utterances[:4]]
        together = await asyncio.gather(*(batcher.infer([samples]) for samples in utterances))
        return alone, [result for (result,) in together]

    try:
        alone, together = asyncio.run(alone_then_together())
    finally:
        batcher.stop()
    assert sessions[:4] == [2, 2, 2, 2], "a request that comes alone should run on the wide session"
    assert {0, 1} <= set(sessions[4:]), f"requests that come together should run on both sessions: {sessions}"
    assert batcher.batches[2] < 4 + len(utterances) / 2, "the crowd should mostly run on the single-thread sessions"
    for samples, result in zip(utterances[:4] + utterances, alone + together):
        assert np.abs(result.logits - reference.logits([samples])[0]).max() < 1e-4


def test_a_long_request_keeps_every_session_busy(digit_strings):
    """A request of many chunks enters the queue a batch per session at a time: both sessions run it,
    and the chunks come back in order."""
    sizes: list[int] = []
    batcher = Batcher(
        [engine(), engine()], max_batch_size=2, max_wait_ms=0, capacity=4, on_batch=lambda size, *_: sizes.append(size)
    )
    batcher.start()
    chunks = [samples for _, samples in digit_strings[:12]]
    try:
        results = asyncio.run(batcher.infer(chunks))
    finally:
        batcher.stop()
    assert all(batcher.batches), f"both sessions should run its chunks: {batcher.batches}"
    assert sum(sizes) == len(chunks) == len(results)
    reference = engine()
    for samples, result in zip(chunks, results):
        assert np.abs(result.logits - reference.logits([samples])[0]).max() < 1e-4


# -- the server, for real ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_session_server(tmp_path_factory):
    with run_server(
        None,  # the shipped digits model
        "--sessions",
        "2",
        "--threads",
        "2",
        "--max-batch-size",
        "4",
        "--max-wait-ms",
        str(LONG_WAIT_MS),
        "--model-name",
        "digits",
        log_dir=tmp_path_factory.mktemp("logs"),
    ) as server:
        yield server


def transcribe(server, path: str) -> tuple[dict, float]:
    started = time.perf_counter()
    with open(path, "rb") as handle:
        response = httpx.post(
            server.url + "/transcribe", files={"file": handle}, data={"decoder": "greedy"}, timeout=120
        )
    assert response.status_code == 200, response.text
    return response.json(), time.perf_counter() - started


def wide_batches(server) -> float:
    return metric_in(
        httpx.get(server.url + "/metrics").text, "asr_session_batches_total", model="digits", session="wide"
    )


def test_server_answers_a_lone_request_without_waiting_on_every_core(two_session_server, digit_strings):
    before = wide_batches(two_session_server)
    for path, _ in digit_strings[:4]:
        body, seconds = transcribe(two_session_server, path)
        assert body["timings"]["queue"] < LONG_WAIT_MS / 2
        assert seconds < LONG_WAIT_MS / 2 / 1000, f"a lone request took {seconds:.2f} s"
    assert wide_batches(two_session_server) == before + 4, "a lone request should run on the 2-thread session"
    log = two_session_server.log.read_text()
    assert "model digits ready" in log and "(2 sessions x 1 thread + 1 x 2 threads for lone requests, warmed up)" in log


def test_server_batches_concurrent_requests_on_both_sessions(two_session_server, digit_strings):
    server = two_session_server
    paths = [path for path, _ in digit_strings] * 2
    alone = [transcribe(server, path)[0]["text"] for path in paths[:16]] * 2
    metrics = httpx.get(server.url + "/metrics").text
    before = [metric_in(metrics, "asr_session_batches_total", model="digits", session=str(i)) for i in (0, 1)]
    with ThreadPoolExecutor(len(paths)) as pool:
        together = list(pool.map(lambda path: transcribe(server, path)[0]["text"], paths))
    assert together == alone
    metrics = httpx.get(server.url + "/metrics").text
    after = [metric_in(metrics, "asr_session_batches_total", model="digits", session=str(i)) for i in (0, 1)]
    assert after[0] > before[0] and after[1] > before[1], f"both sessions should serve: {before} -> {after}"
    batches = metric_in(metrics, "asr_batch_size_count", model="digits")
    single = metric_in(metrics, "asr_batch_size_bucket", model="digits", le="1.0")
    assert batches > single, "concurrent requests should share batches"
    assert metric_in(metrics, "asr_queue_depth", model="digits") == 0
    assert httpx.get(server.url + "/ready").json()["status"] == "ready"
