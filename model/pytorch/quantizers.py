"""vq-wav2vec's two vector quantizers over encoder frames: Gumbel-softmax and k-means.

Both split a frame into G groups and pick one of V codewords per group; the frame's quantized
vector is the picks concatenated, and its code is the G indices. Shapes are time-major inside:
frames `(batch, frames, channels)` in, `Quantized` out. Parameter names are ours; the fairseq
loader (`wav2vec1_fairseq.py`) maps released checkpoints' names onto them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

# Added inside the log of the perplexity's entropy, as the reference does, so empty codewords count 0.
_LOG_FLOOR = 1e-7


@dataclass
class Quantized:
    vectors: torch.Tensor  # (batch, frames, groups * codeword_dim): what the context network reads
    codes: torch.Tensor  # (batch, frames, groups) int64: the codeword picked in each group
    code_perplexity: torch.Tensor  # scalar: sum over groups of exp(entropy) of the picks' histogram
    # The quantizer's own training term: Gumbel, `codewords - prob_perplexity` (diversity); k-means,
    # the codebook and commitment losses. Zero-size for neither.
    penalty: torch.Tensor
    prob_perplexity: torch.Tensor | None = None  # Gumbel only: perplexity of the mean softmax


def perplexity(distribution: torch.Tensor) -> torch.Tensor:
    """distribution: (groups, codewords), rows summing to 1 -> sum over groups of exp(entropy)."""
    entropy = -(distribution * torch.log(distribution + _LOG_FLOOR)).sum(dim=-1)
    return torch.exp(entropy).sum()


class CodewordLogits(nn.Module):
    """Frame -> one logit per codeword of every group: a linear map, or (depth > 1) an MLP whose
    hidden layers are twice the input wide with the model's activation between them."""

    def __init__(self, dim: int, outputs: int, depth: int, activation: nn.Module):
        super().__init__()
        inner = dim * 2 if depth > 1 else dim
        self.hidden = nn.ModuleList(nn.Linear(dim if i == 0 else inner, inner) for i in range(depth - 1))
        self.activation = activation
        self.output = nn.Linear(inner, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.hidden:
            x = self.activation(layer(x))
        return self.output(x)


class GumbelQuantizer(nn.Module):
    """Codeword choice by logits: argmax at inference; straight-through Gumbel-softmax samples with
    temperature `temperature` (annealed by the trainer) while training."""

    def __init__(
        self,
        dim: int,
        codewords: int,
        groups: int,
        vq_dim: int,
        combine_groups: bool,
        depth: int,
        activation: nn.Module,
    ):
        super().__init__()
        if vq_dim % groups:
            raise ValueError(f"the quantized dimension {vq_dim} must be divisible by the {groups} groups")
        self.codewords, self.groups, self.combine_groups = codewords, groups, combine_groups
        # (1, codebooks x codewords, dim / groups): one codebook per group, or one shared by all.
        self.codebook = nn.Parameter(torch.empty(1, (1 if combine_groups else groups) * codewords, vq_dim // groups))
        nn.init.uniform_(self.codebook)
        self.logits = CodewordLogits(dim, groups * codewords, depth, activation)
        if depth == 1:
            nn.init.normal_(self.logits.output.weight, mean=0.0, std=1.0)
            nn.init.zeros_(self.logits.output.bias)
        self.temperature = 2.0

    def forward(self, frames: torch.Tensor) -> Quantized:
        batch, steps, _ = frames.shape
        logits = self.logits(frames).view(batch * steps, self.groups, self.codewords)
        codes = logits.argmax(dim=-1)  # (batch x frames, groups)
        with torch.no_grad():
            histogram = F.one_hot(codes, self.codewords).float().mean(dim=0)
        prob_perplexity = perplexity(torch.softmax(logits.float(), dim=-1).mean(dim=0))
        if self.training:
            choice = F.gumbel_softmax(logits.float(), tau=self.temperature, hard=True).type_as(logits)
        else:
            choice = F.one_hot(codes, self.codewords).type_as(logits)
        codebook = self.codebook.view(-1, self.codebook.shape[-1])
        if self.combine_groups:
            codebook = codebook.repeat(self.groups, 1)
        codebook = codebook.view(self.groups, self.codewords, -1)
        # (frames, groups, codewords) x (groups, codewords, dim) -> each group's (soft) pick.
        vectors = (choice.unsqueeze(-1) * codebook).sum(dim=-2).reshape(batch, steps, -1)
        return Quantized(
            vectors,
            codes.view(batch, steps, self.groups),
            perplexity(histogram),
            self.groups * self.codewords - prob_perplexity,
            prob_perplexity,
        )


class KmeansProjection(nn.Module):
    """The k-means quantizer's input map: a grouped 1x1 convolution, then a group norm per group.

    x: (batch, channels, frames) -> same shape
    """

    def __init__(self, dim: int, groups: int):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel_size=1, groups=groups, bias=False)
        self.norm = nn.GroupNorm(groups, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class KmeansQuantizer(nn.Module):
    """Nearest codeword (Euclidean) per group of the projected frame. The gradient passes straight
    through to the projection; `gamma` weighs the commitment term of the training penalty."""

    # Frames per distance computation: bounds the (frames, codewords, groups, dim) difference tensor.
    CHUNK = 64

    def __init__(self, dim: int, codewords: int, groups: int, vq_dim: int, combine_groups: bool, gamma: float):
        super().__init__()
        if vq_dim != dim or dim % groups:
            raise ValueError(
                f"the k-means quantizer needs vq_dim equal to the encoder's dimension ({dim}, "
                f"got {vq_dim}) and divisible by the {groups} groups"
            )
        self.codewords, self.groups, self.combine_groups, self.gamma = codewords, groups, combine_groups, gamma
        # (codewords, codebooks, dim / groups), small random values as the reference starts from.
        self.codebook = nn.Parameter(0.01 * torch.randn(codewords, 1 if combine_groups else groups, dim // groups))
        self.projection = KmeansProjection(dim, groups)
        # Training only, never saved: how often each codeword of each codebook was picked since the
        # last `restart_codewords` (codewords, codebooks).
        self.register_buffer("usage", torch.zeros(codewords, self.codebook.shape[1]), persistent=False)

    def forward(self, frames: torch.Tensor) -> Quantized:
        batch, steps, dim = frames.shape
        projected = self.projection(frames.transpose(1, 2)).transpose(1, 2)  # (batch, frames, dim)
        parts = projected.reshape(batch * steps, self.groups, 1, dim // self.groups)
        codebook = self.codebook.expand(self.codewords, self.groups, -1).transpose(0, 1)  # (groups, codewords, d)
        with torch.no_grad():
            # Distances as differences, not the expanded square, so near-ties fall as the reference's do.
            codes = (
                torch.cat([(chunk - codebook).norm(dim=-1).argmin(dim=-1) for chunk in parts.split(self.CHUNK)])
                if len(parts)
                else parts.new_zeros((0, self.groups), dtype=torch.long)
            )
        picked = codebook[torch.arange(self.groups, device=codes.device), codes]  # (frames, groups, d)
        picked = picked.reshape(batch, steps, dim)
        vectors = projected + (picked - projected).detach()  # value: the codewords; gradient: the projection
        histogram = F.one_hot(codes, self.codewords).float().mean(dim=0)
        if self.training:
            with torch.no_grad():
                self.usage += histogram.T if not self.combine_groups else histogram.sum(dim=0).unsqueeze(-1)
        # Codebook loss pulls codewords to frames; commitment (x gamma) pulls frames to their codewords.
        penalty = F.mse_loss(picked.float(), projected.detach().float()) + self.gamma * F.mse_loss(
            projected.float(), picked.detach().float()
        )
        return Quantized(vectors, codes.view(batch, steps, self.groups), perplexity(histogram), penalty)

    @torch.no_grad()
    def restart_codewords(self, frames: torch.Tensor, generator: torch.Generator, everyone: bool = False) -> int:
        """Training only: codewords no frame picked since the last restart (or all, `everyone`) move onto
        projected frames of `frames` (batch, frames, channels) drawn at random, so each starts where
        data is. Without it the codewords start near 0, the first few picked move towards the data and
        from then on are nearest to every frame: the codebook collapses towards one codeword per group.
        Returns how many codewords moved; resets the usage count."""
        batch, steps, dim = frames.shape
        projected = self.projection(frames.transpose(1, 2)).transpose(1, 2)
        parts = projected.reshape(batch * steps, self.groups, dim // self.groups)
        moved = 0
        for book in range(self.codebook.shape[1]):
            dead = torch.arange(self.codewords) if everyone else torch.nonzero(self.usage[:, book] == 0).flatten()
            if len(dead):
                rows = torch.randint(len(parts), (len(dead),), generator=generator)
                # A shared codebook (combine_groups) draws from any group's part, else from its own group.
                group = torch.randint(self.groups, (len(dead),), generator=generator) if self.combine_groups else book
                drawn = parts[rows.to(parts.device), group.to(parts.device) if self.combine_groups else group]
                self.codebook[dead.to(self.codebook.device), book] = drawn.to(self.codebook)
                moved += len(dead)
        self.usage.zero_()
        return moved
