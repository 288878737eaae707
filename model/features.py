"""`python -m model features`: any model's representations of audio files, as `.npy` files.

    python -m model features --model M [--layer L] --out DIR [--units] AUDIO [AUDIO ...]

writes `DIR/<audio stem>.npy`, time-major: `(frames, dims)` float32, or `(frames, groups)` int64
for `--layer codes`. With `--units` (codes only) it also writes `DIR/units.txt`, one line per
audio file in the order given (empty for a file that could not be read), each frame's codes as a
token `g0-g1` (fairseq's `vq-wav2vec_featurize` text form). Long files run in windows, as transcription's,
and are stitched.

The Python API: `FeatureExtractor(load_representations(model), layer)(samples)`.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from .audio import AudioError, check_duration, load_audio
from .hub import ModelNotFoundError
from .transcribe import Windowing
from .windows import plan_windows, stitch

UNITS_FILE = "units.txt"


@dataclass(frozen=True)
class FeatureOptions:
    """What `features` extracts: the layer (None: the model's default), and how long audio is windowed."""

    layer: str | None = None
    windowing: Windowing = Windowing()
    units: bool = False  # also write the codes as text (layer "codes" only)


class FeatureExtractor:
    """One layer of a loaded model (`model.pytorch.representations.Representations`) over whole
    utterances of any length: windows of `windowing`, stitched frame-exactly.

    The convolutional models normalise over their whole input (group norms over all frames), so a
    long file's features differ slightly from one pass over it; files up to chunk + 2 x context
    seconds (40 s by default) run in one pass, exactly as the reference runs them."""

    def __init__(self, representations, layer: str | None = None, windowing: Windowing = Windowing()):
        self.representations = representations
        self.layer = representations.check_layer(layer or representations.default_layer)
        self.windowing = windowing

    @property
    def sampling_rate(self) -> int:
        return self.representations.sampling_rate

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """Samples at `sampling_rate` (at least one frame's worth) -> (frames, dims) or (frames, groups)."""
        config = self.representations.config
        check_duration(samples, config.receptive_field, self.sampling_rate)
        windows = plan_windows(
            len(samples),
            config,
            int(self.windowing.chunk_seconds * self.sampling_rate),
            int(self.windowing.context_seconds * self.sampling_rate),
        )
        return stitch(windows, [self.representations(samples[w.start : w.end], self.layer) for w in windows])

    def extract_file(self, path: str | Path) -> np.ndarray:
        return self(load_audio(path, self.sampling_rate))


def units_line(codes: np.ndarray) -> str:
    """(frames, groups) codes -> fairseq's text form: one `g0-g1-...` token per frame."""
    return " ".join("-".join(str(int(code)) for code in frame) for frame in codes)


class Progress:
    """A one-line progress bar on a terminal: files done, audio seconds, elapsed and remaining time."""

    def __init__(self, total: int, stream: TextIO = sys.stderr, enabled: bool | None = None):
        self.total, self.stream, self.done, self.seconds = total, stream, 0, 0.0
        self.enabled = stream.isatty() if enabled is None else enabled
        self.started = time.perf_counter()

    def update(self, audio_seconds: float) -> None:
        self.done += 1
        self.seconds += audio_seconds
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.started
        left = elapsed / self.done * (self.total - self.done)
        filled = round(20 * self.done / self.total)
        self.stream.write(
            f"\r[{'#' * filled}{'.' * (20 - filled)}] {self.done}/{self.total} files, "
            f"{self.seconds:.1f} s of audio, {elapsed:.0f} s elapsed, ~{left:.0f} s left"
        )
        if self.done == self.total:
            self.stream.write("\n")
        self.stream.flush()


def add_command(commands) -> None:
    """Register `features` on `python -m model`'s subcommands."""
    parser = commands.add_parser("features", help="write each audio file's representations as DIR/<stem>.npy")
    parser.add_argument(
        "--model",
        required=True,
        help="a fairseq wav2vec (1.0) or vq-wav2vec checkpoint (.pt), or any wav2vec 2.0 model "
        "`transcribe` loads with PyTorch (folder, Hub id, fairseq .pt)",
    )
    parser.add_argument(
        "--layer",
        help="wav2vec and vq-wav2vec: z (encoder), c (context, the default), codes "
        "(vq-wav2vec); wav2vec 2.0: N, transformers' hidden_states[N] (0: after "
        "the positional convolution; default the last), or codes (pretraining "
        "checkpoints)",
    )
    parser.add_argument("--out", required=True, help="folder to write <audio stem>.npy into")
    parser.add_argument(
        "--units",
        action="store_true",
        help=f"with --layer codes: also write DIR/{UNITS_FILE}, one line of 'g0-g1' tokens per file",
    )
    parser.add_argument(
        "--chunk-seconds",
        type=float,
        default=Windowing.chunk_seconds,
        help="long audio runs in windows of this many seconds (%(default)s)",
    )
    parser.add_argument(
        "--context-seconds",
        type=float,
        default=Windowing.context_seconds,
        help="context each side of a window (%(default)s)",
    )
    parser.add_argument("audio", nargs="+", help="audio files: wav, flac, ogg, mp3, any sample rate")


def run(args: argparse.Namespace) -> int:
    """`python -m model features`; 0 when every file was written, 1 otherwise."""
    options = FeatureOptions(args.layer, Windowing(args.chunk_seconds, args.context_seconds), args.units)
    if options.units and options.layer != "codes":
        return _fail("--units writes codes as text: give --layer codes with it")
    if options.windowing.chunk_seconds <= 0 or options.windowing.context_seconds < 0:
        return _fail("--chunk-seconds must be positive and --context-seconds not negative")
    stems: dict[str, str] = {}
    for path in args.audio:
        stem = Path(path).stem
        if stem in stems:
            return _fail(f"'{stems[stem]}' and '{path}' would both be written to {stem}.npy; rename one")
        stems[stem] = path
    try:
        from .pytorch.representations import load_representations  # torch loads only when needed

        extractor = FeatureExtractor(load_representations(args.model), options.layer, options.windowing)
    except (ModelNotFoundError, OSError, ValueError, ImportError) as error:
        return _fail(str(error))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    progress = Progress(len(args.audio))
    failed, lines = 0, []
    for path in args.audio:
        try:
            values = extractor.extract_file(path)
        except AudioError as error:
            print(f"\nerror: {error}" if progress.enabled else f"error: {error}", file=sys.stderr)
            failed += 1
            lines.append("")  # the line still stands for its file, so line i is always file i
            progress.update(0.0)
            continue
        np.save(out / f"{Path(path).stem}.npy", values)
        if options.units:
            lines.append(units_line(values))
        progress.update(extractor.representations.config.samples_per_frame * len(values) / extractor.sampling_rate)
    if options.units:
        (out / UNITS_FILE).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return 1 if failed else 0


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1
