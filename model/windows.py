"""Long audio: overlapping windows in, one stitched logit sequence out; and batches of similar lengths.

Each window is a core of `chunk` samples with `context` samples each side. Windows start on
frame boundaries, so a window's frame j is global frame start/hop + j exactly; from each we
keep only its core frames. Decoding then runs once over the stitched logits, so words and
timestamps across window borders come out as if the audio had been one piece. Every caller
(the CLI, evaluation, the server) windows with the same defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import Wav2Vec2Config

CHUNK_SECONDS = 30.0  # audio per window, not counting its context
CONTEXT_SECONDS = 5.0  # context each side of a window's core: seen, not transcribed twice
MAX_PADDING = 0.2  # padded samples per real sample that a batch of similar lengths may carry


@dataclass(frozen=True)
class Window:
    start: int  # first sample
    end: int  # one past the last sample
    keep_from: int  # first kept frame, counted in this window
    keep_to: int  # one past the last kept frame, in this window


def plan_windows(num_samples: int, config: Wav2Vec2Config, chunk_samples: int, context_samples: int) -> list[Window]:
    """The windows of `num_samples` samples: one, when the audio fits in a core and its context."""
    hop = config.samples_per_frame
    chunk = max(chunk_samples // hop, 1) * hop
    context = -(-max(context_samples, config.receptive_field) // hop) * hop  # whole frames, at least one field
    total_frames = config.num_frames(num_samples)
    if num_samples <= chunk + 2 * context:
        return [Window(0, num_samples, 0, total_frames)]
    windows = []
    for core_start in range(0, num_samples, chunk):
        start = max(core_start - context, 0)
        end = min(core_start + chunk + context, num_samples)
        first_frame = core_start // hop
        last_frame = min((core_start + chunk) // hop, total_frames)
        if first_frame >= last_frame:
            break
        offset = start // hop
        windows.append(Window(start, end, first_frame - offset, last_frame - offset))
    return windows


def stitch(windows: list[Window], logits: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([rows[window.keep_from : window.keep_to] for window, rows in zip(windows, logits)])


def length_groups(lengths: list[int], max_padding: float = MAX_PADDING) -> list[list[int]]:
    """Indices grouped by similar length: each group's padded size (count x longest) is at most
    (1 + max_padding) x its real size. Padded samples are computed for nothing, and on a CPU they
    cost as much as real ones."""
    groups: list[list[int]] = []
    for index in sorted(range(len(lengths)), key=lengths.__getitem__):
        group = groups[-1] if groups else None
        if group and (len(group) + 1) * lengths[index] <= (1 + max_padding) * (
            sum(lengths[i] for i in group) + lengths[index]
        ):
            group.append(index)
        else:
            groups.append([index])
    return groups


def plan_batches(lengths: list[int], max_batch_size: int, max_batch_samples: int | None = None) -> list[list[int]]:
    """Indices of pieces (`lengths` in samples) in the runs to infer them in: groups of similar length
    (`length_groups`), each split into runs of at most `max_batch_size` pieces and at most
    `max_batch_samples` padded samples (None: no bound; a longer piece runs alone). Inference
    memory grows with a run's padded samples, so that bound is what bounds a caller's peak."""
    runs: list[list[int]] = []
    for group in length_groups(lengths):
        run: list[int] = []
        for index in group:  # shortest first: a run's padded size is its count times its last piece's length
            too_many = len(run) >= max_batch_size
            too_large = max_batch_samples is not None and (len(run) + 1) * lengths[index] > max_batch_samples
            if run and (too_many or too_large):
                runs.append(run)
                run = []
            run.append(index)
        runs.append(run)
    return runs
