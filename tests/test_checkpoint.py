"""Checkpoint I/O: Hugging Face folders (both weight-norm spellings), saving for transformers 4.x
and 5.x, fairseq checkpoints, Hub references, and clear errors for broken checkpoints."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from model.hub import ModelNotFoundError, resolve_model
from model.pytorch.checkpoint import CheckpointError, load_checkpoint
from model.pytorch.wav2vec2 import Wav2Vec2ForCTC, Wav2Vec2ForPreTraining

from conftest import FAMILIES, REPO, VOCAB, save_tiny_hf_model

TOLERANCE = 1e-5
AUDIO = torch.randn(2, 20000, generator=torch.Generator().manual_seed(5))


def hf_logits(folder: Path) -> torch.Tensor:
    with torch.no_grad():
        return transformers.Wav2Vec2ForCTC.from_pretrained(folder).eval()(AUDIO).logits


def our_logits(reference, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return load_checkpoint(reference, **kwargs).model(AUDIO)


def max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.max(torch.abs(a - b)).item()


def test_both_weight_norm_spellings_load(hf_ctc_folder, tmp_path):
    """transformers writes `parametrizations.weight.original0/1`; older checkpoints `weight_g/weight_v`."""
    state = load_file(hf_ctc_folder / "model.safetensors")
    current = [key for key in state if "pos_conv_embed.conv" in key and "weight" in key]
    legacy = {
        re.sub(
            r"parametrizations\.weight\.original0$",
            "weight_g",
            re.sub(r"parametrizations\.weight\.original1$", "weight_v", key),
        ): value
        for key, value in state.items()
    }
    assert set(legacy) != set(state), f"expected the current spelling in a fresh save, got {current}"
    legacy_folder = tmp_path / "legacy"
    shutil.copytree(hf_ctc_folder, legacy_folder)
    save_file(legacy, legacy_folder / "model.safetensors", metadata={"format": "pt"})
    assert max_difference(our_logits(legacy_folder), our_logits(hf_ctc_folder)) == 0.0
    assert max_difference(our_logits(legacy_folder), hf_logits(hf_ctc_folder)) < TOLERANCE


def test_pytorch_bin_weights_load(hf_ctc_folder, tmp_path):
    folder = tmp_path / "bin"
    shutil.copytree(hf_ctc_folder, folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    assert max_difference(our_logits(folder), hf_logits(hf_ctc_folder)) < TOLERANCE


def test_round_trip_through_our_save_reloads_in_transformers_5(hf_ctc_folder, tmp_path):
    saved = load_checkpoint(hf_ctc_folder).save(tmp_path / "saved")
    assert transformers.__version__.startswith("5.")
    assert max_difference(hf_logits(saved), hf_logits(hf_ctc_folder)) < TOLERANCE
    processor = transformers.Wav2Vec2Processor.from_pretrained(saved)
    original = transformers.Wav2Vec2Processor.from_pretrained(hf_ctc_folder)
    ids = hf_logits(saved).argmax(-1)
    assert processor.batch_decode(ids) == original.batch_decode(ids)
    assert processor.feature_extractor.return_attention_mask == original.feature_extractor.return_attention_mask
    assert max_difference(our_logits(saved), hf_logits(hf_ctc_folder)) < TOLERANCE


TRANSFORMERS4_SCRIPT = """
import json, sys
import numpy as np, torch, transformers
assert transformers.__version__.startswith("4."), transformers.__version__
folder, audio_path, out_path = sys.argv[1:]
model = transformers.Wav2Vec2ForCTC.from_pretrained(folder).eval()
processor = transformers.Wav2Vec2Processor.from_pretrained(folder)
with torch.no_grad():
    logits = model(torch.from_numpy(np.load(audio_path))).logits
