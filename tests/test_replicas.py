"""Three server replicas behind the balancer, for real (docker-compose.yml's `replicas` profile): under
a load of 16 clients, greedy and beam search, one replica is killed (SIGKILL, its requests in flight)
and another stopped (SIGTERM, drained). Every request must be answered 200 with the right text, the
answers must come from every replica, and the balancer's port must keep answering.

Needs a Docker engine (skipped, saying so, where there is none; ../shared/tools/docker-local.sh
starts one here). The images are built if Docker lacks them (about 10 minutes on two cores; seconds
once built); the test itself takes about two minutes."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter

import httpx
import pytest
import websockets.sync.client

from conftest import DATA, REPO

sys.path.insert(0, str(REPO / "bench"))
from replica_stack import Load, ReplicaStack, docker_problem  # noqa: E402

PROBLEM = docker_problem()
pytestmark = pytest.mark.skipif(PROBLEM is not None, reason=PROBLEM or "")

EXAMPLE = REPO / "examples" / "four-one-five-zero-two.wav"
FSDD = DATA / "fsdd" / "recordings"


@pytest.fixture(scope="module")
def stack():
    with ReplicaStack("w2v-asr-replicas-test", replicas=3, threads=1) as stack:
        stack.build()
        stack.up(timeout=600)
        yield stack
    left = stack.containers(running=False) + stack.containers("balancer", running=False)
    assert not left, f"left behind: {left}"


def audio_files() -> list:
    """The repository's example, and a few real recordings when ../shared/data has them."""
    real = sorted(FSDD.glob("*_theo_0.wav"))[:3] if FSDD.is_dir() else []
    return [EXAMPLE, *real]


def expected_texts(url: str, files: list) -> dict[tuple[str, str], str]:
    """Each file's transcript per decoder, one request at a time before any load."""
    texts = {}
    for path in files:
        for decoder in ("greedy", "beam"):
            answer = httpx.post(
                url + "/transcribe",
                files={"file": (path.name, path.read_bytes())},
                data={"decoder": decoder},
                timeout=120,
            )
            assert answer.status_code == 200, answer.text
            texts[path.name, decoder] = answer.json()["text"]
    assert texts[EXAMPLE.name, "beam"] == "four one five zero two"
    return texts


def test_a_stream_passes_through_the_balancer_on_one_replica(stack):
    """A websocket through the balancer: the same final text as an upload, from one replica."""
    import soundfile

    samples, rate = soundfile.read(EXAMPLE, dtype="int16")
    with websockets.sync.client.connect(stack.url.replace("http", "ws") + "/v1/stream") as socket:
        replica = socket.response.headers.get("x-asr-replica")
        socket.send(json.dumps({"sample_rate": rate, "encoding": "pcm_s16le", "endpointing": False}))
        for start in range(0, len(samples), rate // 10):
            socket.send(samples[start : start + rate // 10].tobytes())
        socket.send('{"type": "eof"}')
        finals = [message for message in socket if '"final"' in message]
    assert replica in stack.addresses(), replica  # the upgrade was answered by a replica, through HAProxy
    assert len(finals) == 1 and '"four one five zero two"' in finals[0], finals


def test_no_request_lost_when_one_replica_is_killed_and_another_drained(stack):
    files = audio_files()
    expected = expected_texts(stack.url, files)
    replicas = stack.addresses()
    assert len(replicas) == 3
    load = Load(stack.url, clients=16, audio=files)
    threads = load.start()
    time.sleep(8)  # every client busy, every replica with requests in flight
    served_before = Counter(outcome.replica for outcome in list(load.outcomes))
    killed_address, drained_address, kept_address = sorted(replicas, key=lambda a: -served_before[a])
    killed_at = time.perf_counter()
    stack.kill(replicas[killed_address])
    time.sleep(6)
    drained_at = time.perf_counter()
    exit_code: list[int] = []
    stopper = threading.Thread(target=lambda: exit_code.append(stack.stop(replicas[drained_address])))
    stopper.start()
    stopper.join()
    drained_exit = time.perf_counter()
    time.sleep(6)  # the one replica left carries the whole load
    load.stopping.set()
    for thread in threads:
        thread.join()
    outcomes = load.outcomes
    failed = [outcome for outcome in outcomes if outcome.status != 200]
    in_flight = sum(outcome.started < killed_at < outcome.ended for outcome in outcomes)
    summary = (
        f"{len(outcomes)} requests, {len(failed)} not 200, by replica "
        f"{dict(Counter(outcome.replica for outcome in outcomes))}, {in_flight} in flight at the kill, "
        f"balancer retries {stack.balancer_retries()}, drained replica exit {exit_code}, its drain "
        f"{drained_exit - drained_at:.1f} s"
    )
    print(summary)
    assert not failed, f"{summary}; first: {failed[:3]}"
    wrong = [outcome for outcome in outcomes if outcome.text != expected[outcome.audio, outcome.decoder]]
    assert not wrong, wrong[:3]
    # Spread: every replica answered a share of the load before the kill.
    assert set(served_before) == set(replicas) and min(served_before.values()) >= 3, served_before
    # The kill hit requests in flight (sent before it, answered after it), and the balancer resent them.
    assert in_flight >= 1
    assert stack.balancer_retries() >= 1
    # The drained replica finished what it held and exited cleanly; it answered nothing after it exited.
    assert exit_code == [0], exit_code
    assert all(outcome.ended <= drained_exit for outcome in outcomes if outcome.replica == drained_address)
    # Then the replica left carried the load (the killed one, if Docker restarted it, may share it).
    after = Counter(outcome.replica for outcome in outcomes if outcome.started > drained_exit + 1)
    assert sum(after.values()) >= 16 and kept_address in after and drained_address not in after, after
    # Both decoders ran throughout.
    assert {outcome.decoder for outcome in outcomes} == {"greedy", "beam"}
    assert httpx.get(stack.url + "/ready", timeout=10).status_code == 200
