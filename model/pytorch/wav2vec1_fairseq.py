"""fairseq checkpoints of wav2vec (1.0) and vq-wav2vec: read, and written back the way fairseq saves.

Both of fairseq's layouts load: `{"args": Namespace(arch="wav2vec", ...), "model": ...}` (the
released `wav2vec_large.pt`, `vq-wav2vec.pt`, `vq-wav2vec_kmeans.pt`) and `{"cfg": {"model":
{"_name": "wav2vec", ...}, "task": {...}}, "model": ...}` (fairseq >= 0.10). fairseq is not
needed: options missing from a checkpoint take fairseq 0.12's defaults, and weight names are
translated by a table built from the architecture, so every weight is accounted for.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoint_types import CheckpointError
from .fairseq import _as_dict, _configs, _read
from .wav2vec1 import Wav2VecConfig, Wav2VecModel

ARCHITECTURE = "wav2vec"  # fairseq's registered name, for wav2vec (1.0) and vq-wav2vec alike
_AUDIO_TASK = "audio_pretraining"


@dataclass
class Wav2VecCheckpoint:
    model: Wav2VecModel
    config: Wav2VecConfig
    source: str

    @property
    def family(self) -> str:
        return "vq-wav2vec" if self.config.vq_type != "none" else "wav2vec"


def fairseq_architecture(saved: dict[str, Any]) -> str | None:
    """The model name a fairseq checkpoint records ("wav2vec", "wav2vec2", ...), or None."""
    if saved.get("cfg"):
        return _as_dict(_as_dict(saved["cfg"]).get("model")).get("_name")
    if saved.get("args") is not None:
        return _as_dict(saved["args"]).get("arch")
    return None


def is_wav2vec1_checkpoint(path: str | Path) -> bool:
    """True for a fairseq file recording the `wav2vec` architecture; False for anything else (or unreadable)."""
    try:
        return fairseq_architecture(_read(Path(path))) == ARCHITECTURE
    except CheckpointError:
        return False


def load_wav2vec1_checkpoint(path: str | Path) -> Wav2VecCheckpoint:
    """A fairseq wav2vec (1.0) or vq-wav2vec checkpoint as our model, in eval mode.
    CheckpointError (a ValueError) names what does not fit."""
    path = Path(path)
    saved = _read(path)
    if fairseq_architecture(saved) != ARCHITECTURE:
        raise CheckpointError(
            f"'{path}' is not a wav2vec (1.0) / vq-wav2vec checkpoint: it records the "
            f"{fairseq_architecture(saved)!r} architecture"
        )
    model_cfg, task_cfg = _configs(saved, path)
    criterion = _as_dict(_as_dict(saved["cfg"]).get("criterion")) if saved.get("cfg") else model_cfg
    try:
        config = config_from_fairseq(model_cfg, task_cfg, criterion)
        model = Wav2VecModel(config)
    except (ValueError, SyntaxError) as error:
        raise CheckpointError(f"'{path}': {error}") from None
    state = _from_fairseq_names(saved["model"], model, str(path))
    model.load_state_dict({key: tensor.float() for key, tensor in state.items()})
    return Wav2VecCheckpoint(model.eval(), config, str(path))


def config_from_fairseq(
    model_cfg: dict[str, Any], task_cfg: dict[str, Any], criterion_cfg: dict[str, Any] | None = None
) -> Wav2VecConfig:
    """Our config from fairseq's model, task and criterion options (a flat namespace gives all three)."""
    known = {item.name for item in dataclasses.fields(Wav2VecConfig)} - {"sample_rate", "normalize", "infonce"}
    values = {
        key: value
        for key, value in model_cfg.items()
        if key in known and value is not None and not _interpolation(value)
    }
    if "infonce" in (criterion_cfg or {}) and not _interpolation(criterion_cfg["infonce"]):
        values["infonce"] = bool(criterion_cfg["infonce"])
    values["sample_rate"] = int(task_cfg.get("sample_rate", 16000))
    values["normalize"] = bool(task_cfg.get("normalize", False))
    if values.get("vq_type") is None:
        values.pop("vq_type", None)
    return Wav2VecConfig(**values)


def _interpolation(value: Any) -> bool:
    """omegaconf's `${criterion.infonce}`-style references left unresolved in a saved config."""
    return isinstance(value, str) and value.startswith("${")