np.save(out_path, logits.numpy())
print(json.dumps({"version": transformers.__version__, "text": processor.batch_decode(logits.argmax(-1))}))
"""


def test_saved_folder_loads_in_transformers_4(hf_ctc_folder, tmp_path):
    site = Path(sys.prefix) / "transformers4"
    if not site.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{site} is missing: `make setup-dev` installs transformers 4.x there")
        pytest.skip("transformers 4.x is not installed beside the environment (make setup-dev)")
    checkpoint = load_checkpoint(hf_ctc_folder)
    saved = checkpoint.save(tmp_path / "saved")
    np.save(tmp_path / "audio.npy", AUDIO.numpy())
    environment = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            TRANSFORMERS4_SCRIPT,
            str(saved),
            str(tmp_path / "audio.npy"),
            str(tmp_path / "logits.npy"),
        ],
        capture_output=True,
        text=True,
        env=environment,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["version"].startswith("4.")
    logits = torch.from_numpy(np.load(tmp_path / "logits.npy"))
    ours = our_logits(saved)
    assert max_difference(logits, ours) < TOLERANCE
    assert report["text"] == [checkpoint.vocab.greedy_decode(row) for row in ours.numpy()]


def test_pretraining_checkpoint_round_trips(tmp_path, family):
    source = save_tiny_hf_model(tmp_path / "source", family, architecture="Wav2Vec2ForPreTraining")
    saved = load_checkpoint(source).save(tmp_path / "saved")
    assert json.loads((saved / "config.json").read_text())["architectures"] == ["Wav2Vec2ForPreTraining"]
    mask = torch.zeros(2, 62, dtype=torch.bool)
    mask[:, 10:20] = True
    with torch.no_grad():
        expected = transformers.Wav2Vec2ForPreTraining.from_pretrained(source).eval()(AUDIO, mask_time_indices=mask)
        reloaded = transformers.Wav2Vec2ForPreTraining.from_pretrained(saved).eval()(AUDIO, mask_time_indices=mask)
    assert max_difference(reloaded.projected_states, expected.projected_states) < TOLERANCE
    assert max_difference(reloaded.projected_quantized_states, expected.projected_quantized_states) < TOLERANCE


# -- fairseq ------------------------------------------------------------------------------------


def fairseq_key(key: str, family: str) -> str:
    """Our (Hugging Face) key -> the key fairseq's own modules give the same weight."""
    norm = "2.1" if FAMILIES[family]["feat_extract_norm"] == "layer" else "2"
    if key.startswith("lm_head."):
        return key.replace("lm_head.", "w2v_encoder.proj.")
    for ours, theirs in (
        (r"\.conv_layers\.(\d+)\.conv\.", r".conv_layers.\1.0."),
        (r"\.conv_layers\.(\d+)\.layer_norm\.", rf".conv_layers.\1.{norm}."),
        (r"^wav2vec2\.feature_projection\.layer_norm\.", "layer_norm."),
        (r"^wav2vec2\.feature_projection\.projection\.", "post_extract_proj."),
        (r"^wav2vec2\.masked_spec_embed$", "mask_emb"),
        (r"pos_conv_embed\.conv\.parametrizations\.weight\.original0", "pos_conv.0.weight_g"),
        (r"pos_conv_embed\.conv\.parametrizations\.weight\.original1", "pos_conv.0.weight_v"),
        (r"pos_conv_embed\.conv\.bias", "pos_conv.0.bias"),
        (r"\.attention\.", ".self_attn."),
        (r"(layers\.\d+)\.layer_norm\.", r"\1.self_attn_layer_norm."),
        (r"feed_forward\.intermediate_dense", "fc1"),
        (r"feed_forward\.output_dense", "fc2"),
        (r"^quantizer\.codevectors$", "quantizer.vars"),
        (r"^project_hid\.", "final_proj."),
        (r"^wav2vec2\.", ""),
    ):
        key = re.sub(ours, theirs, key)
    return key


def fairseq_architecture(family: str) -> dict:
    layer_norm = FAMILIES[family]["feat_extract_norm"] == "layer"
    return {
        "_name": "wav2vec2",
        "extractor_mode": "layer_norm" if layer_norm else "default",
        "conv_feature_layers": "[(16, 10, 5)] + [(16, 3, 2)] * 4 + [(16, 2, 2)] * 2",
        "conv_bias": FAMILIES[family]["conv_bias"],
        "encoder_layers": 2,
        "encoder_embed_dim": 32,
        "encoder_ffn_embed_dim": 48,
        "encoder_attention_heads": 4,
        "activation_fn": "gelu",
        "layer_norm_first": FAMILIES[family]["do_stable_layer_norm"],
        "conv_pos": FAMILIES[family]["num_conv_pos_embeddings"],
        "conv_pos_groups": 4,
        "latent_vars": 8,
        "latent_groups": 2,
        "latent_dim": 16,
        "final_dim": 12,
        "quantize_targets": True,
        "mask_prob": 0.65,
    }


def write_fairseq_checkpoint(path: Path, family: str, hf_model: torch.nn.Module, old_style: bool) -> Path:
    state = {fairseq_key(key, family): value for key, value in hf_model.state_dict().items()}
    finetuned = isinstance(hf_model, transformers.Wav2Vec2ForCTC)
    architecture = fairseq_architecture(family)
    task = {
        "_name": "audio_finetuning" if finetuned else "audio_pretraining",
        "sample_rate": 16000,
        "normalize": FAMILIES[family]["feat_extract_norm"] == "layer",
    }
    if finetuned:
        state = {
            key if key.startswith("w2v_encoder.") else f"w2v_encoder.w2v_model.{key}": value
            for key, value in state.items()
        }
        model_cfg = {
            "_name": "wav2vec_ctc",
            "final_dropout": 0.0,
            "dropout": 0.0,
            "w2v_args": {"model": architecture, "task": task},
        }
        (path.parent / "dict.ltr.txt").write_text("".join(f"{token} {1000 - i}\n" for i, token in enumerate(VOCAB[4:])))
    else:
        model_cfg = architecture
    if old_style:  # fairseq before 0.10: one flat argparse.Namespace of model and task options
        flat = {**task, **model_cfg}
        if finetuned:
            flat["w2v_args"] = argparse.Namespace(**{**task, **architecture})
        saved = {"args": argparse.Namespace(**flat), "model": state}
    else:
        saved = {"cfg": {"model": model_cfg, "task": task}, "args": None, "model": state}
    torch.save(saved, path)
    return path


