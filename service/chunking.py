"""Long audio: overlapping windows in, one stitched logit sequence out.

Each window is a core of `chunk` samples with `context` samples each side. Windows start on
frame boundaries, so a window's frame j is global frame start/hop + j exactly; from each we
keep only its core frames. Decoding then runs once over the stitched logits, so words and
timestamps across window borders come out as if the audio had been one piece.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.config import Wav2Vec2Config


@dataclass(frozen=True)
class Window:
    start: int  # first sample
    end: int  # one past the last sample
    keep_from: int  # first kept frame, counted in this window
    keep_to: int  # one past the last kept frame, in this window


def plan_windows(num_samples: int, config: Wav2Vec2Config, chunk_samples: int, context_samples: int) -> list[Window]:
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
    return np.concatenate([rows[window.keep_from:window.keep_to] for window, rows in zip(windows, logits)])
