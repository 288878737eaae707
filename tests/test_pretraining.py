"""The wav2vec 2.0 objective: span masking, negatives, temperature schedule, gradient scaling, and a
tiny pretraining run on real unlabeled speech that learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.audio import batch_input_values, load_audio
from model.config import Wav2Vec2Config
from model.pytorch.wav2vec2 import Wav2Vec2ForPreTraining, init_weights
from training.pretraining import (
    PretrainingObjective,
    gumbel_temperature,
    sample_negatives,
    scale_feature_encoder_gradients,
    span_mask,
)

from conftest import DATA, HANG_SECONDS, needs_data, require_data


def tiny_config() -> Wav2Vec2Config:
    return Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        conv_dim=[32] * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        num_codevectors_per_group=16,
        num_codevector_groups=2,
        codevector_dim=32,
        proj_codevector_dim=32,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        layerdrop=0.0,
        feat_quantizer_dropout=0.0,
        conv_bias=False,
    )


def test_span_mask_covers_about_half_the_frames_as_in_the_paper():
    generator = np.random.default_rng(0)
    mask = span_mask([1000] * 20, 1000, 0.65, 10, generator)
    assert 0.42 < mask.mean() < 0.56  # the paper: "about 49% of all time steps are masked"
    short = span_mask([30, 12], 40, 0.65, 10, generator)
    assert not short[0, 30:].any() and not short[1, 12:].any(), "masks stay inside each utterance"
    assert short[1].sum() >= 10 and short[0].sum() >= 10, "at least two spans, overlapping if need be"


def test_negatives_are_other_masked_frames_of_the_same_utterance():
    generator = np.random.default_rng(1)
    mask = span_mask([200, 120], 200, 0.65, 10, generator)
    negatives = sample_negatives(mask, 100, generator)
    for row in range(2):
        for frame in np.flatnonzero(mask[row]):
            drawn = negatives[row, frame]
            assert mask[row, drawn].all() and (drawn != frame).all()
    assert len(np.unique(negatives[0][mask[0]])) > 50, "drawn across the utterance, not from a few frames"


def test_gumbel_temperature_anneals_from_two_to_half():
    assert gumbel_temperature(0) == 2.0
    assert gumbel_temperature(100_000) == pytest.approx(2.0 * 0.999995**100_000)
    assert gumbel_temperature(10_000_000) == 0.5


def test_feature_encoder_gradients_are_scaled():
    torch.manual_seed(0)
    config = tiny_config()
    audio = torch.randn(2, 8000)
    weights = init_weights(Wav2Vec2ForPreTraining(config), config).state_dict()
    grads = []
    for factor in (1.0, 0.1):
        model = Wav2Vec2ForPreTraining(config)
        model.load_state_dict(weights)
        scale_feature_encoder_gradients(model, factor)
        torch.manual_seed(1)  # the same Gumbel noise both times
        loss = PretrainingObjective(model, num_negatives=10)(audio, None, np.random.default_rng(0)).loss
        loss.backward()
        grads.append(
            (
                model.wav2vec2.feature_extractor.conv_layers[0].conv.weight.grad.clone(),
                model.project_hid.weight.grad.clone(),
            )
        )
    assert torch.allclose(grads[1][0], 0.1 * grads[0][0], rtol=1e-4, atol=1e-9)
    assert torch.allclose(grads[1][1], grads[0][1], rtol=1e-4, atol=1e-9), "the rest of the model is unchanged"


@needs_data("unlabeled-librispeech")
def test_a_tiny_pretraining_run_learns_on_real_speech():
    torch.manual_seed(0)
    generator = np.random.default_rng(0)
    files = sorted((DATA / "unlabeled-librispeech").glob("*.flac"))[:8]
    crops = [load_audio(path, 16000)[16000 : 16000 + 24000] for path in files]  # 1.5 s of each
    config = tiny_config()
    model = init_weights(Wav2Vec2ForPreTraining(config), config).train()
    scale_feature_encoder_gradients(model, 0.1)
    objective = PretrainingObjective(model, num_negatives=20)
    optimiser = torch.optim.AdamW(model.parameters(), lr=5e-3)
    history = []
    for step in range(160):
        model.quantizer.temperature = gumbel_temperature(step, decay=0.99)
        batch = [crops[(step * 4 + i) % len(crops)] for i in range(4)]
        input_values, _ = batch_input_values(batch, do_normalize=True)
        result = objective(torch.from_numpy(input_values), None, generator)
        optimiser.zero_grad()
        result.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimiser.step()
        history.append(result)
    first, last = history[:15], history[-15:]
    # Chance, with 20 distractors: loss ln 21 = 3.04, accuracy 1/21 = 0.05.
    assert np.mean([h.contrastive.item() for h in last]) < np.mean([h.contrastive.item() for h in first]) - 0.3
    assert np.mean([h.accuracy for h in last]) > max(0.12, np.mean([h.accuracy for h in first]) + 0.05)
    assert min(h.perplexity for h in last) > 1.0, "the codebooks are used, not collapsed to one codeword"


# -- python -m training pretrain ----------------------------------------------------------------------


def pretrain_command(manifest, output, *overrides):
    import subprocess
    import sys

    from conftest import REPO

    tiny = [
        "model.hidden_size=32",
        "model.num_hidden_layers=2",
        "model.intermediate_size=64",
        "model.conv_dim=[32,32,32,32,32,32,32]",
        "model.num_conv_pos_embeddings=16",
        "model.codevector_dim=32",
        "model.proj_codevector_dim=32",
        "model.num_codevectors_per_group=16",
    ]
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "training",
            "pretrain",
            "--config",
            str(REPO / "training" / "configs" / "pretrain-tiny.yaml"),
            f"manifest={manifest}",
            f"output_dir={output}",
            "max_batch_seconds=8",
            "max_sample_seconds=2",
            "warmup_steps=2",
            "log_every=1",
            "save_every=3",
            "num_negatives=20",
            *tiny,
            *overrides,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=HANG_SECONDS,
    )


@pytest.fixture(scope="module")
def unlabeled_manifest(tmp_path_factory):
    require_data("unlabeled-librispeech")
    from training.manifest import build_manifest, write_manifest

    entries, _ = build_manifest(DATA / "unlabeled-librispeech")
    path = tmp_path_factory.mktemp("unlabeled") / "unlabeled.jsonl"
    write_manifest(entries[:12], path)
    return path


def read_metrics(folder):
    import json

    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_pretrain_command_writes_checkpoints_transformers_loads(unlabeled_manifest, tmp_path):
    import transformers

    from model.pytorch.checkpoint import load_checkpoint

    result = pretrain_command(unlabeled_manifest, tmp_path / "run", "max_steps=6")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = read_metrics(tmp_path / "run")
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6]
    assert all(0 <= m["accuracy"] <= 1 and m["perplexity"] > 1 and m["audio_seconds_per_second"] > 0 for m in metrics)
    rates = [m["learning_rate"] for m in metrics]  # the rate of the step to come
    assert rates[1] == max(rates) and rates[1] > rates[4] > rates[5] == 0, "warm-up, then linear decay to 0"
    folder = tmp_path / "run" / "checkpoint-6"
    ours = load_checkpoint(folder).model.eval()
    theirs = transformers.Wav2Vec2ForPreTraining.from_pretrained(folder).eval()
    audio = torch.randn(1, 16000)
    with torch.no_grad():
        expected = theirs(audio).projected_states
        got = ours(audio).projected_states
    assert torch.allclose(got, expected, atol=1e-5)


def test_pretrain_resumes_exactly(unlabeled_manifest, tmp_path):
    # A 3-step run resumed to 6 steps against 6 steps straight: with 2 warm-up steps the first three
    # learning rates are the same under both schedules, and --reschedule makes the resumed run follow
    # its new config's (without it, a run keeps its own schedule).
    straight = pretrain_command(unlabeled_manifest, tmp_path / "straight", "max_steps=6")
    first = pretrain_command(unlabeled_manifest, tmp_path / "split", "max_steps=3")
    assert straight.returncode == 0 and first.returncode == 0, first.stderr[-3000:]
    resumed = pretrain_command(
        unlabeled_manifest,
        tmp_path / "split",
        "max_steps=6",
        "--resume",
        str(tmp_path / "split" / "checkpoint-3"),
        "--reschedule",
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "max_steps 3 -> 6" in resumed.stdout
    expected, got = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "split")
    assert [m["step"] for m in got] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(expected, got):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5) and a["perplexity"] == pytest.approx(
            b["perplexity"], abs=1e-4
        )


def test_pretrain_on_two_processes_with_torchrun(unlabeled_manifest, tmp_path):
    import os
    import subprocess
    import sys

    from conftest import REPO

    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            "-m",
            "training",
            "pretrain",
            "--config",
            str(REPO / "training/configs/pretrain-tiny.yaml"),
            f"manifest={unlabeled_manifest}",
            f"output_dir={tmp_path / 'ddp'}",
            "max_steps=4",
            "max_batch_seconds=8",
            "max_sample_seconds=2",
            "warmup_steps=2",
            "log_every=1",
            "save_every=4",
            "num_negatives=20",
            "model.hidden_size=32",
            "model.num_hidden_layers=2",
            "model.intermediate_size=64",
            "model.conv_dim=[32,32,32,32,32,32,32]",
            "model.num_conv_pos_embeddings=16",
            "model.codevector_dim=32",
            "model.proj_codevector_dim=32",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=HANG_SECONDS,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = read_metrics(tmp_path / "ddp")
    assert [m["step"] for m in metrics] == [1, 2, 3, 4], "rank 0 alone writes the metrics"
    assert (tmp_path / "ddp" / "checkpoint-4" / "model.safetensors").is_file()
    assert metrics[-1]["loss"] < metrics[0]["loss"]
