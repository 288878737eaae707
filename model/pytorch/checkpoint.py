"""Checkpoint I/O: Hugging Face folders and Hub references, fairseq checkpoints, and saving.

A loaded checkpoint carries everything inference needs: the model, its config, the
vocabulary and the audio front-end settings. Saved folders load in transformers 4.x and 5.x
as `Wav2Vec2ForCTC` (or `Wav2Vec2ForPreTraining`) with a `Wav2Vec2Processor`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..config import FeatureSettings, Wav2Vec2Config
from ..ctc import CTCVocabulary
from ..hub import resolve_model
from ..package import package_checkpoint
from .wav2vec2 import Wav2Vec2ForCTC, Wav2Vec2ForPreTraining, Wav2Vec2Model

# The positional convolution's weight norm is stored under two spellings: the parametrization
# API's names (ours, and transformers' in memory) and the older `weight_g` / `weight_v`.
_WEIGHT_NORM_KEYS = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}
# Pretraining parts a CTC checkpoint may still carry; inference never uses them.
_PRETRAINING_PREFIXES = ("quantizer.", "project_hid.", "project_q.")

Model = Wav2Vec2ForCTC | Wav2Vec2ForPreTraining | Wav2Vec2Model


class CheckpointError(ValueError):
    """A checkpoint that is missing files or weights, or does not fit its config."""


@dataclass
class Checkpoint:
    model: Model
    config: Wav2Vec2Config
    features: FeatureSettings
    vocab: CTCVocabulary | None = None

    @property
    def architecture(self) -> str:
        return type(self.model).__name__

    def save(self, folder: str | Path) -> Path:
        """Write a Hugging Face model folder: config, weights, preprocessor and tokenizer settings."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.config.to_json_file(folder / "config.json", self.architecture)
        state = {_legacy_weight_norm_key(key): tensor.detach().contiguous().cpu()
                 for key, tensor in self.model.state_dict().items()}
        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
        self.features.save(folder)
        if self.vocab is not None:
            self.vocab.save(folder)
        return folder


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
        raise CheckpointError(f"'{reference}' has no CTC head (it is a {checkpoint.architecture} checkpoint); "
                              "fine-tune it before transcribing with it")
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


def build_checkpoint(config: Wav2Vec2Config, state: dict[str, torch.Tensor], features: FeatureSettings,
                     vocab: CTCVocabulary | None, source: str) -> Checkpoint:
    """Pick the model class the weights describe, and load them strictly."""
    if "lm_head.weight" in state:
        config.vocab_size = state["lm_head.weight"].shape[0]
        model: Model = Wav2Vec2ForCTC(config)
        state = {key: value for key, value in state.items() if not key.startswith(_PRETRAINING_PREFIXES)}
    elif "quantizer.codevectors" in state:
        model = Wav2Vec2ForPreTraining(config)
    else:
        model = Wav2Vec2Model(config)
        state = {key.removeprefix("wav2vec2."): value for key, value in state.items()
                 if not key.startswith(_PRETRAINING_PREFIXES)}
    expected = model.state_dict()
    # The mask embedding only matters for training; transformers tolerates it missing or extra too.
    optional = {key for key in set(expected) ^ set(state) if key.endswith("masked_spec_embed")}
    missing = sorted(set(expected) - set(state) - optional)
    unexpected = sorted(set(state) - set(expected) - optional)
    state = {key: value for key, value in state.items() if key in expected}
    if missing or unexpected:
        raise CheckpointError(f"the weights in '{source}' do not match its config: "
                              f"missing {_few(missing)}; unexpected {_few(unexpected)}")
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise CheckpointError(f"the weights in '{source}' do not match its config: {key} has shape "
                                  f"{tuple(tensor.shape)}, the config implies {tuple(expected[key].shape)}")
    model.load_state_dict({key: tensor.float() for key, tensor in state.items()}, strict=False)
    model.eval()
    if vocab is not None and len(vocab) > config.vocab_size:
        raise CheckpointError(f"'{source}': vocab.json has {len(vocab)} tokens but the CTC head only "
                              f"{config.vocab_size} outputs")
    return Checkpoint(model, config, features, vocab)


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
    return f"{head}.{_WEIGHT_NORM_KEYS[last]}" if last in _WEIGHT_NORM_KEYS else key


def _legacy_weight_norm_key(key: str) -> str:
    for legacy, current in _WEIGHT_NORM_KEYS.items():
        if key.endswith(current):
            return key.removesuffix(current) + legacy
    return key


def _few(keys: list[str]) -> str:
    if not keys:
        return "none"
    shown = ", ".join(keys[:4])
    return f"{shown} and {len(keys) - 4} more" if len(keys) > 4 else shown
