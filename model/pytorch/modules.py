"""The parts of wav2vec 2.0, one small module per concept.

Attribute names follow Hugging Face's state-dict keys (`conv_layers.0.conv`,
`attention.q_proj`, `feed_forward.intermediate_dense`, ...) so their checkpoints load
without a key map. Shapes: samples `(batch, samples)`, frames `(batch, frames, features)`;
`lengths` `(batch,)` count each row's real steps, and travel with the tensors through the feature
encoder; `frame_mask` is `(batch, frames)`, True on real frames and False on padding.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..config import Wav2Vec2Config, conv_output_length

_ACTIVATIONS = {
    "gelu": lambda: nn.GELU(),
    "gelu_new": lambda: nn.GELU(approximate="tanh"),
    "gelu_pytorch_tanh": lambda: nn.GELU(approximate="tanh"),
    "relu": lambda: nn.ReLU(),
    "silu": lambda: nn.SiLU(),
    "swish": lambda: nn.SiLU(),
    "tanh": lambda: nn.Tanh(),
}


def activation(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise ValueError(f"unsupported activation {name!r}; supported: {', '.join(sorted(_ACTIVATIONS))}")
    return _ACTIVATIONS[name]()


class ConvLayer(nn.Module):
    """One feature-encoder layer: convolution, optional normalisation, activation.

    x: (batch, in_channels, samples) -> (batch, out_channels, samples')
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, stride: int, bias: bool, norm: str | None, act: str
    ):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel, stride=stride, bias=bias)
        if norm == "group":  # one group per channel: normalises each channel over time
            self.layer_norm = nn.GroupNorm(out_channels, out_channels, affine=True)
        elif norm == "layer":  # normalises each time step over channels
            self.layer_norm = nn.LayerNorm(out_channels, elementwise_affine=True)
        else:
            self.layer_norm = None
        self.activation = activation(act)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """lengths: (batch,) real input steps per row, or None. Given, the group norm's statistics
        ignore the padding, so right-padding a batch does not change any row's real output steps."""
        kernel, stride = self.conv.kernel_size[0], self.conv.stride[0]
        out_lengths = None if lengths is None else conv_output_length(lengths, kernel, stride).clamp(min=0)
        if isinstance(self.layer_norm, nn.GroupNorm) and lengths is not None:
            x = self.conv(x)
            valid = torch.arange(x.shape[-1], device=x.device)[None, None, :] < out_lengths[:, None, None]
            return self.activation(masked_channel_norm(x, valid, self.layer_norm)), out_lengths
        x = self.conv(x)
        if isinstance(self.layer_norm, nn.LayerNorm):
            x = self.layer_norm(x.transpose(1, 2)).transpose(1, 2)
        elif self.layer_norm is not None:
            x = self.layer_norm(x)
        return self.activation(x), out_lengths


def masked_channel_norm(x: torch.Tensor, valid: torch.Tensor, norm: nn.GroupNorm) -> torch.Tensor:
    """GroupNorm with one group per channel, its mean and variance taken over the `valid` steps only.

    x: (batch, channels, steps); valid: (batch, 1, steps) bool. Padded steps come out as garbage that
    no later step reads (and their gradient is taken as zero). Training takes the hand-written
    gradient below; inference and export take the plain formula (what exported graphs hold). The two
    differ in their float rounding only: the training path's statistics (a vector norm for the sum of
    squares) moved the tiny test model's fp32 export past its 1e-3 verification, so export keeps these.
    """
    if torch.is_grad_enabled() and not torch.compiler.is_compiling() and not torch.onnx.is_in_onnx_export():
        return _MaskedChannelNorm.apply(x, valid, norm.weight, norm.bias, norm.eps)
    x = x.masked_fill(~valid, 0.0)
    count = valid.sum(dim=-1, keepdim=True).clamp(min=1).to(x.dtype)
    mean = x.sum(dim=-1, keepdim=True) / count
    variance = ((x * x).sum(dim=-1, keepdim=True) / count - mean * mean).clamp(min=0.0)
    scale = torch.rsqrt(variance + norm.eps) * norm.weight[:, None]
    return (x - mean) * scale + norm.bias[:, None]


