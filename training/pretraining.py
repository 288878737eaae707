"""The wav2vec 2.0 self-supervised objective.

Spans of latent frames are masked (each frame starts a span of `span` frames with probability
`prob / span`; paper: 0.65 and 10, which masks about half the frames). For each masked frame the
context network's output must pick the quantized latent of that frame out of `num_negatives`
distractors: the quantized latents of other masked frames of the same utterance (contrastive loss,
cosine similarity over a temperature). A diversity loss pushes the model to use all codewords of
every codebook, and a small penalty keeps the feature encoder's outputs from growing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from model.pytorch.wav2vec2 import Wav2Vec2ForPreTraining


def span_mask(
    frame_lengths: list[int], frames: int, prob: float, span: int, generator: np.random.Generator, min_spans: int = 2
) -> np.ndarray:
    """(batch, frames) bool, True on masked frames. Each utterance gets round(prob * length / span)
    span starts (at least `min_spans`, randomly rounded), distinct and uniformly placed; spans may overlap."""
    mask = np.zeros((len(frame_lengths), frames), dtype=bool)
    for row, length in enumerate(frame_lengths):
        span_here = min(span, max(length - 1, 1))
        starts_possible = length - span_here + 1
        count = max(min_spans, int(prob * length / span_here + generator.random()))
        count = min(count, starts_possible)
        for start in generator.choice(starts_possible, size=count, replace=False):
            mask[row, start : start + span_here] = True
    return mask


def sample_negatives(mask: np.ndarray, count: int, generator: np.random.Generator) -> np.ndarray:
    """(batch, frames, count) frame indices: for each masked frame, other masked frames of the same
    utterance, drawn uniformly (with repeats when there are fewer than `count`). Rows of unmasked
    frames are 0 and unused."""
    negatives = np.zeros((*mask.shape, count), dtype=np.int64)
    for row in range(mask.shape[0]):
        masked = np.flatnonzero(mask[row])
        if len(masked) < 2:
            continue
        # Draw among the other len(masked) - 1 frames: shift draws at or past one's own position by one.
        draws = generator.integers(0, len(masked) - 1, size=(len(masked), count))
        draws += draws >= np.arange(len(masked))[:, None]
        negatives[row, masked] = masked[draws]
    return negatives


def gumbel_temperature(step: int, start: float = 2.0, end: float = 0.5, decay: float = 0.999995) -> float:
    """The paper's schedule: from 2 down to 0.5 by a factor of 0.999995 per update."""
    return max(start * decay**step, end)


def scale_feature_encoder_gradients(model: Wav2Vec2ForPreTraining, factor: float) -> None:
    """Multiply every gradient reaching the convolutional feature encoder by `factor` (paper: 0.1).
    Scaling each parameter's gradient equals scaling the gradient at the encoder's output."""
    if factor != 1.0:
        for parameter in model.wav2vec2.feature_extractor.parameters():
            parameter.register_hook(lambda gradient: gradient * factor)


@dataclass
class PretrainingLosses:
    loss: torch.Tensor  # what is minimised
    contrastive: torch.Tensor  # per masked frame
    diversity: torch.Tensor
    feature_penalty: torch.Tensor
    accuracy: float  # share of masked frames whose true latent scores highest
    perplexity: float  # codebook perplexity (sum over codebooks) on the masked frames
    masked_frames: int


class PretrainingObjective:
    def __init__(
        self,
        model: Wav2Vec2ForPreTraining,
        mask_prob: float = 0.65,
        mask_length: int = 10,
        num_negatives: int = 100,
        temperature: float = 0.1,
        diversity_weight: float = 0.1,
        feature_penalty_weight: float = 10.0,
        forward=None,
        mask_min_spans: int = 2,
    ):
        self.model = model
        self.forward = forward or model  # e.g. the DistributedDataParallel wrapper of `model`
        self.mask_prob, self.mask_length, self.mask_min_spans = mask_prob, mask_length, mask_min_spans
        self.num_negatives, self.temperature = num_negatives, temperature
        self.diversity_weight, self.feature_penalty_weight = diversity_weight, feature_penalty_weight
        self._features: list[torch.Tensor] = []
        # The feature encoder returns (features, lengths); the penalty is on the features.
        model.wav2vec2.feature_extractor.register_forward_hook(lambda _, __, output: self._features.append(output[0]))

    def __call__(
        self, input_values: torch.Tensor, attention_mask: torch.Tensor | None, generator: np.random.Generator
    ) -> PretrainingLosses:
        config = self.model.config
        frames = config.num_frames(input_values.shape[1])
        sample_lengths = (
            attention_mask.sum(-1)
            if attention_mask is not None
            else torch.full((input_values.shape[0],), input_values.shape[1])
        )
        lengths = [config.num_frames(int(n)) for n in sample_lengths]
        mask = span_mask(lengths, frames, self.mask_prob, self.mask_length, generator, self.mask_min_spans)
        negatives = torch.from_numpy(sample_negatives(mask, self.num_negatives, generator))
        mask_tensor = torch.from_numpy(mask).to(input_values.device)

        self._features.clear()
        out = self.forward(input_values, attention_mask, mask_time_indices=mask_tensor)
        features = self._features.pop()
        context, targets = out.projected_states.float(), out.projected_quantized_states.float()

        # Only masked frames are scored: their context, their target, and K distractors each.
        rows, columns = np.nonzero(mask)
        distractors = targets[torch.from_numpy(rows)[:, None], negatives[rows, columns].to(targets.device)]
        true = targets[rows, columns]  # (masked frames, dim)
        candidates = torch.cat([true[:, None], distractors], dim=1)  # (masked frames, K + 1, dim)
        scores = F.cosine_similarity(context[rows, columns][:, None], candidates, dim=-1) / self.temperature
        # A distractor that is the very same codeword as the target cannot be told apart: leave it out.
        same = (distractors == true[:, None]).all(dim=-1)
        scores = torch.cat([scores[:, :1], scores[:, 1:].masked_fill(same, float("-inf"))], dim=1)
        contrastive = F.cross_entropy(scores, torch.zeros(len(scores), dtype=torch.long, device=scores.device))

        codewords = config.num_codevector_groups * config.num_codevectors_per_group
        diversity = (codewords - out.codevector_perplexity) / codewords
        penalty = features.float().pow(2).mean()
        loss = contrastive + self.diversity_weight * diversity + self.feature_penalty_weight * penalty
        accuracy = float((scores.argmax(dim=-1) == 0).float().mean())
        return PretrainingLosses(
            loss,
            contrastive.detach(),
            diversity.detach(),
            penalty.detach(),
            accuracy,
            float(out.codevector_perplexity.detach()),
            int(mask.sum()),
        )