@pytest.mark.parametrize("old_style", [False, True], ids=["cfg", "args"])
def test_fairseq_finetuned_checkpoint_matches(hf_ctc_folder, tmp_path, family, old_style):
    hf_model = transformers.Wav2Vec2ForCTC.from_pretrained(hf_ctc_folder).eval()
    path = write_fairseq_checkpoint(tmp_path / "checkpoint_best.pt", family, hf_model, old_style)
    checkpoint = load_checkpoint(path)
    assert isinstance(checkpoint.model, Wav2Vec2ForCTC)
    assert checkpoint.vocab.tokens == dict(enumerate(VOCAB))
    assert checkpoint.features.return_attention_mask == FAMILIES[family]["return_attention_mask"]
    with torch.no_grad():
        assert max_difference(checkpoint.model(AUDIO), hf_model(AUDIO).logits) < TOLERANCE
    # Converted to a Hugging Face folder, transformers reads the same model.
    saved = checkpoint.save(tmp_path / "converted")
    assert max_difference(hf_logits(saved), hf_logits(hf_ctc_folder)) < TOLERANCE


def test_fairseq_pretrained_checkpoint_matches(tmp_path, family):
    source = save_tiny_hf_model(tmp_path / "hf", family, architecture="Wav2Vec2ForPreTraining")
    hf_model = transformers.Wav2Vec2ForPreTraining.from_pretrained(source).eval()
    checkpoint = load_checkpoint(write_fairseq_checkpoint(tmp_path / "pretrained.pt", family, hf_model, False))
    assert isinstance(checkpoint.model, Wav2Vec2ForPreTraining)
    mask = torch.zeros(2, 62, dtype=torch.bool)
    mask[:, 5:15] = True
    with torch.no_grad():
        expected = hf_model(AUDIO, mask_time_indices=mask)
        actual = checkpoint.model(AUDIO, mask_time_indices=mask)
    assert max_difference(actual.projected_states, expected.projected_states) < TOLERANCE
    assert max_difference(actual.projected_quantized_states, expected.projected_quantized_states) < TOLERANCE


def test_fairseq_finetuned_without_dictionary_is_refused(hf_ctc_folder, tmp_path):
    hf_model = transformers.Wav2Vec2ForCTC.from_pretrained(hf_ctc_folder)
    path = write_fairseq_checkpoint(tmp_path / "model.pt", "base", hf_model, False)
    (tmp_path / "dict.ltr.txt").unlink()
    with pytest.raises(CheckpointError, match="dict.ltr.txt"):
        load_checkpoint(path)


# -- errors and references ------------------------------------------------------------------------


def test_broken_checkpoints_give_clear_errors(hf_ctc_folder, tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        load_checkpoint(tmp_path)
    no_weights = tmp_path / "no-weights"
    shutil.copytree(hf_ctc_folder, no_weights)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="has no weights"):
        load_checkpoint(no_weights)
    wrong_config = tmp_path / "wrong-config"
    shutil.copytree(hf_ctc_folder, wrong_config)
    config = json.loads((wrong_config / "config.json").read_text())
    config["num_hidden_layers"] = 3
    (wrong_config / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="missing wav2vec2.encoder.layers.2"):
        load_checkpoint(wrong_config)
    not_fairseq = tmp_path / "notes.pt"
    not_fairseq.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="could not read"):
        load_checkpoint(not_fairseq)


def test_hub_reference_resolves_from_the_hub_cache(hf_ctc_folder, tmp_path):
    """A Hub id goes through huggingface_hub; offline, it is served from the Hub cache if there."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--tiny-wav2vec2"
    shutil.copytree(hf_ctc_folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    script = "from model.hub import resolve_model; print(resolve_model('acme/tiny-wav2vec2'))"
    environment = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == repo / "snapshots" / commit


def test_unreachable_hub_reference_names_the_reference(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="'facebook/wav2vec2-base-960h'.*Hugging Face Hub"):
        resolve_model("facebook/wav2vec2-base-960h")
    with pytest.raises(ModelNotFoundError, match="no such file or folder"):
        resolve_model(str(tmp_path / "missing" / "model"))


def test_audio_settings_come_from_the_folder(hf_ctc_folder, tmp_path, family):
    """transformers 5 nests them in processor_config.json; 4.x and our saves write preprocessor_config.json."""
    folder = tmp_path / "settings"
    shutil.copytree(hf_ctc_folder, folder)
    processor = json.loads((folder / "processor_config.json").read_text())
    processor["feature_extractor"].update(sampling_rate=8000, do_normalize=False)
    (folder / "processor_config.json").write_text(json.dumps(processor))
    features = load_checkpoint(folder).features
    assert (features.sampling_rate, features.do_normalize) == (8000, False)
    assert features.return_attention_mask == FAMILIES[family]["return_attention_mask"]
    saved = load_checkpoint(folder).save(tmp_path / "saved")
    assert json.loads((saved / "preprocessor_config.json").read_text())["sampling_rate"] == 8000
    assert load_checkpoint(saved).features == features
