"""The training objectives of wav2vec (1.0) and vq-wav2vec: contrastive prediction of future frames.

From each context vector c_t the model predicts, for k = 0 .. prediction_steps - 1, the target
frame `offset + k` ahead (z for wav2vec, the quantized q for vq-wav2vec) with its own linear map
h_k; each prediction is scored by dot product against the true frame and `num_negatives`
distractors drawn from the same utterance (and `cross_sample_negatives` from the whole batch):

- binary cross-entropy (the papers' loss): log sigmoid of the true pair, log sigmoid of minus
  each distractor pair (distractors weighted 1 / num_negatives with `balanced_classes`);
- or `infonce`: cross-entropy of picking the true frame among them.

The loss is per predicted frame (summed over pairs, divided by the number of predictions), plus
vq-wav2vec's quantizer penalty x `penalty_weight`: the Gumbel diversity term (codewords - the
perplexity of the mean softmax) or the k-means codebook and commitment losses. fairseq's wav2vec
criterion reports the same number (its summed loss over its sample size); tests check 1e-4 parity
on the same weights, batch and negatives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from model.pytorch.wav2vec1 import Wav2VecModel


@dataclass
class Wav2VecLoss:
    loss: torch.Tensor  # contrastive + penalty_weight x penalty, per predicted frame
    contrastive: torch.Tensor
    penalty: torch.Tensor  # the quantizer's term (0 for wav2vec), already weighted
    accuracy: float  # fraction of predictions whose true frame outscores every distractor
    code_perplexity: float  # vq-wav2vec: codebook usage over the batch's frames (0 for wav2vec)
    predictions: int  # predicted frames: fairseq's sample size


def sample_negatives(batch: int, frames: int, num: int, cross: int, generator: np.random.Generator) -> torch.Tensor:
    """Distractor indices into the batch's frames flattened (utterance-major), (batch, frames, num + cross):
    for frame t of utterance b, `num` other frames of b and `cross` other frames of any utterance,
    uniformly, never (b, t) itself."""
    if num and frames < 2:
        raise ValueError("negatives from the same utterance need at least 2 frames per utterance")
    own = np.arange(frames)[None, :, None]
    rows = np.arange(batch)[:, None, None]
    parts = []
    if num:
        other = generator.integers(0, frames - 1, size=(batch, frames, num))
        parts.append(rows * frames + other + (other >= own))  # skip over t itself
    if cross:
        other = generator.integers(0, batch * frames - 1, size=(batch, frames, cross))
        parts.append(other + (other >= rows * frames + own))
    return torch.from_numpy(np.concatenate(parts, axis=-1))


def contrastive_loss(
    predictions: torch.Tensor,
    targets: torch.Tensor,
    negatives: torch.Tensor,
    offset: int,
    infonce: bool,
    balanced_classes: bool = False,
) -> tuple[torch.Tensor, int, float]:
    """predictions: (batch, dim, frames, steps), step k predicting frame t + offset + k from c_t;
    targets: (batch, frames, dim); negatives: (batch, frames, distractors) indices into the flattened
    targets, the distractors of each target frame. Returns (loss summed over predictions, number of
    predictions, accuracy)."""
    batch, frames, dim = targets.shape
    distractors = targets.reshape(batch * frames, dim)[negatives]  # (batch, frames, distractors, dim)
    candidates = torch.cat([targets.unsqueeze(2), distractors], dim=2).float()  # true frame first
    total, count, correct = candidates.new_zeros(()), 0, 0.0
    for step in range(predictions.shape[-1]):
        ahead = offset + step
        if ahead >= frames:
            break
        predicted = predictions[:, :, : frames - ahead, step].float()  # (batch, dim, frames - ahead)
        scores = torch.einsum("bdt,btnd->btn", predicted, candidates[:, ahead:])
        scores = scores.reshape(-1, scores.shape[-1])
        if infonce:
            total = total + F.cross_entropy(scores, scores.new_zeros(len(scores), dtype=torch.long), reduction="sum")
        else:
            labels = torch.zeros_like(scores)
            labels[:, 0] = 1.0
            weights = None
            if balanced_classes:
                weights = torch.full_like(scores, 1.0 / (scores.shape[1] - 1))
                weights[:, 0] = 1.0
            total = total + F.binary_cross_entropy_with_logits(scores, labels, weights, reduction="sum")
        count += len(scores)
        with torch.no_grad():
            correct += float((scores[:, 1:].max(dim=1).values < scores[:, 0]).sum()) if scores.shape[1] > 1 else 0.0
    if not count:
        raise ValueError(f"utterances of {frames} frames are too short to predict {offset} frames ahead")
    return total, count, correct / count


class Wav2VecObjective:
    """The model's loss on a batch of equal-length utterances (batch, samples)."""

    def __init__(self, model: Wav2VecModel, penalty_weight: float = 1.0):
        config = model.config
        if config.project_features != "none":
            raise ValueError(
                "training with project_features (targets through the context network) is not "
                "supported; use project_features: none"
            )
        if config.sample_distance is not None:
            raise ValueError("sample_distance is not supported: negatives come from the whole utterance")
        self.model, self.penalty_weight = model, penalty_weight
        self.prediction_dropout = torch.nn.Dropout(config.dropout)

    def __call__(
        self, samples: torch.Tensor, generator: np.random.Generator | None = None, negatives: torch.Tensor | None = None
    ) -> Wav2VecLoss:
        """Negatives are drawn from `generator`, or given: (batch, frames, distractors) flat indices."""
        config = self.model.config
        output = self.model(samples)
        targets = self.model.targets(output)
        batch, frames, _ = targets.shape
        if negatives is None:
            negatives = sample_negatives(
                batch, frames, config.num_negatives, config.cross_sample_negatives, generator or np.random.default_rng()
            )
        self.prediction_dropout.train(self.model.training)
        predictions = self.prediction_dropout(self.model.predictions(output.c))
        total, count, accuracy = contrastive_loss(
            predictions,
            targets,
            negatives.to(targets.device),
            config.prediction_offset,
            config.infonce,
            config.balanced_classes,
        )
        contrastive = total / count
        penalty = contrastive.new_zeros(())
        perplexity = 0.0
        if output.quantized is not None:
            penalty = self.penalty_weight * output.quantized.penalty.float()
            perplexity = float(output.quantized.code_perplexity)
        return Wav2VecLoss(contrastive + penalty, contrastive, penalty, accuracy, perplexity, count)
