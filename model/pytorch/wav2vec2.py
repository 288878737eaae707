"""wav2vec 2.0 assembled from its parts: the bare model, the CTC model and the pretraining model.

Class and attribute names mirror Hugging Face's (`Wav2Vec2ForCTC.wav2vec2.encoder...`), so the
state dicts are interchangeable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..config import Wav2Vec2Config
from .modules import (
    ConvLayer,
    ConvolutionalPositionalEmbedding,
    Encoder,
    FeatureEncoder,
    FeatureProjection,
    GumbelVectorQuantizer,
)


@dataclass
class Wav2Vec2Output:
    hidden_states: torch.Tensor  # (batch, frames, hidden): the context network's output
    extract_features: torch.Tensor  # (batch, frames, conv_dim[-1]): normalised conv features
    frame_mask: torch.Tensor | None  # (batch, frames), True on real frames; None without an attention mask


def check_supported(config: Wav2Vec2Config) -> None:
    if config.add_adapter or config.adapter_attn_dim:
        raise ValueError(
            "wav2vec 2.0 models with adapters (add_adapter / adapter_attn_dim, e.g. MMS) are not supported"
        )


class Wav2Vec2Model(nn.Module):
    """Feature encoder -> projection -> (optional masking of frames) -> context network."""

    def __init__(self, config: Wav2Vec2Config):
        super().__init__()
        check_supported(config)
        self.config = config
        self.feature_extractor = FeatureEncoder(config)
        self.feature_projection = FeatureProjection(config)
        # The learned vector that replaces masked frames; Hugging Face creates it only when masking is on.
        if config.mask_time_prob > 0 or config.mask_feature_prob > 0:
            self.masked_spec_embed = nn.Parameter(torch.empty(config.hidden_size).uniform_())
        else:
            self.masked_spec_embed = None
        self.encoder = Encoder(config)

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        mask_time_indices: torch.Tensor | None = None,
        mask_feature_indices: torch.Tensor | None = None,
    ) -> Wav2Vec2Output:
        """input_values: (batch, samples); attention_mask: (batch, samples), 1 on real samples (right
        padding); mask_time_indices: (batch, frames) bool, frames to replace by the mask embedding;
        mask_feature_indices: (batch, hidden) bool, channels to zero in every frame (fine-tuning's
        channel masking).

        With an attention mask, padding changes nothing: each row equals its utterance run alone.
        Its lengths travel through the feature encoder, whose group norm (base family) then keeps
        padding out of its statistics, and give the frame mask that attention uses. transformers
        lets padding into those statistics, and so advises against a mask for the group-norm family.
        """
        sample_lengths = None if attention_mask is None else attention_mask.long().sum(dim=-1)
        features, lengths = self.feature_extractor(input_values, sample_lengths)
        frame_mask = None
        if lengths is not None:
            frame_mask = torch.arange(features.shape[1], device=features.device)[None, :] < lengths[:, None]
        hidden, extract_features = self.feature_projection(features)
        if mask_time_indices is not None and self.config.apply_spec_augment:
            hidden = torch.where(mask_time_indices[..., None], self.masked_spec_embed.to(hidden.dtype), hidden)
        if mask_feature_indices is not None and self.config.apply_spec_augment:
            hidden = hidden.masked_fill(mask_feature_indices[:, None, :], 0.0)
        return Wav2Vec2Output(self.encoder(hidden, frame_mask), extract_features, frame_mask)


class Wav2Vec2ForCTC(nn.Module):
    """wav2vec 2.0 with a linear CTC head: (batch, samples) -> logits (batch, frames, vocab_size)."""

    def __init__(self, config: Wav2Vec2Config):
        super().__init__()
        self.config = config
        self.wav2vec2 = Wav2Vec2Model(config)
        self.dropout = nn.Dropout(config.final_dropout)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        mask_time_indices: torch.Tensor | None = None,
        mask_feature_indices: torch.Tensor | None = None,
    ) -> torch.Tensor:
        hidden = self.wav2vec2(input_values, attention_mask, mask_time_indices, mask_feature_indices).hidden_states
        return self.lm_head(self.dropout(hidden))


@dataclass
class PretrainingOutput:
    projected_states: torch.Tensor  # (batch, frames, proj_codevector_dim): context vectors c_t
    projected_quantized_states: torch.Tensor  # (batch, frames, proj_codevector_dim): targets q_t
    codevector_perplexity: torch.Tensor  # scalar
    frame_mask: torch.Tensor | None


class Wav2Vec2ForPreTraining(nn.Module):
    """wav2vec 2.0 with the quantizer and projections of the self-supervised objective."""

    def __init__(self, config: Wav2Vec2Config):
        super().__init__()
        self.config = config
        self.wav2vec2 = Wav2Vec2Model(config)
        self.dropout_features = nn.Dropout(config.feat_quantizer_dropout)
        self.quantizer = GumbelVectorQuantizer(config)
        self.project_hid = nn.Linear(config.hidden_size, config.proj_codevector_dim)
        self.project_q = nn.Linear(config.codevector_dim, config.proj_codevector_dim)

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        mask_time_indices: torch.Tensor | None = None,
    ) -> PretrainingOutput:
        out = self.wav2vec2(input_values, attention_mask, mask_time_indices)
        # Targets come from the unmasked features; the context network saw the masked ones.
        quantized, perplexity = self.quantizer(self.dropout_features(out.extract_features), mask_time_indices)
        return PretrainingOutput(
            self.project_hid(out.hidden_states), self.project_q(quantized), perplexity, out.frame_mask
        )


def init_weights(model: nn.Module, config: Wav2Vec2Config) -> nn.Module:
    """Fresh weights for training from scratch, following the paper's recipe."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=config.initializer_range)
            nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, ConvLayer):
            nn.init.kaiming_normal_(module.conv.weight)
            if module.conv.bias is not None:
                bound = 1.0 / math.sqrt(module.conv.in_channels * module.conv.kernel_size[0])
                nn.init.uniform_(module.conv.bias, -bound, bound)
    # Parts with their own recipe, after the generic pass so it does not overwrite them.
    for module in model.modules():
        if isinstance(module, GumbelVectorQuantizer):
            nn.init.normal_(module.weight_proj.weight, mean=0.0, std=1.0)
            nn.init.zeros_(module.weight_proj.bias)
            nn.init.uniform_(module.codevectors)
        elif isinstance(module, ConvolutionalPositionalEmbedding):
            conv = module.conv
            weight = torch.empty_like(conv.weight).normal_(
                0.0, math.sqrt(4.0 / (conv.kernel_size[0] * conv.in_channels))
            )
            conv.parametrizations.weight.original0.data.copy_(
                torch.linalg.vector_norm(weight, dim=(0, 1), keepdim=True)
            )
            conv.parametrizations.weight.original1.data.copy_(weight)
            nn.init.zeros_(conv.bias)
    return model
