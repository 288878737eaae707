"""Length-bucketed batches bounded by total audio, reproducible and resumable.

Utterances of similar length go together (little padding); a batch holds as many as fit in
`max_batch_seconds` counting padding (size x longest), and at most `max_utterances` (0: no limit).
Each epoch shuffles within lengths and the order of batches, from the seed and the epoch number
alone, so a resumed run replays the same batches from the same position.

Sorting the whole corpus by length makes batches of look-alike utterances (on a small corpus, often one
speaker). `length_pool` is the middle way: draw utterances at random, sort each pool of that many by
length, and cut the pool into batches; a batch then mixes speakers like a random one but pads little.
"""

from __future__ import annotations

import numpy as np


def make_batches(
    durations: list[float],
    max_batch_seconds: float,
    seed: int,
    epoch: int,
    max_utterances: int = 0,
    by_length: bool = True,
    length_pool: int = 0,
) -> list[list[int]]:
    """One epoch's batches of utterance indices.

    `by_length` False draws batches at random (more padding), or, with `length_pool` > 0, from pools of
    that many random utterances sorted by length.
    """
    generator = np.random.default_rng([seed, epoch])
    if by_length:
        # Sort by length, with ties (and near-ties) broken at random so batches differ between epochs.
        order = np.lexsort((generator.random(len(durations)), np.round(np.asarray(durations), 1)))
        pools = [order]
    else:
        order = generator.permutation(len(durations))
        pools = [order]
        if length_pool > 0:
            lengths = np.asarray(durations)
            pools = [order[start : start + length_pool] for start in range(0, len(order), length_pool)]
            pools = [pool[np.argsort(lengths[pool], kind="stable")] for pool in pools]
    batches = []
    for pool in pools:
        batches += _cut(pool, durations, max_batch_seconds, max_utterances)
    return [batches[i] for i in generator.permutation(len(batches))]


def _cut(order, durations: list[float], max_batch_seconds: float, max_utterances: int) -> list[list[int]]:
    """Consecutive runs of `order` as batches within the limits."""
    batches, current, longest = [], [], 0.0
    for index in order:
        duration = durations[index]
        full = (len(current) + 1) * max(longest, duration) > max_batch_seconds or len(current) == max_utterances
        if current and full:
            batches.append(current)
            current, longest = [], 0.0
        current.append(int(index))
        longest = max(longest, duration)
    if current:
        batches.append(current)
    return batches


class BatchStream:
    """Endless batches, epoch after epoch; `state()` / `restore()` give the position for resuming."""

    def __init__(
        self,
        durations: list[float],
        max_batch_seconds: float,
        seed: int,
        rank: int = 0,
        world: int = 1,
        max_utterances: int = 0,
        by_length: bool = True,
        length_pool: int = 0,
    ):
        self.durations, self.max_batch_seconds, self.seed = durations, max_batch_seconds, seed
        self.max_utterances, self.by_length, self.length_pool = max_utterances, by_length, length_pool
        self.rank, self.world = rank, world
        self.epoch, self.position = 0, 0
        self._batches = self._epoch_batches()

    def _epoch_batches(self) -> list[list[int]]:
        batches = make_batches(
            self.durations,
            self.max_batch_seconds,
            self.seed,
            self.epoch,
            self.max_utterances,
            self.by_length,
            self.length_pool,
        )
        usable = len(batches) - len(batches) % self.world  # every process gets as many batches
        if usable == 0:
            raise ValueError("fewer batches per epoch than processes: use more data or smaller batches")
        return batches[self.rank : usable : self.world]

    def __iter__(self):
        return self

    def __next__(self) -> list[int]:
        if self.position >= len(self._batches):
            self.epoch, self.position = self.epoch + 1, 0
            self._batches = self._epoch_batches()
        batch = self._batches[self.position]
        self.position += 1
        return batch

    def state(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def restore(self, state: dict) -> None:
        self.epoch, self.position = state["epoch"], state["position"]
        self._batches = self._epoch_batches()