class _MaskedChannelNorm(torch.autograd.Function):
    """The masked norm with its gradient written out: a few fused passes over the batch each way
    (zero the padding, a sum and a norm for the statistics, one multiply-add), where autograd
    through the same formula took ~12 passes, and this first conv layer's output is the largest
    tensor of the model. The statistics are taken in float32 (at least) whatever the dtype of `x`."""

    @staticmethod
    def forward(ctx, x, valid, weight, bias, eps):
        x = x * valid  # the padding zeroed: plain sums give the statistics
        precision = torch.promote_types(x.dtype, torch.float32)
        count = valid.sum(dim=-1, keepdim=True).clamp(min=1).to(precision)
        mean = x.sum(dim=-1, keepdim=True, dtype=precision) / count
        square = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=precision) ** 2 / count
        rstd = torch.rsqrt((square - mean * mean).clamp(min=0.0) + eps)
        scale = rstd * weight[:, None].to(precision)
        ctx.save_for_backward(x, valid, mean, rstd, scale, count)
        ctx.parameter_dtype = weight.dtype
        shift = (bias[:, None] - mean * scale).to(x.dtype)
        return torch.addcmul(shift.expand_as(x), x, scale.to(x.dtype))

    @staticmethod
    def backward(ctx, grad):
        x, valid, mean, rstd, scale, count = ctx.saved_tensors
        # Sums over the valid steps only: the gradient's as a matrix-vector product with the mask (no
        # batch-sized temporary); its dot product with x needs no mask, x being zero on the padding.
        grad_sum = torch.matmul(grad, valid.to(grad.dtype).transpose(1, 2)).to(mean.dtype)
        # the sum over steps of grad * normalised, with normalised = (x - mean) * rstd
        grad_dot = (torch.linalg.vecdot(grad, x, dim=-1).to(mean.dtype)[..., None] - mean * grad_sum) * rstd
        # d x = scale * (grad - mean(grad) - normalised * mean(grad * normalised)), over the valid steps
        x_factor = -scale * rstd * grad_dot / count
        constant = -scale * grad_sum / count - x_factor * mean
        grad_x = torch.addcmul(constant.to(grad.dtype).expand_as(grad), grad, scale.to(grad.dtype))
        grad_x = grad_x.addcmul_(x, x_factor.to(grad.dtype)).mul_(valid)
        grad_weight = grad_dot.sum(dim=(0, 2)).to(ctx.parameter_dtype)
        grad_bias = grad_sum.sum(dim=(0, 2)).to(ctx.parameter_dtype)
        return grad_x, None, grad_weight, grad_bias, None


