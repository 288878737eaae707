"""Check an exported graph against the PyTorch model it came from.

Each case is a batch of utterances, given to both recognizers alike; the PyTorch one pads as the
graph does (padding-exact or not). We report the largest logit difference, the share of frames
whose best token agrees, and how many greedy transcripts are identical.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from model.onnx import OnnxRecognizer
from model.pytorch.checkpoint import Checkpoint
from model.pytorch.recognizer import TorchRecognizer

# Utterance lengths (s) checked alone, and one padded batch of mixed lengths.
SINGLE_LENGTHS = (0.5, 1.0, 5.0, 15.0, 30.0)
BATCH_LENGTHS = (15.0, 5.0, 1.0, 0.5)


@dataclass
class CaseResult:
    name: str
    max_abs_diff: float
    frames: int
    frames_agreeing: int
    transcripts: int
    transcripts_equal: int

    @property
    def frame_agreement(self) -> float:
        return self.frames_agreeing / max(self.frames, 1)


@dataclass
class Verification:
    variant: str
    cases: list[CaseResult]

    @property
    def max_abs_diff(self) -> float:
        return max(case.max_abs_diff for case in self.cases)

    @property
    def frame_agreement(self) -> float:
        return sum(case.frames_agreeing for case in self.cases) / max(sum(case.frames for case in self.cases), 1)

    @property
    def transcripts_equal(self) -> tuple[int, int]:
        return sum(case.transcripts_equal for case in self.cases), sum(case.transcripts for case in self.cases)

    def table(self) -> str:
        lines = [f"{'case':<28} {'max |diff|':>10} {'frames agree':>13} {'transcripts equal':>18}"]
        for case in self.cases:
            lines.append(
                f"{case.name:<28} {case.max_abs_diff:>10.2e} {case.frame_agreement:>12.2%} "
                f"{case.transcripts_equal:>12}/{case.transcripts}"
            )
        equal, total = self.transcripts_equal
        lines.append(
            f"{self.variant + ' overall':<28} {self.max_abs_diff:>10.2e} {self.frame_agreement:>12.2%} "
            f"{equal:>12}/{total}"
        )
        return "\n".join(lines)

    def summary(self) -> dict:
        equal, total = self.transcripts_equal
        return {
            "max_abs_diff": self.max_abs_diff,
            "frame_agreement": self.frame_agreement,
            "transcripts_equal": equal,
            "transcripts": total,
            "cases": [asdict(case) for case in self.cases],
        }


def verification_cases(sampling_rate: int, real_audio: list[np.ndarray] = ()) -> list[tuple[str, list[np.ndarray]]]:
    """Seeded noise shaped like speech loudness at each length, plus any real recordings given."""
    generator = np.random.default_rng(0)

    def signal(seconds: float) -> np.ndarray:
        samples = int(seconds * sampling_rate)
        envelope = 0.5 + 0.5 * np.sin(np.linspace(0, seconds * 2 * np.pi * 3, samples))  # ~3 syllables a second
        return (0.1 * envelope * generator.standard_normal(samples)).astype(np.float32)

    cases = [(f"{seconds:g} s, batch 1", [signal(seconds)]) for seconds in SINGLE_LENGTHS]
    cases.append((f"batch {len(BATCH_LENGTHS)} padded", [signal(seconds) for seconds in BATCH_LENGTHS]))
    for index, samples in enumerate(real_audio):
        cases.append((f"audio {index + 1} ({len(samples) / sampling_rate:.1f} s)", [samples]))
    if len(real_audio) > 1:
        cases.append((f"audio batch {len(real_audio)} padded", list(real_audio)))
    return cases


def verify(
    checkpoint: Checkpoint, exported: OnnxRecognizer, variant: str, real_audio: list[np.ndarray] = ()
) -> Verification:
    """Compare on every case. A graph with an attention mask (the layer-norm family's, and the
    group-norm family's padding-exact one) is held to each utterance as if run alone; the
    group-norm family's plain graph to PyTorch run on the same padded batch without a mask."""
    reference = TorchRecognizer.from_checkpoint(checkpoint, padding_exact=exported.padding_exact)
    results = []
    for name, utterances in verification_cases(checkpoint.features.sampling_rate, real_audio):
        result = CaseResult(name, 0.0, 0, 0, 0, 0)
        for expected, actual in zip(reference.logits(utterances), exported.logits(utterances)):
            result.max_abs_diff = max(result.max_abs_diff, float(np.abs(expected - actual).max()))
            result.frames += len(expected)
            result.frames_agreeing += int((expected.argmax(-1) == actual.argmax(-1)).sum())
            result.transcripts += 1
            result.transcripts_equal += checkpoint.vocab.greedy_decode(expected) == exported.vocab.greedy_decode(actual)
        results.append(result)
    return Verification(variant, results)
