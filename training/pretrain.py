"""`python -m training pretrain`: self-supervised wav2vec 2.0 pretraining on unlabeled audio."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from model.audio import model_inputs
from model.pytorch.checkpoint import Checkpoint, load_checkpoint
from model.pytorch.wav2vec2 import Wav2Vec2ForPreTraining, init_weights

from .audio_store import AudioStore
from .batches import BatchStream
from .config import PretrainConfig, feature_settings, model_config, save_config
from .loop import (
    Processes,
    adamw,
    autocast,
    gradient_sync,
    optimiser_step,
    prune_checkpoints,
    read_trainer_state,
    restore_trainer_state,
    resumed_schedule,
    save_trainer_state,
    warmup_then_linear_decay,
)
from .manifest import read_manifest
from .metrics_log import METRICS_FILE, MetricsLog
from .pretraining import PretrainingObjective, gumbel_temperature, scale_feature_encoder_gradients
from .provenance import record_start


def pretrain(config: PretrainConfig, resume: Path | None = None, reschedule: bool = False) -> Path:
    """Train to `config.max_steps`; returns the last checkpoint folder (HF Wav2Vec2ForPreTraining + trainer state).
    A resumed run keeps its own learning-rate schedule unless `reschedule`. The objectives of wav2vec (1.0)
    and vq-wav2vec train in training/wav2vec1_pretrain.py."""
    if config.objective != "wav2vec2":
        from .wav2vec1_pretrain import pretrain_wav2vec1

        return pretrain_wav2vec1(config, resume)
    with Processes.start() as processes:
        return _pretrain(config, resume, reschedule, processes)


def _pretrain(config: PretrainConfig, resume: Path | None, reschedule: bool, processes: Processes) -> Path:
    torch.manual_seed(config.seed + processes.rank)
    output = Path(config.output_dir)
    architecture = model_config(config.model)
    features = feature_settings(config.features, architecture)
    rate = features.sampling_rate
    entries = [entry for entry in read_manifest(Path(config.manifest)) if entry.duration >= config.min_sample_seconds]
    if not entries:
        raise ValueError(f"{config.manifest}: no audio of at least {config.min_sample_seconds} s")
    durations = [min(entry.duration, config.max_sample_seconds) for entry in entries]
    batches = BatchStream(durations, config.max_batch_seconds, config.seed, processes.rank, processes.world)
    audio = AudioStore(
        [entry.audio for entry in entries],
        [entry.duration for entry in entries],
        rate,
        config.preload_gb * 1e9,
        config.decode_workers,
    )

    model = init_weights(Wav2Vec2ForPreTraining(architecture), architecture).to(processes.device).train()
    if resume is not None:
        model.load_state_dict(load_checkpoint(resume).model.state_dict())
    scale_feature_encoder_gradients(model, config.feature_grad_mult)
    # LayerDrop skips random transformer layers, whose weights then get no gradient in that step.
    forward = (
        DistributedDataParallel(model, find_unused_parameters=architecture.layerdrop > 0)
        if processes.world > 1
        else model
    )
    objective = PretrainingObjective(
        model,
        config.mask_prob,
        config.mask_length,
        config.num_negatives,
        config.logit_temperature,
        config.diversity_weight,
        config.feature_penalty_weight,
        forward=forward,
        mask_min_spans=config.mask_min_spans,
    )

    schedule = {
        "learning_rate": config.learning_rate,
        "warmup_steps": config.warmup_steps,
        "max_steps": config.max_steps,
    }
    state = read_trainer_state(resume) if resume else None
    if state is not None:
        schedule, note = resumed_schedule(state["extra"].get("schedule"), schedule, reschedule)
        if note and processes.main:
            print(note)
    optimiser = adamw(model, schedule["learning_rate"], config.weight_decay, eps=1e-6)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, warmup_then_linear_decay(schedule["warmup_steps"], schedule["max_steps"])
    )
    precision, scaler = autocast(config.precision, processes.device)
    step = 0
    if state is not None:
        step = restore_trainer_state(state, optimiser, scheduler, batches, scaler, schedule["learning_rate"])
        del state

    if processes.main:
        output.mkdir(parents=True, exist_ok=True)
        save_config(config, output / "training_config.json")
        record_start(output, step)
    log = MetricsLog(output / METRICS_FILE, processes.main, config.tensorboard)
    progress = tqdm(total=config.max_steps, initial=step, disable=not processes.main, unit="step", dynamic_ncols=True)
    last = None
    audio_seconds, started = 0.0, time.perf_counter()
    while step < config.max_steps:
        model.quantizer.temperature = gumbel_temperature(
            step, config.gumbel_start, config.gumbel_end, config.gumbel_decay
        )
        totals = {
            "loss": 0.0,
            "contrastive": 0.0,
            "diversity": 0.0,
            "feature_penalty": 0.0,
            "accuracy": 0.0,
            "perplexity": 0.0,
        }
        for micro in range(config.accumulation):
            # Every random choice of this step derives from (seed, step, micro, rank): resuming replays it.
            generator = np.random.default_rng([config.seed, step, micro, processes.rank])
            crops = [
                _crop(samples, int(config.max_sample_seconds * rate), generator)
                for samples in audio.batch(next(batches))
            ]
            audio_seconds += sum(len(samples) for samples in crops) / rate
            input_values, attention_mask = model_inputs(crops, features)
            inputs = torch.from_numpy(input_values).to(processes.device)
            mask = None if attention_mask is None else torch.from_numpy(attention_mask).to(processes.device)
            with gradient_sync(forward, micro, config.accumulation, processes.world), precision:
                result = objective(inputs, mask, generator)
                loss = result.loss / config.accumulation
                (scaler.scale(loss) if scaler else loss).backward()
            for key in totals:
                totals[key] += float(torch.as_tensor(getattr(result, key)).detach()) / config.accumulation
        gradient_norm = optimiser_step(model, optimiser, scheduler, scaler, config.clip_norm)
        step += 1
        progress.update(1)
        if step % config.log_every == 0 or step == config.max_steps:
            elapsed = time.perf_counter() - started
            record = {
                "step": step,
                **{key: round(processes.mean(value), 6) for key, value in totals.items()},
                "gradient_norm": round(gradient_norm, 4),
                "learning_rate": scheduler.get_last_lr()[0],
                "gumbel_temperature": round(model.quantizer.temperature, 5),
                "audio_seconds_per_second": round(processes.mean(audio_seconds / elapsed) * processes.world, 2),
            }
            log.write(record)
            progress.set_postfix(
                loss=f"{record['loss']:.3f}",
                acc=f"{record['accuracy']:.2f}",
                ppl=f"{record['perplexity']:.1f}",
                audio_s_per_s=record["audio_seconds_per_second"],
            )
        if step % config.save_every == 0 or step == config.max_steps:
            last = output / f"checkpoint-{step}"
            if processes.main:
                Checkpoint(model, architecture, features).save(last)
                save_trainer_state(last, step, optimiser, scheduler, batches, scaler, {"schedule": schedule})
                prune_checkpoints(output, config.keep_checkpoints, protect=resume)
    progress.close()
    log.close()
    audio.close()
    return last or resume


def _crop(samples: np.ndarray, most: int, generator: np.random.Generator) -> np.ndarray:
    if len(samples) <= most:
        return samples
    start = int(generator.integers(0, len(samples) - most + 1))
    return samples[start : start + most]
