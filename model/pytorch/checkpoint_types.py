"""What a loaded checkpoint is, shared by every loader (Hugging Face folders in `checkpoint`, fairseq
files in `fairseq`): the model with its config, vocabulary and audio settings, the error a bad
checkpoint raises, and the one place weights become a model (the class the weights describe,
loaded strictly). In a module of its own so that the loaders import it, and not each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..config import FeatureSettings, Wav2Vec2Config
from ..ctc import CTCVocabulary
from .wav2vec2 import Wav2Vec2ForCTC, Wav2Vec2ForPreTraining, Wav2Vec2Model

# The positional convolution's weight norm is stored under two spellings: the parametrization
# API's names (ours, and transformers' in memory) and the older `weight_g` / `weight_v`.
WEIGHT_NORM_KEYS = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}
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
        state = {
            _legacy_weight_norm_key(key): tensor.detach().contiguous().cpu()
            for key, tensor in self.model.state_dict().items()
        }
        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
        self.features.save(folder)
        if self.vocab is not None:
            self.vocab.save(folder)
        return folder


def build_checkpoint(
    config: Wav2Vec2Config,
    state: dict[str, torch.Tensor],
    features: FeatureSettings,
    vocab: CTCVocabulary | None,
    source: str,
) -> Checkpoint:
    """Pick the model class the weights describe, and load them strictly."""
    if "lm_head.weight" in state:
        config.vocab_size = state["lm_head.weight"].shape[0]
        model: Model = Wav2Vec2ForCTC(config)
        state = {key: value for key, value in state.items() if not key.startswith(_PRETRAINING_PREFIXES)}
    elif "quantizer.codevectors" in state:
        model = Wav2Vec2ForPreTraining(config)
    else:
        model = Wav2Vec2Model(config)
        state = {
            key.removeprefix("wav2vec2."): value
            for key, value in state.items()
            if not key.startswith(_PRETRAINING_PREFIXES)
        }
    expected = model.state_dict()
    # The mask embedding only matters for training; transformers tolerates it missing or extra too.
    optional = {key for key in set(expected) ^ set(state) if key.endswith("masked_spec_embed")}
    missing = sorted(set(expected) - set(state) - optional)
    unexpected = sorted(set(state) - set(expected) - optional)
    state = {key: value for key, value in state.items() if key in expected}
    if missing or unexpected:
        raise CheckpointError(
            f"the weights in '{source}' do not match its config: missing {_few(missing)}; unexpected {_few(unexpected)}"
        )
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise CheckpointError(
                f"the weights in '{source}' do not match its config: {key} has shape "
                f"{tuple(tensor.shape)}, the config implies {tuple(expected[key].shape)}"
            )
    model.load_state_dict({key: tensor.float() for key, tensor in state.items()}, strict=False)
    model.eval()
    if vocab is not None and len(vocab) > config.vocab_size:
        raise CheckpointError(
            f"'{source}': vocab.json has {len(vocab)} tokens but the CTC head only {config.vocab_size} outputs"
        )
    return Checkpoint(model, config, features, vocab)


def _legacy_weight_norm_key(key: str) -> str:
    for legacy, current in WEIGHT_NORM_KEYS.items():
        if key.endswith(current):
            return key.removesuffix(current) + legacy
    return key


def _few(keys: list[str]) -> str:
    if not keys:
        return "none"
    shown = ", ".join(keys[:4])
    return f"{shown} and {len(keys) - 4} more" if len(keys) > 4 else shown
