"""wav2vec (1.0) and vq-wav2vec in PyTorch: a convolutional encoder over raw samples, an optional
vector quantizer, and a causal convolutional (or GRU) context network.

    samples --encoder--> z --quantizer (vq-wav2vec)--> q --context network--> c

Shapes are channels-first inside the convolutions, `(batch, channels, frames)`, as the
reference's; `Wav2VecOutput` hands them out time-major. Config field names are fairseq's
(`Wav2VecConfig`), so a checkpoint's options read without translation.
"""

from __future__ import annotations

import ast
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .quantizers import GumbelQuantizer, KmeansQuantizer, Quantized

Layers = list[tuple[int, int, int]]  # (channels, kernel, stride) per convolution

_ENCODER = [(512, 10, 5), (512, 8, 4), (512, 4, 2), (512, 4, 2), (512, 4, 2), (512, 1, 1), (512, 1, 1), (512, 1, 1)]
_AGGREGATOR = [(512, k, 1) for k in range(2, 14)]


@dataclass
class Wav2VecConfig:
    """One wav2vec (1.0) or vq-wav2vec architecture (fairseq's `wav2vec` model options and meaning)."""

    conv_feature_layers: Layers = field(default_factory=lambda: list(_ENCODER))
    conv_aggregator_layers: Layers = field(default_factory=lambda: list(_AGGREGATOR))
    aggregator: str = "cnn"  # "cnn" (causal convolutions) or "gru"
    gru_dim: int = 512
    no_conv_bias: bool = False  # context convolutions without bias
    agg_zero_pad: bool = False  # causal padding by zeros instead of repeating the first frame
    skip_connections_feat: bool = False
    skip_connections_agg: bool = True
    residual_scale: float = 0.5  # a skip sum is scaled by sqrt(residual_scale)
    log_compression: bool = True  # encoder output -> log(1 + |z|)
    non_affine_group_norm: bool = False
    activation: str = "relu"  # or "gelu"
    dropout: float = 0.0
    dropout_features: float = 0.0
    dropout_agg: float = 0.0
    # The contrastive task: predict z (or q) 1..prediction_steps frames after `offset` ahead.
    prediction_steps: int = 12
    offset: int | str = "auto"  # "auto": the encoder's receptive field in frames, rounded up
    num_negatives: int = 10
    cross_sample_negatives: int = 0
    sample_distance: int | None = None
    balanced_classes: bool = False
    infonce: bool = False  # cross-entropy over (positive, negatives) instead of binary cross-entropy
    project_features: str = "none"
    # vq-wav2vec: "gumbel" or "kmeans" quantizer of G groups of V codewords.
    vq_type: str = "none"
    vq_vars: int = 320
    vq_groups: int = 2
    vq_dim: int = 0  # 0: the encoder's dimension
    vq_depth: int = 1
    combine_groups: bool = False
    vq_temp: tuple[float, float, float] = (2.0, 0.5, 0.999995)  # Gumbel temperature: start, end, decay per update
    vq_gamma: float = 0.25  # k-means commitment weight
    # The audio front end (the task's options): rate, and whether samples are normalised per utterance.
    sample_rate: int = 16000
    normalize: bool = False

    def __post_init__(self) -> None:
        for name in ("conv_feature_layers", "conv_aggregator_layers"):
            value = getattr(self, name)
            setattr(
                self,
                name,
                [tuple(int(x) for x in layer) for layer in (_layers(value) if isinstance(value, str) else value)],
            )
        if isinstance(self.vq_temp, str):
            self.vq_temp = ast.literal_eval(self.vq_temp)
        self.vq_temp = tuple(float(t) for t in self.vq_temp)
        check_supported(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Wav2VecConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        for name in ("conv_feature_layers", "conv_aggregator_layers"):
            values[name] = str([tuple(layer) for layer in values[name]])  # fairseq's spelling: a list literal
        values["vq_temp"] = list(self.vq_temp)
        return values

    @property
    def encoder_dim(self) -> int:
        return self.conv_feature_layers[-1][0]

    @property
    def context_dim(self) -> int:
        return self.gru_dim if self.aggregator == "gru" else self.conv_aggregator_layers[-1][0]

    @property
    def samples_per_frame(self) -> int:
        return math.prod(stride for _, _, stride in self.conv_feature_layers)

    @property
    def receptive_field(self) -> int:
        """Fewest input samples that produce one encoder frame (465 for wav2vec large)."""
        samples = 1
        for _, kernel, stride in reversed(self.conv_feature_layers):
            samples = (samples - 1) * stride + kernel
        return samples

    def num_frames(self, num_samples: int) -> int:
        for _, kernel, stride in self.conv_feature_layers:
            num_samples = max((num_samples - kernel) // stride + 1, 0)
        return num_samples

    @property
    def prediction_offset(self) -> int:
        """Frames between a context vector and the first frame it predicts; "auto": the encoder's
        receptive field over its hop, rounded up, so no predicted frame shares input with c_t."""
        if self.offset != "auto":
            return int(self.offset)
        return math.ceil(self.receptive_field / self.samples_per_frame)


def _layers(text: str) -> Layers:
    """A `[(dim, kernel, stride), ...]` expression: list and tuple literals joined by `+` and `*`."""

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [value(item) for item in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = value(node.left), value(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError(f"unsupported convolution layer expression: {text!r}")

    return value(ast.parse(text, mode="eval").body)


def check_supported(config: Wav2VecConfig) -> None:
    """ValueError naming the option, for architectures this implementation does not build."""
    choices = {
        "aggregator": ("cnn", "gru"),
        "activation": ("relu", "gelu"),
        "vq_type": ("none", "gumbel", "kmeans"),
        "project_features": ("none", "same", "new"),
    }
    for name, allowed in choices.items():
        if getattr(config, name) not in allowed:
            raise ValueError(
                f"wav2vec option {name}={getattr(config, name)!r} is not supported (supported: {', '.join(allowed)})"
            )
    if config.aggregator == "cnn" and any(stride != 1 for _, _, stride in config.conv_aggregator_layers):
        raise ValueError(
            "wav2vec context convolutions with a stride other than 1 are not supported: the "
            "context network keeps one vector per encoder frame"
        )
    if config.offset != "auto" and not str(config.offset).lstrip("-").isdigit():
        raise ValueError(f"wav2vec option offset={config.offset!r}: expected 'auto' or a whole number of frames")


def _activation(name: str) -> nn.Module:
    return nn.ReLU() if name == "relu" else nn.GELU()


class EncoderLayer(nn.Module):
    """Convolution (no bias), group norm over all channels and frames together, activation.

    x: (batch, in_channels, steps) -> (batch, channels, steps')
    """

    def __init__(self, in_channels: int, channels: int, kernel: int, stride: int, config: Wav2VecConfig):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, channels, kernel, stride=stride, bias=False)
        self.norm = nn.GroupNorm(1, channels, affine=not config.non_affine_group_norm)
        self.activation = _activation(config.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.norm(self.conv(x)))


class FeatureEncoder(nn.Module):
    """samples (batch, samples) -> z (batch, channels, frames)."""

    def __init__(self, config: Wav2VecConfig):
        super().__init__()
        inputs = [1] + [dim for dim, _, _ in config.conv_feature_layers[:-1]]
        self.layers = nn.ModuleList(
            EncoderLayer(n_in, dim, kernel, stride, config)
            for n_in, (dim, kernel, stride) in zip(inputs, config.conv_feature_layers)
        )
        self.skip_connections = config.skip_connections_feat
        self.residual_scale = math.sqrt(config.residual_scale)
        self.log_compression = config.log_compression

    def forward(self, samples: torch.Tensor) -> torch.Tensor:
        x = samples.unsqueeze(1)
        for layer in self.layers:
            residual, x = x, layer(x)
            if self.skip_connections and x.shape[1] == residual.shape[1]:
                # A strided layer shortens time: the skip takes every (ratio)-th input step.
                frames = x.shape[2]
                x = (x + residual[..., :: residual.shape[2] // frames][..., :frames]) * self.residual_scale
        return (x.abs() + 1).log() if self.log_compression else x  # log(1 + |z|), rounded as the reference


class ContextLayer(nn.Module):
    """Causal convolution: left padding of kernel - 1 frames, so c_t sees z_{t-k+1..t}; then group
    norm and activation. x: (batch, in_channels, frames) -> (batch, channels, frames)"""

    def __init__(self, in_channels: int, channels: int, kernel: int, config: Wav2VecConfig):
        super().__init__()
        self.padding = kernel - 1
        self.pad_mode = "constant" if config.agg_zero_pad else "replicate"
        self.conv = nn.Conv1d(in_channels, channels, kernel, bias=not config.no_conv_bias)
        self.dropout = nn.Dropout(config.dropout)
        self.norm = nn.GroupNorm(1, channels, affine=not config.non_affine_group_norm)
        self.activation = _activation(config.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (self.padding, 0), mode=self.pad_mode)
        return self.activation(self.norm(self.dropout(self.conv(x))))


class ConvContextNetwork(nn.Module):
    """Causal convolutions with scaled skip sums (1x1 projections where the width changes).

    x: (batch, encoder_dim, frames) -> (batch, context_dim, frames)
    """

    def __init__(self, config: Wav2VecConfig):
        super().__init__()
        inputs = [config.encoder_dim] + [dim for dim, _, _ in config.conv_aggregator_layers[:-1]]
        self.layers = nn.ModuleList(
            ContextLayer(n_in, dim, kernel, config)
            for n_in, (dim, kernel, _) in zip(inputs, config.conv_aggregator_layers)
        )
        self.skip_connections = config.skip_connections_agg
        self.skips = nn.ModuleDict(
            {
                str(i): nn.Conv1d(n_in, dim, 1, bias=False)
                for i, (n_in, (dim, _, _)) in enumerate(zip(inputs, config.conv_aggregator_layers))
                if n_in != dim and self.skip_connections
            }
        )
        self.residual_scale = math.sqrt(config.residual_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            residual, x = x, layer(x)
            if self.skip_connections:
                skip = self.skips[str(index)] if str(index) in self.skips else None
                x = (x + (skip(residual) if skip is not None else residual)) * self.residual_scale
        return x


class GruContextNetwork(nn.Module):
    """The GRU aggregator as the reference runs it: its `(batch, frames, channels)` tensor goes to a
    sequence-first GRU, so the recurrence runs across the batch and each frame is its own sequence
    step-wise. Trained weights expect exactly that, so it is kept.

    x: (batch, encoder_dim, frames) -> (batch, gru_dim, frames)
    """

    def __init__(self, config: Wav2VecConfig):
        super().__init__()
        self.gru = nn.GRU(config.encoder_dim, config.gru_dim, num_layers=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(x.transpose(1, 2))[0].transpose(1, 2)


@dataclass
class Wav2VecOutput:
    z: torch.Tensor  # (batch, frames, encoder_dim): encoder output (before quantization)
    c: torch.Tensor  # (batch, frames, context_dim): context vectors
    quantized: Quantized | None  # vq-wav2vec only: q (what c was computed from), codes, perplexity, penalty


class Wav2VecModel(nn.Module):
    """wav2vec (1.0) (no quantizer) or vq-wav2vec, with the contrastive task's step projections.

    forward: samples (batch, samples) -> Wav2VecOutput
    """

    def __init__(self, config: Wav2VecConfig):
        super().__init__()
        check_supported(config)
        self.config = config
        self.feature_extractor = FeatureEncoder(config)
        dim = config.encoder_dim
        vq_dim = config.vq_dim or dim
        if config.vq_type == "gumbel":
            self.quantizer = GumbelQuantizer(
                dim,
                config.vq_vars,
                config.vq_groups,
                vq_dim,
                config.combine_groups,
                config.vq_depth,
                _activation(config.activation),
            )
        elif config.vq_type == "kmeans":
            self.quantizer = KmeansQuantizer(
                dim, config.vq_vars, config.vq_groups, vq_dim, config.combine_groups, config.vq_gamma
            )
        else:
            self.quantizer = None
        self.aggregator = GruContextNetwork(config) if config.aggregator == "gru" else ConvContextNetwork(config)
        # Step k's prediction of z_{t+offset+k} from c_t: one linear map per step, stored as the reference's
        # transposed 2-d convolution, weight (context_dim, encoder_dim, 1, steps).
        self.prediction = nn.ConvTranspose2d(config.context_dim, dim, (1, config.prediction_steps))
        self.dropout_features = nn.Dropout(config.dropout_features)
        self.dropout_context = nn.Dropout(config.dropout_agg)

    def forward(self, samples: torch.Tensor) -> Wav2VecOutput:
        z = self.feature_extractor(samples)  # (batch, dim, frames)
        quantized = None
        features = z
        if self.quantizer is not None:
            quantized = self.quantizer(z.transpose(1, 2))
            features = quantized.vectors.transpose(1, 2)
        c = self.dropout_context(self.aggregator(self.dropout_features(features)))
        return Wav2VecOutput(z.transpose(1, 2), c.transpose(1, 2), quantized)

    def targets(self, output: Wav2VecOutput) -> torch.Tensor:
        """What the contrastive task predicts: q for vq-wav2vec, else z. (batch, frames, dim)"""
        return output.quantized.vectors if output.quantized is not None else output.z

    def predictions(self, c: torch.Tensor) -> torch.Tensor:
        """c: (batch, frames, context_dim) -> (batch, encoder_dim, frames, steps)."""
        return self.prediction(c.transpose(1, 2).unsqueeze(-1))
