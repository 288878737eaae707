"""Representations of every model family of the wav2vec line, from one utterance's samples.

- wav2vec (1.0): `z` (encoder output) and `c` (context vectors);
- vq-wav2vec: `z` (before quantization), `c` (context over the quantized frames) and `codes`
  (the quantizer's picks, one integer per group);
- wav2vec 2.0: `N`, transformers' `hidden_states[N]` (0: after the positional convolution, then
  one per transformer layer), and `codes` where the checkpoint has its pretraining quantizer.

Every layer comes out time-major: `(frames, dims)` float32, or `(frames, groups)` int64 codes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..audio import normalize
from ..config import Wav2Vec2Config
from .checkpoint import Checkpoint, CheckpointError, load_checkpoint
from .wav2vec1 import Wav2VecConfig
from .wav2vec1_fairseq import Wav2VecCheckpoint, is_wav2vec1_checkpoint, load_wav2vec1_checkpoint
from .wav2vec2 import Wav2Vec2Model

CODES = "codes"


class Representations:
    """A loaded model and the layers it gives; call it on samples at `sampling_rate`."""

    family: str  # "wav2vec", "vq-wav2vec" or "wav2vec 2.0"
    layers: tuple[str, ...]  # the names `__call__` takes
    default_layer: str
    config: Wav2Vec2Config | Wav2VecConfig  # frame arithmetic: samples_per_frame, receptive_field, num_frames
    sampling_rate: int

    def check_layer(self, layer: str) -> str:
        if layer not in self.layers:
            raise ValueError(f"a {self.family} model has no layer {layer!r}; choose one of {', '.join(self.layers)}")
        return layer

    def __call__(self, samples: np.ndarray, layer: str) -> np.ndarray:
        raise NotImplementedError


class Wav2VecRepresentations(Representations):
    """wav2vec (1.0) and vq-wav2vec."""

    def __init__(self, checkpoint: Wav2VecCheckpoint, device: str = "cpu"):
        self.model = checkpoint.model.to(device).eval()
        self.config = checkpoint.config
        self.family = checkpoint.family
        self.layers = ("z", "c", CODES) if checkpoint.config.vq_type != "none" else ("z", "c")
        self.default_layer = "c"
        self.sampling_rate = checkpoint.config.sample_rate
        self.device = device

    @torch.inference_mode()
    def __call__(self, samples: np.ndarray, layer: str) -> np.ndarray:
        self.check_layer(layer)
        if self.config.normalize:  # the task's normalisation: a layer norm over the whole input
            samples = normalize(samples)
        x = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))[None].to(self.device)
        if layer == "z":
            return self.model.feature_extractor(x)[0].transpose(0, 1).cpu().numpy()
        output = self.model(x)
        if layer == CODES:
            return output.quantized.codes[0].cpu().numpy()
        return output.c[0].cpu().numpy()


class Wav2Vec2Representations(Representations):
    """wav2vec 2.0, any checkpoint `load_checkpoint` reads (pretrained, fine-tuned or bare)."""

    def __init__(self, checkpoint: Checkpoint, device: str = "cpu"):
        model = checkpoint.model.to(device).eval()
        self.encoder: Wav2Vec2Model = model.wav2vec2 if hasattr(model, "wav2vec2") else model
        self.quantizer = getattr(model, "quantizer", None)
        self.config = checkpoint.config
        self.features = checkpoint.features
        self.family = "wav2vec 2.0"
        layers = tuple(str(n) for n in range(self.config.num_hidden_layers + 1))
        self.layers = layers + ((CODES,) if self.quantizer is not None else ())
        self.default_layer = layers[-1]
        self.sampling_rate = checkpoint.features.sampling_rate
        self.device = device

    @torch.inference_mode()
    def __call__(self, samples: np.ndarray, layer: str) -> np.ndarray:
        self.check_layer(layer)
        if self.features.do_normalize:
            samples = normalize(samples)
        x = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))[None].to(self.device)
        features, _ = self.encoder.feature_extractor(x)
        hidden, extract_features = self.encoder.feature_projection(features)
        if layer == CODES:
            logits = self.quantizer.weight_proj(extract_features)[0]
            return logits.view(len(logits), self.quantizer.num_groups, -1).argmax(dim=-1).cpu().numpy()
        return hidden_state(self.encoder, hidden, int(layer))[0].cpu().numpy()


def hidden_state(model: Wav2Vec2Model, hidden: torch.Tensor, index: int) -> torch.Tensor:
    """transformers' (5.x) `hidden_states[index]` of the context network, from the projected features
    (batch, frames, hidden): the input to layer `index` (0: after the positional convolution, and in the
    post-norm family its layer norm), or for the last index the last layer's output. In the pre-norm
    (large) family that is before the final layer norm, as transformers 5 records it; transformers 4
    put the normalised output there. Layers past `index` are not run."""
    encoder = model.encoder
    x = hidden + encoder.pos_conv_embed(hidden)
    if not encoder.pre_norm:
        x = encoder.layer_norm(x)
    for layer in encoder.layers[:index]:
        x = layer(x, None)
    return x


def load_representations(reference: str | Path, device: str = "cpu") -> Representations:
    """Any model of the family: a fairseq wav2vec (1.0) / vq-wav2vec checkpoint, or anything
    `load_checkpoint` reads (wav2vec 2.0). Raises CheckpointError (a ValueError) or ModelNotFoundError."""
    path = Path(reference).expanduser()
    if path.is_dir() and (path / "model.pt").is_file() and is_wav2vec1_checkpoint(path / "model.pt"):
        path = path / "model.pt"  # a checkpoint folder of `python -m training pretrain` (objective wav2vec...)
    if path.is_file() and is_wav2vec1_checkpoint(path):
        return Wav2VecRepresentations(load_wav2vec1_checkpoint(path), device)
    weights = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
    if path.is_dir() and (path / "model.onnx").is_file() and not any((path / name).is_file() for name in weights):
        raise CheckpointError(
            f"'{reference}' is an exported ONNX folder: it computes only the CTC output; give "
            "the PyTorch checkpoint it was exported from"
        )
    return Wav2Vec2Representations(load_checkpoint(reference), device)