def fairseq_names(config: Wav2VecConfig) -> dict[str, str]:
    """Our weight name -> fairseq's, for every weight of `config`'s model."""
    names: dict[str, str] = {}
    norm_params = ("weight", "bias") if not config.non_affine_group_norm else ()
    for i in range(len(config.conv_feature_layers)):
        names[f"feature_extractor.layers.{i}.conv.weight"] = f"feature_extractor.conv_layers.{i}.0.weight"
        for p in norm_params:
            names[f"feature_extractor.layers.{i}.norm.{p}"] = f"feature_extractor.conv_layers.{i}.2.{p}"
    if config.aggregator == "gru":
        for p in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            names[f"aggregator.gru.{p}"] = f"feature_aggregator.1.{p}"
    else:
        width = config.encoder_dim
        for i, (dim, _, _) in enumerate(config.conv_aggregator_layers):
            for p in ("weight",) + (() if config.no_conv_bias else ("bias",)):
                names[f"aggregator.layers.{i}.conv.{p}"] = f"feature_aggregator.conv_layers.{i}.1.{p}"
            for p in norm_params:
                names[f"aggregator.layers.{i}.norm.{p}"] = f"feature_aggregator.conv_layers.{i}.3.{p}"
            if config.skip_connections_agg and width != dim:
                names[f"aggregator.skips.{i}.weight"] = f"feature_aggregator.residual_proj.{i}.weight"
            width = dim
    if config.vq_type == "gumbel":
        names["quantizer.codebook"] = "vector_quantizer.vars"
        depth = config.vq_depth
        for j in range(depth - 1):
            for p in ("weight", "bias"):
                names[f"quantizer.logits.hidden.{j}.{p}"] = f"vector_quantizer.weight_proj.{j}.0.{p}"
        for p in ("weight", "bias"):
            names[f"quantizer.logits.output.{p}"] = (
                f"vector_quantizer.weight_proj.{depth - 1}.{p}" if depth > 1 else f"vector_quantizer.weight_proj.{p}"
            )
    elif config.vq_type == "kmeans":
        names["quantizer.codebook"] = "vector_quantizer.embedding"
        names["quantizer.projection.conv.weight"] = "vector_quantizer.projection.0.weight"
        for p in ("weight", "bias"):
            names[f"quantizer.projection.norm.{p}"] = f"vector_quantizer.projection.1.{p}"
    for p in ("weight", "bias"):
        names[f"prediction.{p}"] = f"wav2vec_predictions.project_to_steps.{p}"
    return names


def _from_fairseq_names(state: dict[str, torch.Tensor], model: Wav2VecModel, source: str) -> dict[str, torch.Tensor]:
    config = model.config
    theirs_to_ours = {theirs: ours for ours, theirs in fairseq_names(config).items()}
    # project_features="new" trains a second context network for the targets; features never use it.
    state = {key: value for key, value in state.items() if not key.startswith("project_features.")}
    missing = sorted(set(theirs_to_ours) - set(state))
    unexpected = sorted(set(state) - set(theirs_to_ours))
    if missing or unexpected:
        raise CheckpointError(
            f"the weights in '{source}' do not match its wav2vec options: missing "
            f"{_few(missing)}; unexpected {_few(unexpected)}"
        )
    renamed = {theirs_to_ours[key]: tensor for key, tensor in state.items()}
    shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    for key, tensor in renamed.items():
        if tuple(tensor.shape) != shapes[key]:
            raise CheckpointError(
                f"the weights in '{source}' do not match its wav2vec options: "
                f"{fairseq_names(config)[key]} has shape {tuple(tensor.shape)}, the options "
                f"imply {shapes[key]}"
            )
    return renamed


def save_wav2vec1_checkpoint(model: Wav2VecModel, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write `model` as fairseq >= 0.10 does (`cfg` + fairseq's weight names): this package and
    fairseq both load it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    values = model.config.to_dict()
    task = {"_name": _AUDIO_TASK, "sample_rate": values.pop("sample_rate"), "normalize": values.pop("normalize")}
    infonce = values["infonce"]
    cfg = {
        "model": {"_name": ARCHITECTURE, **values},
        "task": task,
        "criterion": {"_name": "wav2vec", "infonce": infonce},
    }
    names = fairseq_names(model.config)
    state = {names[key]: tensor.detach().cpu().contiguous() for key, tensor in model.state_dict().items()}
    torch.save({"cfg": cfg, "model": state, **(extra or {})}, path)
    return path


def _few(keys: list[str]) -> str:
    if not keys:
        return "none"
    shown = ", ".join(keys[:4])
    return f"{shown} and {len(keys) - 4} more" if len(keys) > 4 else shown
