"""Shared fixtures: tiny random wav2vec 2.0 models built and saved offline by transformers,
and the real speech in ../shared/data."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the network

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
REALSPEECH = DATA / "realspeech"

# A character vocabulary like facebook/wav2vec2-base-960h's.
VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", *"ETAONIHSRDLUMWCFGYPBVK'XJQZ"]

# Tiny versions of the two architecture families; the strides are the paper's, so real audio
# at 16 kHz gives one frame per 20 ms as with the full-size models.
FAMILIES = {
    "base": dict(feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False,
                 num_conv_pos_embeddings=16, return_attention_mask=False),
    "large": dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True,
                  num_conv_pos_embeddings=15, return_attention_mask=True),
}


def tiny_hf_config(family: str, **overrides):
    from transformers import Wav2Vec2Config

    settings = {key: value for key, value in FAMILIES[family].items() if key != "return_attention_mask"}
    return Wav2Vec2Config(
        vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        conv_dim=[16] * 7, num_conv_pos_embedding_groups=4, num_codevectors_per_group=8, num_codevector_groups=2,
        codevector_dim=16, proj_codevector_dim=12, **settings, **overrides,
    )


def save_tiny_hf_model(folder: Path, family: str, architecture: str = "Wav2Vec2ForCTC", seed: int = 0) -> Path:
    """Build a random tiny model with transformers and save it, with its processor, to `folder`."""
    import torch
    import transformers

    torch.manual_seed(seed)
    model = getattr(transformers, architecture)(tiny_hf_config(family)).eval()
    if architecture == "Wav2Vec2ForCTC":
        # Sharper random logits, so greedy paths emit many different characters.
        with torch.no_grad():
            model.lm_head.weight.mul_(40.0)
    model.save_pretrained(folder)
    (folder / "vocab.json").write_text(json.dumps({token: index for index, token in enumerate(VOCAB)}))
    tokenizer = transformers.Wav2Vec2CTCTokenizer(str(folder / "vocab.json"))
    extractor = transformers.Wav2Vec2FeatureExtractor(
        sampling_rate=16000, do_normalize=True, return_attention_mask=FAMILIES[family]["return_attention_mask"])
    transformers.Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session", params=sorted(FAMILIES))
def family(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def hf_ctc_folder(tmp_path_factory, family) -> Path:
    return save_tiny_hf_model(tmp_path_factory.mktemp(f"hf-ctc-{family}"), family)


@pytest.fixture(scope="session")
def realspeech() -> list[dict[str, str]]:
    """Rows of the real-speech manifest: audio path, reference text, sample rate, ..."""
    with open(REALSPEECH / "manifest.tsv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    for row in rows:
        row["path"] = str(REALSPEECH / row["audio"])
    return rows
