"""Per-client rate limits: transcription requests and seconds of audio a minute, for each API key
(or, on a server without keys, each client address).

Each is a token bucket that holds a minute's allowance and refills continuously, so a client may
burst up to its minute's worth and then goes at the steady rate. Audio is known only once it is
decoded: a request is admitted while the bucket is not empty, and its audio is charged after,
which may take the bucket below zero: the next request then waits until it is refilled. A refusal
is `RateLimited` (429, with `Retry-After`: the whole seconds until a request would be admitted).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from .errors import RateLimited

MAX_CLIENTS = 10_000  # buckets kept; full ones are dropped first (a full bucket is the same as none)


@dataclass
class Bucket:
    level: float  # what may still be spent now (requests or audio seconds); negative: in debt
    updated: float  # time.monotonic() of `level`


class RateLimit:
    """One limit: `per_minute` units for each client. 0 means none (every check passes)."""

    def __init__(self, per_minute: float, unit: str, clock=time.monotonic):
        self.per_minute, self.unit, self.clock = per_minute, unit, clock
        self.buckets: dict[str, Bucket] = {}
        self.lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def _bucket(self, client: str) -> Bucket:
        now = self.clock()
        bucket = self.buckets.get(client)
        if bucket is None:
            if len(self.buckets) >= MAX_CLIENTS:
                self._forget_full(now)
            bucket = self.buckets[client] = Bucket(self.per_minute, now)
        else:
            bucket.level = min(self.per_minute, bucket.level + (now - bucket.updated) * self.per_minute / 60)
            bucket.updated = now
        return bucket

    def _forget_full(self, now: float) -> None:
        rate = self.per_minute / 60
        full = [client for client, b in self.buckets.items() if b.level + (now - b.updated) * rate >= self.per_minute]
        for client in full or list(self.buckets)[: len(self.buckets) // 2]:
            del self.buckets[client]

    def wait_seconds(self, client: str, need: float) -> int:
        """0 if `need` units may be spent now (need 0: if any are left), else the whole seconds until
        they may."""
        if not self.enabled:
            return 0
        with self.lock:
            level = self._bucket(client).level
        if level >= need and level > 0:
            return 0
        return max(1, math.ceil((need - level) * 60 / self.per_minute))

    def spend(self, client: str, amount: float) -> None:
        if self.enabled:
            with self.lock:
                self._bucket(client).level -= amount

    def remaining(self, client: str) -> int:
        with self.lock:
            return max(0, math.floor(self._bucket(client).level))


class RateLimits:
    """A server's limits: requests and audio seconds a minute, by client."""

    def __init__(self, requests_per_minute: float, audio_seconds_per_minute: float, clock=time.monotonic):
        self.requests = RateLimit(requests_per_minute, "requests", clock)
        self.audio = RateLimit(audio_seconds_per_minute, "audio seconds", clock)

    def admit(self, client: str) -> dict[str, str]:
        """Take one request for `client`, or raise RateLimited; the rate-limit headers to answer
        (OpenAI's names: `x-ratelimit-limit-requests`, `x-ratelimit-remaining-requests`)."""
        wait = self.requests.wait_seconds(client, 1)
        if wait:
            raise RateLimited(
                "rate_limit_exceeded",
                f"Rate limit reached: {self.requests.per_minute:g} requests a minute for this key; retry in {wait} s",
                retry_after=wait,
            )
        wait = self.audio.wait_seconds(client, 0)  # admitted while any audio allowance is left
        if wait:
            raise RateLimited(
                "rate_limit_exceeded",
                f"Rate limit reached: {self.audio.per_minute:g} seconds of "
                f"audio a minute for this key; retry in {wait} s",
                retry_after=wait,
            )
        self.requests.spend(client, 1)
        headers = {}
        if self.requests.enabled:
            headers["x-ratelimit-limit-requests"] = f"{self.requests.per_minute:g}"
            headers["x-ratelimit-remaining-requests"] = str(self.requests.remaining(client))
        return headers

    def charge_audio(self, client: str, seconds: float) -> None:
        """Count a transcribed request's audio against `client`'s allowance."""
        self.audio.spend(client, seconds)


def client_of(headers, client_host: str | None, keys_on: bool) -> str:
    """Whom a request's limits are counted for: its bearer token on a server with keys (checked
    against them before this, so a client cannot mint fresh buckets), else its address."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if keys_on and scheme.lower() == "bearer" and token:
        return "key:" + token
    return "address:" + (client_host or "unknown")
