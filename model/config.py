"""Typed configuration of a wav2vec 2.0 model and of its audio front end.

`Wav2Vec2Config` has one field per key of Hugging Face's `config.json` for the
`wav2vec2` model type, with the same name, default and meaning, so a config reads
and writes without translation. Keys we do not model (generic `PretrainedConfig`
keys, heads we do not implement) are kept in `extra` and written back unchanged.

This module imports no torch: the service reads configs too.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Wav2Vec2Config:
    # Vocabulary and transformer size.
    vocab_size: int = 32
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    # Dropout and LayerDrop (training only).
    hidden_dropout: float = 0.1
    activation_dropout: float = 0.1
    attention_dropout: float = 0.1
    feat_proj_dropout: float = 0.0
    feat_quantizer_dropout: float = 0.0
    final_dropout: float = 0.1
    layerdrop: float = 0.1
    # Feature encoder (the convolution stack over raw samples).
    feat_extract_norm: str = "group"  # "group": GroupNorm on the first layer only; "layer": LayerNorm on each
    feat_extract_activation: str = "gelu"
    conv_dim: list[int] = field(default_factory=lambda: [512] * 7)
    conv_stride: list[int] = field(default_factory=lambda: [5, 2, 2, 2, 2, 2, 2])
    conv_kernel: list[int] = field(default_factory=lambda: [10, 3, 3, 3, 3, 2, 2])
    conv_bias: bool = False
    # Convolutional positional embedding.
    num_conv_pos_embeddings: int = 128  # kernel width, in frames
    num_conv_pos_embedding_groups: int = 16
    # True: pre-layer-norm transformer (large/lv60 family); False: post-layer-norm (base family).
    do_stable_layer_norm: bool = False
    # SpecAugment-style masking of latent frames (training only).
    apply_spec_augment: bool = True
    mask_time_prob: float = 0.05
    mask_time_length: int = 10
    mask_time_min_masks: int = 2
    mask_feature_prob: float = 0.0
    mask_feature_length: int = 10
    mask_feature_min_masks: int = 0
    # Pretraining: Gumbel product quantizer and contrastive task.
    num_codevectors_per_group: int = 320
    num_codevector_groups: int = 2
    contrastive_logits_temperature: float = 0.1
    num_negatives: int = 100
    codevector_dim: int = 256
    proj_codevector_dim: int = 256
    diversity_loss_weight: float = 0.1
    # CTC loss.
    ctc_loss_reduction: str = "sum"
    ctc_zero_infinity: bool = False
    # Special token ids.
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2
    # Parts of the Hugging Face config for heads and adapters this package does not build;
    # kept so a config round-trips, and checked so such models are refused clearly.
    use_weighted_layer_sum: bool = False
    classifier_proj_size: int = 256
    tdnn_dim: list[int] = field(default_factory=lambda: [512, 512, 512, 512, 1500])
    tdnn_kernel: list[int] = field(default_factory=lambda: [5, 3, 3, 1, 1])
    tdnn_dilation: list[int] = field(default_factory=lambda: [1, 2, 3, 1, 1])
    xvector_output_dim: int = 512
    add_adapter: bool = False
    adapter_kernel_size: int = 3
    adapter_stride: int = 2
    num_adapter_layers: int = 3
    output_hidden_size: int | None = None
    adapter_attn_dim: int | None = None
    # Every other key of config.json, written back as it was read.
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        layers = {len(self.conv_dim), len(self.conv_stride), len(self.conv_kernel)}
        if len(layers) != 1:
            raise ValueError(
                "conv_dim, conv_stride and conv_kernel must have one entry per feature-encoder layer; "
                f"got {len(self.conv_dim)}, {len(self.conv_stride)} and {len(self.conv_kernel)}"
            )
        if self.feat_extract_norm not in ("group", "layer"):
            raise ValueError(f"feat_extract_norm must be 'group' or 'layer', not {self.feat_extract_norm!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Wav2Vec2Config:
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs = {key: value for key, value in values.items() if key in known}
        for key in ("conv_dim", "conv_stride", "conv_kernel", "tdnn_dim", "tdnn_kernel", "tdnn_dilation"):
            if key in kwargs:
                kwargs[key] = list(kwargs[key])
        extra = {key: value for key, value in values.items() if key not in known and key != "extra"}
        return cls(**kwargs, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        extra = values.pop("extra")
        # Derived by transformers itself; stale copies would only confuse a reader.
        extra.pop("num_feat_extract_layers", None)
        return {**extra, **values}

    @classmethod
    def from_json_file(cls, path: str | Path) -> Wav2Vec2Config:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def to_json_file(self, path: str | Path, architecture: str) -> None:
        values = {**self.to_dict(), "architectures": [architecture], "model_type": "wav2vec2"}
        Path(path).write_text(json.dumps(values, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    @property
    def samples_per_frame(self) -> int:
        """Hop between consecutive output frames, in input samples (320 for the paper's models)."""
        hop = 1
        for stride in self.conv_stride:
            hop *= stride
        return hop

    @property
    def receptive_field(self) -> int:
        """Fewest input samples that produce one output frame (400 for the paper's models)."""
        samples = 1
        for kernel, stride in reversed(list(zip(self.conv_kernel, self.conv_stride))):
            samples = (samples - 1) * stride + kernel
        return samples

    def num_frames(self, num_samples: int) -> int:
        """Output frames for `num_samples` input samples: the feature encoder's length formula."""
        for kernel, stride in zip(self.conv_kernel, self.conv_stride):
            num_samples = max(conv_output_length(num_samples, kernel, stride), 0)
        return num_samples

    def frame_seconds(self, sampling_rate: int) -> float:
        """Seconds between consecutive output frames (0.02 for the paper's models at 16 kHz)."""
        return self.samples_per_frame / sampling_rate


def conv_output_length(length, kernel: int, stride: int):
    """Output steps of an unpadded convolution over `length` input steps: an int, or an integer
    tensor of lengths (integer ops, exact in an exported graph too). Below `kernel` it is 0 or less."""
    return (length - kernel) // stride + 1


@dataclass
class FeatureSettings:
    """How raw audio becomes `input_values`: Hugging Face's `preprocessor_config.json`."""

    sampling_rate: int = 16000
    do_normalize: bool = True  # zero mean, unit variance per utterance
    return_attention_mask: bool = False  # True for the layer-norm family; group-norm models run without one
    padding_value: float = 0.0
    feature_size: int = 1

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FeatureSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})

    @classmethod
    def from_folder(cls, folder: str | Path, config: Wav2Vec2Config) -> FeatureSettings:
        """Read a model folder's settings: `preprocessor_config.json`, or the `feature_extractor` section of
        the `processor_config.json` transformers 5 writes; without either, the family's defaults."""
        folder = Path(folder)
        if (folder / "preprocessor_config.json").is_file():
            return cls.from_dict(json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8")))
        if (folder / "processor_config.json").is_file():
            processor = json.loads((folder / "processor_config.json").read_text(encoding="utf-8"))
            if "feature_extractor" in processor:
                return cls.from_dict(processor["feature_extractor"])
        return cls.for_model(config)

    @classmethod
    def for_model(cls, config: Wav2Vec2Config, sampling_rate: int = 16000) -> FeatureSettings:
        """The settings Hugging Face pairs with a model family."""
        uses_mask = config.feat_extract_norm == "layer"
        return cls(sampling_rate=sampling_rate, do_normalize=True, return_attention_mask=uses_mask)

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature_extractor_type": "Wav2Vec2FeatureExtractor",
            "processor_class": "Wav2Vec2Processor",
            "padding_side": "right",
            **dataclasses.asdict(self),
        }

    def save(self, folder: str | Path) -> None:
        """Write `preprocessor_config.json`, which transformers' feature extractor reads."""
        path = Path(folder) / "preprocessor_config.json"
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