class FeatureEncoder(nn.Module):
    """The convolution stack over raw samples: (batch, samples) -> (batch, frames, conv_dim[-1])."""

    def __init__(self, config: Wav2Vec2Config):
        super().__init__()
        layers = []
        in_channels = 1
        for index, (channels, kernel, stride) in enumerate(
            zip(config.conv_dim, config.conv_kernel, config.conv_stride)
        ):
            if config.feat_extract_norm == "layer":
                norm = "layer"
            else:
                norm = "group" if index == 0 else None
            layers.append(
                ConvLayer(in_channels, channels, kernel, stride, config.conv_bias, norm, config.feat_extract_activation)
            )
            in_channels = channels
        self.conv_layers = nn.ModuleList(layers)

    def forward(
        self, samples: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """samples: (batch, samples); lengths: (batch,) real samples per row, or None (no padding).
        Returns (features (batch, frames, conv_dim[-1]), real frames per row or None). With lengths,
        normalisation statistics cover each row's real samples only."""
        x = samples[:, None, :]
        for layer in self.conv_layers:
            x, lengths = layer(x, lengths)
        return x.transpose(1, 2), lengths


class FeatureProjection(nn.Module):
    """Normalise conv features and project them to the transformer width.

    Returns (projected (batch, frames, hidden), normalised (batch, frames, conv_dim[-1])); the
    normalised features are what the quantizer turns into pretraining targets.
    """

    def __init__(self, config: Wav2Vec2Config):
        super().__init__()
        self.layer_norm = nn.LayerNorm(config.conv_dim[-1], eps=config.layer_norm_eps)
        self.projection = nn.Linear(config.conv_dim[-1], config.hidden_size)
        self.dropout = nn.Dropout(config.feat_proj_dropout)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        normalised = self.layer_norm(features)
        return self.dropout(self.projection(normalised)), normalised


class ConvolutionalPositionalEmbedding(nn.Module):
    """Relative positions from a wide grouped convolution over time, weight-normalised over the kernel axis.

    x: (batch, frames, hidden) -> (batch, frames, hidden)
    """

    def __init__(self, config: Wav2Vec2Config):
        super().__init__()
        width = config.num_conv_pos_embeddings
        conv = nn.Conv1d(
            config.hidden_size,
            config.hidden_size,
            kernel_size=width,
            padding=width // 2,
            groups=config.num_conv_pos_embedding_groups,
        )
        self.conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
        # "same" padding with an even kernel yields one frame too many.
        self.trim_last_frame = width % 2 == 0
        self.activation = activation(config.feat_extract_activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x.transpose(1, 2))
        if self.trim_last_frame:
            y = y[:, :, :-1]
        return self.activation(y).transpose(1, 2)


class SelfAttention(nn.Module):
    """Multi-head self-attention; padded frames are never attended to."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(hidden_size, hidden_size)
        self.v_proj = nn.Linear(hidden_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor | None) -> torch.Tensor:
        batch, frames, hidden = x.shape

        def heads(projection: nn.Linear) -> torch.Tensor:  # (batch, heads, frames, head_dim)
            return projection(x).view(batch, frames, self.num_heads, -1).transpose(1, 2)

        key_mask = None if frame_mask is None else frame_mask[:, None, None, :]
        y = F.scaled_dot_product_attention(
            heads(self.q_proj),
            heads(self.k_proj),
            heads(self.v_proj),
            attn_mask=key_mask,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out_proj(y.transpose(1, 2).reshape(batch, frames, hidden))


class FeedForward(nn.Module):
    def __init__(self, config: Wav2Vec2Config):
        super().__init__()
        self.intermediate_dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = activation(config.hidden_act)
        self.intermediate_dropout = nn.Dropout(config.activation_dropout)
        self.output_dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.output_dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.intermediate_dropout(self.intermediate_act_fn(self.intermediate_dense(x)))
        return self.output_dropout(self.output_dense(x))


class EncoderLayer(nn.Module):
    """Transformer block. `pre_norm` (large/lv60 family) normalises before each sub-layer;
    otherwise (base family) after each residual sum."""

    def __init__(self, config: Wav2Vec2Config):
        super().__init__()
        self.pre_norm = config.do_stable_layer_norm
        self.attention = SelfAttention(config.hidden_size, config.num_attention_heads, config.attention_dropout)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = FeedForward(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor | None) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.dropout(self.attention(self.layer_norm(x), frame_mask))
            return x + self.feed_forward(self.final_layer_norm(x))
        x = self.layer_norm(x + self.dropout(self.attention(x, frame_mask)))
        return self.final_layer_norm(x + self.feed_forward(x))


class Encoder(nn.Module):
    """Context network: positional convolution, then the transformer blocks.

    x: (batch, frames, hidden) -> (batch, frames, hidden)
    """

    def __init__(self, config: Wav2Vec2Config):
        super().__init__()
        self.pre_norm = config.do_stable_layer_norm
        self.layerdrop = config.layerdrop
        self.pos_conv_embed = ConvolutionalPositionalEmbedding(config)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor | None) -> torch.Tensor:
        if frame_mask is not None:  # padding must not leak in through the positional convolution
            x = x.masked_fill(~frame_mask[..., None], 0.0)
        x = x + self.pos_conv_embed(x)
        if not self.pre_norm:
            x = self.layer_norm(x)
        x = self.dropout(x)
        for layer in self.layers:
            if self.training and self.layerdrop > 0 and torch.rand(()) < self.layerdrop:
                continue  # LayerDrop: skip whole blocks while training
            x = layer(x, frame_mask)
        if self.pre_norm:
            x = self.layer_norm(x)
        return x


class GumbelVectorQuantizer(nn.Module):
    """Product quantizer: each frame picks one codeword from each of G codebooks of V entries, and the
    picks are concatenated. Training samples the picks with straight-through Gumbel-softmax.

    features: (batch, frames, conv_dim[-1]) -> codewords (batch, frames, codevector_dim)
    """

    def __init__(self, config: Wav2Vec2Config):
        super().__init__()
        if config.codevector_dim % config.num_codevector_groups:
            raise ValueError("codevector_dim must be divisible by num_codevector_groups")
        self.num_groups = config.num_codevector_groups
        self.num_vars = config.num_codevectors_per_group
        self.codevectors = nn.Parameter(
            torch.empty(1, self.num_groups * self.num_vars, config.codevector_dim // self.num_groups)
        )
        self.weight_proj = nn.Linear(config.conv_dim[-1], self.num_groups * self.num_vars)
        self.temperature = 2.0  # annealed by the trainer

    def forward(
        self, features: torch.Tensor, frame_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (codewords, perplexity): perplexity sums, over codebooks, exp(entropy) of the
        average codeword distribution over the frames in `frame_mask` (all frames if None)."""
        batch, frames, _ = features.shape
        scores = self.weight_proj(features).view(batch * frames, self.num_groups, self.num_vars)
        if self.training:
            choice = F.gumbel_softmax(scores.float(), tau=self.temperature, hard=True).type_as(scores)
            distribution = torch.softmax(scores.float(), dim=-1)
        else:
            choice = F.one_hot(scores.argmax(dim=-1), self.num_vars).type_as(scores)
            distribution = choice
        perplexity = codebook_perplexity(distribution, frame_mask)
        # Each group's pick times its codebook (a matmul, not a (frames, G*V, D/G) product to sum).
        codebooks = self.codevectors.view(self.num_groups, self.num_vars, -1)
        codewords = torch.einsum("ngv,gvd->ngd", choice, codebooks.to(choice.dtype))
        return codewords.reshape(batch, frames, -1), perplexity


def codebook_perplexity(distribution: torch.Tensor, frame_mask: torch.Tensor | None) -> torch.Tensor:
    """distribution: (frames, groups, vars) -> sum over groups of exp(entropy of the mean distribution)."""
    if frame_mask is None:
        average = distribution.mean(dim=0)
    else:
        keep = frame_mask.reshape(-1, 1, 1)
        average = torch.where(keep, distribution, torch.zeros_like(distribution)).sum(dim=0) / keep.sum()
    return torch.exp(-torch.xlogy(average, average).sum(dim=-1)).sum()
