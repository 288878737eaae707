"""`python -m training pretrain` with `objective: wav2vec` or `objective: vq-wav2vec`.

The config's `model` section holds the architecture and its task options together, as fairseq's
`wav2vec` model does (any `Wav2VecConfig` field: `conv_feature_layers`, `prediction_steps`,
`num_negatives`, `offset`, `vq_type`, `vq_temp`, ...). Batches are crops of equal length (the
shortest utterance of the batch, at most `max_sample_seconds`), as the reference trains.
Checkpoints are `output_dir/checkpoint-<step>/model.pt` in fairseq's own layout: `python -m model
features --model output_dir/checkpoint-<step>` reads them, and so does fairseq.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from model.audio import normalize
from model.pytorch.wav2vec1 import Wav2VecConfig, Wav2VecModel
from model.pytorch.wav2vec1_fairseq import save_wav2vec1_checkpoint

from .audio_store import AudioStore
from .batches import BatchStream
from .config import PretrainConfig, save_config
from .loop import adamw, prune_checkpoints, warmup_then_linear_decay
from .manifest import read_manifest
from .metrics_log import METRICS_FILE, MetricsLog
from .provenance import record_start
from .wav2vec1_objective import Wav2VecObjective

OBJECTIVES = ("wav2vec", "vq-wav2vec")
CHECKPOINT_FILE = "model.pt"


def wav2vec1_config(config: PretrainConfig) -> Wav2VecConfig:
    """The architecture of `config.model`, checked against the objective (vq-wav2vec needs a quantizer)."""
    known = {item.name for item in dataclasses.fields(Wav2VecConfig)}
    unknown = sorted(set(config.model) - known)
    if unknown:
        raise ValueError(
            f"unknown model settings for objective {config.objective}: {', '.join(unknown)} "
            "(wav2vec and vq-wav2vec take fairseq's wav2vec options; no presets)"
        )
    architecture = Wav2VecConfig(**config.model)
    if config.objective == "vq-wav2vec" and architecture.vq_type == "none":
        raise ValueError("objective vq-wav2vec needs a quantizer: set model.vq_type to gumbel or kmeans")
    if config.kmeans_restart_every < 0 or (config.kmeans_restart_every and architecture.vq_type != "kmeans"):
        raise ValueError(
            f"kmeans_restart_every={config.kmeans_restart_every}: a number of updates >= 0, and only for "
            f"model.vq_type kmeans (this model's is {architecture.vq_type!r}); remove it or set 0"
        )
    if config.objective == "wav2vec" and architecture.vq_type != "none":
        raise ValueError(
            f"objective wav2vec trains without a quantizer, but model.vq_type is "
            f"{architecture.vq_type!r}: use objective vq-wav2vec"
        )
    return architecture


def check_objective(config: PretrainConfig) -> None:
    """ValueError for an unknown objective, or a model section or feature settings it cannot use."""
    if config.objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {config.objective!r}; choose wav2vec2, {', '.join(OBJECTIVES)}")
    if config.features:
        raise ValueError(
            f"objective {config.objective} takes its audio settings from the model section "
            "(sample_rate, normalize), not from features"
        )
    try:
        wav2vec1_config(config)
    except (TypeError, SyntaxError) as error:
        raise ValueError(f"model: {error}") from None


def gumbel_temperature(config: Wav2VecConfig, step: int) -> float:
    start, end, decay = config.vq_temp
    return max(start * decay**step, end)


def pretrain_wav2vec1(config: PretrainConfig, resume: Path | None = None) -> Path:
    """Train to `config.max_steps` on one device; returns the last checkpoint folder."""
    if resume is not None:
        raise ValueError(f"--resume is not supported for objective {config.objective}; start a new run")
    architecture = wav2vec1_config(config)
    torch.manual_seed(config.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rate = architecture.sample_rate
    entries = [entry for entry in read_manifest(Path(config.manifest)) if entry.duration >= config.min_sample_seconds]
    if not entries:
        raise ValueError(f"{config.manifest}: no audio of at least {config.min_sample_seconds} s")
    batches = BatchStream(
        [min(entry.duration, config.max_sample_seconds) for entry in entries], config.max_batch_seconds, config.seed
    )
    audio = AudioStore(
        [entry.audio for entry in entries],
        [entry.duration for entry in entries],
        rate,
        config.preload_gb * 1e9,
        config.decode_workers,
    )
    model = Wav2VecModel(architecture).to(device).train()  # each module's own initialisation, as the reference's
    objective = Wav2VecObjective(model, config.vq_loss_weight)
    optimiser = adamw(model, config.learning_rate, config.weight_decay, eps=1e-6)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, warmup_then_linear_decay(config.warmup_steps, config.max_steps)
    )
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    save_config(config, output / "training_config.json")
    record_start(output, 0)
    log = MetricsLog(output / METRICS_FILE, True, config.tensorboard)
    progress = tqdm(total=config.max_steps, unit="step", dynamic_ncols=True)
    step, last, audio_seconds, started, codewords_restarted = 0, None, 0.0, time.perf_counter(), 0
    while step < config.max_steps:
        if architecture.vq_type == "gumbel":
            model.quantizer.temperature = gumbel_temperature(architecture, step)
        # Every random choice of this step derives from (seed, step): a rerun replays it.
        generator = np.random.default_rng([config.seed, step])
        crops = _equal_crops(audio.batch(next(batches)), int(config.max_sample_seconds * rate), generator)
        if architecture.normalize:
            crops = np.stack([normalize(samples) for samples in crops])
        audio_seconds += crops.size / rate
        samples = torch.from_numpy(np.stack(crops)).to(device)
        restarted = _restart_codewords(model, config, step, samples)
        if restarted is not None and step:
            codewords_restarted += restarted
        result = objective(samples, generator)
        result.loss.backward()
        gradient_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm))
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        scheduler.step()
        step += 1
        progress.update(1)
        if step % config.log_every == 0 or step == config.max_steps:
            record = {
                "step": step,
                "loss": round(float(result.loss.detach()), 6),
                "contrastive": round(float(result.contrastive.detach()), 6),
                "penalty": round(float(result.penalty.detach()), 6),
                "accuracy": round(result.accuracy, 4),
                "code_perplexity": round(result.code_perplexity, 3),
                "gradient_norm": round(gradient_norm, 4),
                "learning_rate": scheduler.get_last_lr()[0],
                "audio_seconds_per_second": round(audio_seconds / (time.perf_counter() - started), 2),
            }
            if config.kmeans_restart_every:
                record["codewords_restarted"] = codewords_restarted  # since the start, the initial draw aside
            if architecture.vq_type == "gumbel":
                record["gumbel_temperature"] = round(model.quantizer.temperature, 5)
            log.write(record)
            progress.set_postfix(
                loss=f"{record['loss']:.3f}", acc=f"{record['accuracy']:.2f}", ppl=f"{record['code_perplexity']:.1f}"
            )
        if step % config.save_every == 0 or step == config.max_steps:
            last = output / f"checkpoint-{step}"
            save_wav2vec1_checkpoint(model, last / CHECKPOINT_FILE, {"num_updates": step})
            prune_checkpoints(output, config.keep_checkpoints)
    progress.close()
    log.close()
    audio.close()
    return last


def _restart_codewords(model: Wav2VecModel, config: PretrainConfig, step: int, samples: torch.Tensor) -> int | None:
    """k-means with `kmeans_restart_every`: the codebook onto the first batch's frames at step 0, then
    unused codewords onto this batch's every N steps. Returns how many moved (None: not a restart step)."""
    every = config.kmeans_restart_every
    if model.config.vq_type != "kmeans" or every <= 0 or step % every:
        return None
    with torch.no_grad():
        frames = model.feature_extractor(samples).transpose(1, 2)
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    return model.quantizer.restart_codewords(frames, generator, everyone=step == 0)


def _equal_crops(utterances: list[np.ndarray], most: int, generator: np.random.Generator) -> np.ndarray:
    """(batch, samples): each utterance cropped at a random start to the batch's shortest (at most `most`)."""
    length = min(min(len(samples) for samples in utterances), most)
    starts = [int(generator.integers(0, len(samples) - length + 1)) for samples in utterances]
    return np.stack([samples[start : start + length] for samples, start in zip(utterances, starts)]).astype(np.float32)
