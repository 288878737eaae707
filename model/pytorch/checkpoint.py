"""Checkpoint I/O: Hugging Face folders and Hub references, fairseq checkpoints, and saving.

A loaded checkpoint carries everything inference needs: the model, its config, the
vocabulary and the audio front-end settings. Saved folders load in transformers 4.x and 5.x
as `Wav2Vec2ForCTC` (or `Wav2Vec2ForPreTraining`) with a `Wav2Vec2Processor`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..config import FeatureSettings, Wav2Vec2Config
from ..ctc import CTCVocabulary
from ..hub import resolve_model
from ..package import package_checkpoint
from .checkpoint_types import WEIGHT_NORM_KEYS, Checkpoint, CheckpointError, build_checkpoint
from .wav2vec2 import Wav2Vec2ForCTC

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "build_checkpoint",
    "load_checkpoint",
    "load_ctc_checkpoint",
    "load_hf_folder",
]


def load_checkpoint(reference: str | Path, dictionary: str | Path | None = None) -> Checkpoint:
    """Load a Hugging Face folder, a Hub reference or a fairseq `.pt` checkpoint.

    `dictionary` is a fairseq `dict.ltr.txt`, needed only for fine-tuned fairseq checkpoints
    when it does not lie beside the checkpoint.
    """
    path = package_checkpoint(resolve_model(reference))
    if path.is_file():
        from .fairseq import load_fairseq_checkpoint

        return load_fairseq_checkpoint(path, dictionary)
    return load_hf_folder(path)


def load_ctc_checkpoint(reference: str | Path) -> Checkpoint:
    """Like `load_checkpoint`, for transcription: refuses checkpoints without a CTC head and vocabulary."""
    checkpoint = load_checkpoint(reference)
    if not isinstance(checkpoint.model, Wav2Vec2ForCTC):
        raise CheckpointError(
            f"'{reference}' has no CTC head (it is a {checkpoint.architecture} checkpoint); "
            "fine-tune it before transcribing with it"
        )
    if checkpoint.vocab is None:
        raise CheckpointError(f"'{reference}' has a CTC head but no vocab.json")
    return checkpoint


def load_hf_folder(folder: Path) -> Checkpoint:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"'{folder}' is not a model folder: it has no config.json")
    config = Wav2Vec2Config.from_json_file(config_path)
    state = {_current_weight_norm_key(key): tensor for key, tensor in _read_weights(folder).items()}
    if not any(key.startswith("wav2vec2.") for key in state):  # saved from a bare Wav2Vec2Model
        state = {f"wav2vec2.{key}": tensor for key, tensor in state.items()}
    features = FeatureSettings.from_folder(folder, config)
    vocab = CTCVocabulary.from_folder(folder) if (folder / "vocab.json").is_file() else None
    return build_checkpoint(config, state, features, vocab, source=str(folder))


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """model.safetensors or pytorch_model.bin, whole or sharded with an index file."""
    for name, read in (("model.safetensors", load_file), ("pytorch_model.bin", _load_torch_file)):
        if (folder / name).is_file():
            return read(folder / name)
        index = folder / f"{name}.index.json"
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(read(folder / shard))
            return state
    raise CheckpointError(f"'{folder}' has no weights: expected model.safetensors or pytorch_model.bin")


def _load_torch_file(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _current_weight_norm_key(key: str) -> str:
    head, _, last = key.rpartition(".")
    return f"{head}.{WEIGHT_NORM_KEYS[last]}" if last in WEIGHT_NORM_KEYS else key
