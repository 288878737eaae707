"""Training configs: YAML or JSON files, presets, and `key=value` overrides from the command line.

A config has a `model` section (any Wav2Vec2Config field, on top of a `preset`: base, large or
tiny) and the command's own settings. Overrides use dotted keys: `model.hidden_size=64`,
`max_steps=2000`, `manifest=data/train.jsonl`; values are read as YAML (numbers, booleans, lists).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml  # config files; JSON is YAML too

from model.config import FeatureSettings, Wav2Vec2Config
from model.decoding import BEAM_WIDTH, LM_ALPHA, LM_BETA

from .metrics_log import require_tensorboard

# The paper's architectures, and one small enough to train on a CPU in minutes.
PRESETS: dict[str, dict[str, Any]] = {
    "base": {},  # Wav2Vec2Config's defaults are wav2vec 2.0 base
    "large": dict(
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        conv_bias=True,
        codevector_dim=768,
        proj_codevector_dim=768,
    ),
    "tiny": dict(
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=256,
        conv_dim=[64] * 7,
        num_conv_pos_embeddings=32,
        num_conv_pos_embedding_groups=4,
        num_codevectors_per_group=32,
        num_codevector_groups=2,
        codevector_dim=64,
        proj_codevector_dim=64,
    ),
}


@dataclass
class TrainerConfig:
    """What pretraining and fine-tuning share."""

    output_dir: str = "runs/train"
    model: dict[str, Any] = field(default_factory=lambda: {"preset": "base"})
    # Audio settings of a model trained from scratch, over its family's defaults: any FeatureSettings
    # field (sampling_rate, do_normalize, return_attention_mask, padding_value). A run from a
    # checkpoint uses the checkpoint's own settings.
    features: dict[str, Any] = field(default_factory=dict)
    learning_rate: float = 5e-4
    max_steps: int = 400_000
    weight_decay: float = 0.01
    clip_norm: float = 10.0
    max_batch_seconds: float = 200.0  # audio per batch (padding included), before accumulation
    accumulation: int = 1
    max_sample_seconds: float = 15.6
    # Audio is decoded and resampled once and kept in memory when it fits in this many GB; larger
    # corpora are decoded batch by batch, by `decode_workers` threads.
    preload_gb: float = 4.0
    decode_workers: int = 2
    precision: str = "auto"  # auto: bf16 on GPUs that have it, else fp16 on GPUs, fp32 on CPUs
    seed: int = 1
    log_every: int = 10
    # Also write the metrics as TensorBoard event files in output_dir/tensorboard (needs the optional
    # extra: pip install 'w2v-asr[tensorboard]'); metrics.jsonl is written either way.
    tensorboard: bool = False
    save_every: int = 1000
    keep_checkpoints: int = 2


@dataclass
class PretrainConfig(TrainerConfig):
    manifest: str = ""  # audio to learn from (text, if any, is ignored)
    output_dir: str = "runs/pretrain"
    # "wav2vec2"; or "wav2vec" / "vq-wav2vec" (training/wav2vec1_pretrain.py), whose `model` section takes
    # fairseq's wav2vec options (task options included) and which ignore the wav2vec 2.0 settings below.
    objective: str = "wav2vec2"
    vq_loss_weight: float = 1.0  # vq-wav2vec: weight of the quantizer's penalty (fairseq's loss_weights)
    # vq-wav2vec k-means, N > 0: the codebook starts on encoder frames of the first batch, and every N
    # updates codewords unused since the last N are re-drawn from the current batch's frames (0: the
    # reference's near-zero start, which collapses to one codeword per group in short runs).
    kmeans_restart_every: int = 0
    # The objective (paper values).
    mask_prob: float = 0.65
    mask_length: int = 10
    # Spans each utterance gets at the least: on ~0.5 s clips (25 frames) two spans of 10 mask most of it.
    mask_min_spans: int = 2
    num_negatives: int = 100
    logit_temperature: float = 0.1
    diversity_weight: float = 0.1
    feature_penalty_weight: float = 10.0
    feature_grad_mult: float = 0.1
    gumbel_start: float = 2.0
    gumbel_end: float = 0.5
    gumbel_decay: float = 0.999995
    # Optimisation: warm-up, then linear decay.
    warmup_steps: int = 32_000
    max_sample_seconds: float = 15.6  # longer recordings are randomly cropped
    min_sample_seconds: float = 2.0


@dataclass
class FinetuneConfig(TrainerConfig):
    train_manifest: str = ""  # labelled audio (entries without text are skipped); several: comma-separated
    eval_manifest: str = ""  # scored every eval_every steps; the best checkpoint is kept in output_dir/best; several:
    # comma-separated (scored as one set)
    output_dir: str = "runs/finetune"
    # Where to start: a pretrained or fine-tuned checkpoint (folder, Hub id or fairseq .pt), or "" for
    # from scratch. With a checkpoint, `model` only overrides its settings (dropouts, layerdrop...).
    init: str = ""
    # A vocab.json (or a folder holding one); "english" for a-z and the apostrophe (whatever the transcripts
    # hold); "" uses the init checkpoint's, else the training transcripts' characters.
    vocab: str = ""
    freeze_feature_encoder: bool = True
    freeze_transformer_steps: int = 10_000  # only the CTC head trains for the first N updates
    # SpecAugment-style masking (paper, 100 h: 0.5 / 10 time, 0.25 / 64 channels); saved in the model
    # config as mask_time_* and mask_feature_*. Each utterance gets at least `*_min_masks` spans, so on
    # short utterances the minimum, not the probability, sets how much is masked.
    mask_time_prob: float = 0.5
    mask_time_length: int = 10
    mask_time_min_masks: int = 2
    mask_channel_prob: float = 0.25
    mask_channel_length: int = 64
    mask_channel_min_masks: int = 0
    # Augmentation of the training audio (training/augment.py): e.g. {speed: [0.9, 1.1], noise_snr_db: [10, 40]}.
    augment: dict[str, Any] = field(default_factory=dict)
    # Speech without the model's words (e.g. English sentences, for a digits model) that augment's "talk"
    # noise is made of: up to 256 of its utterances, drawn with the run's seed (one manifest, or several
    # comma-separated).
    talk_manifest: str = ""
    # Optimisation: AdamW. lr_schedule "tri_stage" (the paper's: warm-up / hold / exponential decay as
    # fractions of max_steps, lr_phases) or "linear" (warmup_steps of linear warm-up, then linear decay to 0).
    learning_rate: float = 5e-5
    max_steps: int = 20_000
    lr_schedule: str = "tri_stage"
    lr_phases: list[float] = field(default_factory=lambda: [0.1, 0.4, 0.5])
    init_lr_scale: float = 0.01
    final_lr_scale: float = 0.05
    warmup_steps: int = 0  # lr_schedule: linear
    weight_decay: float = 0.0  # on weight matrices only: never on biases, norms, or the mask embedding
    # An exponential moving average of the weights (e.g. 0.999; 0: none) is what is evaluated and kept as
    # best: smoother than the last update's weights, it usually generalises better on small data.
    ema_decay: float = 0.0
    # The loss: CTC summed over each utterance's frames, divided by its target length ("mean", per
    # character: as torch's and transformers' "mean") or not ("sum", per utterance), averaged over the
    # batch. clip_norm bounds the gradient of that loss (L2 over all parameters).
    ctc_loss_reduction: str = "mean"
    max_batch_utterances: int = 0  # and at most this many utterances per batch (0: no limit)
    batch_by_length: bool = True  # batches of similar lengths (little padding); false: drawn at random
    length_pool: int = 0  # batch_by_length false: sort each pool of this many random utterances by length (0: don't)
    max_sample_seconds: float = 30.0  # longer utterances are left out
    # Evaluation: WER/CER greedy, and with beam search when an LM is given (then its WER picks the best),
    # within `lexicon`'s words if given (a file, one word per line, as a model folder's lexicon.txt): give
    # the LM, weights and lexicon the model will ship with, and checkpoints are picked as the server decodes.
    eval_every: int = 1000
    lm: str = ""
    lexicon: str = ""
    beam_width: int = BEAM_WIDTH
    lm_alpha: float = LM_ALPHA
    lm_beta: float = LM_BETA


# Settings that shape the learning-rate schedule: a resumed run keeps its own unless asked (--reschedule).
SCHEDULE_SETTINGS = (
    "learning_rate",
    "max_steps",
    "lr_schedule",
    "lr_phases",
    "init_lr_scale",
    "final_lr_scale",
    "warmup_steps",
)


def model_config(section: dict[str, Any]) -> Wav2Vec2Config:
    values = dict(section)
    preset = values.pop("preset", "base")
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose one of {', '.join(PRESETS)}")
    known = {f.name for f in dataclasses.fields(Wav2Vec2Config)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown model settings: {', '.join(unknown)}")
    return Wav2Vec2Config(**{**PRESETS[preset], **values})


def feature_settings(section: dict[str, Any], architecture: Wav2Vec2Config) -> FeatureSettings:
    """The audio settings of a model trained from scratch: its family's, with the config's `features` over them."""
    known = {f.name for f in dataclasses.fields(FeatureSettings)}
    unknown = sorted(set(section) - known)
    if unknown:
        raise ValueError(f"unknown features settings: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return dataclasses.replace(FeatureSettings.for_model(architecture), **section)


def load_config(kind: type, path: Path | None, overrides: list[str]):
    """The dataclass `kind` from a YAML/JSON file (optional) with `key=value` overrides applied."""
    values: dict[str, Any] = {}
    if path is not None:
        values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a config is a mapping of settings")
    for override in overrides:
        key, separator, text = override.partition("=")
        if not separator or not key:
            raise ValueError(f"override {override!r}: expected key=value")
        target = values
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = yaml.safe_load(text)
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown settings: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    for item in dataclasses.fields(kind):
        # YAML reads 1e-3 (no dot) as text; numbers given for float settings become floats.
        if item.type == "float" and item.name in values and not isinstance(values[item.name], bool):
            try:
                values[item.name] = float(values[item.name])
            except (TypeError, ValueError):
                raise ValueError(f"{item.name}: expected a number, got {values[item.name]!r}") from None
    config = kind(**values)
    if config.tensorboard:  # fail now, not after loading data
        require_tensorboard()
    if getattr(config, "objective", "wav2vec2") != "wav2vec2":  # wav2vec (1.0) and vq-wav2vec
        from .wav2vec1_pretrain import check_objective

        check_objective(config)  # fail now, not after loading data
        return config
    feature_settings(config.features, model_config(config.model))  # fail now, not after loading data
    return config


def config_keys(kind: type) -> str:
    """The settings of the config dataclass `kind`, one a line with its type and default (as YAML
    reads it: true, "", [0.1, 0.4, 0.5]), for a command's --help."""
    lines = []
    for item in dataclasses.fields(kind):
        default = item.default_factory() if item.default is dataclasses.MISSING else item.default
        lines.append(f"  {item.name}: {item.type} = {json.dumps(default)}")
    return "\n".join(lines)


def save_config(config, path: Path) -> None:
    path.write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")
