"""`python -m training finetune`: CTC fine-tuning from a pretrained checkpoint, a fine-tuned one, or scratch.

The paper's recipe: a frozen feature encoder, only the CTC head trained for the first updates,
time and channel masking, the tri-stage learning-rate schedule; periodic WER/CER evaluation
(greedy, and beam search with a KenLM model) that keeps the best checkpoint in `output_dir/best`.
With `ema_decay` set, what is evaluated and kept as `best` is an exponential moving average of the
weights; the numbered checkpoints hold the trained weights (and the average, for resuming).
"""

from __future__ import annotations

import json
import random
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from model.audio import load_audio
from model.config import FeatureSettings, Wav2Vec2Config
from model.ctc import CTCVocabulary
from model.decoding import BeamOptions
from model.lexicon import read_lexicon
from model.pytorch.checkpoint import Checkpoint
from model.pytorch.recognizer import TorchRecognizer
from model.pytorch.wav2vec2 import Wav2Vec2ForCTC
from model.transcribe import Transcriber

from .audio_store import AudioStore
from .augment import Augmentation
from .batches import BatchStream
from .config import SCHEDULE_SETTINGS, FinetuneConfig, save_config
from .ctc_model import Example, audio_settings, build_model, ctc_loss, examples, load_start, vocabulary
from .evaluate import CHUNK, hypotheses, score
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
    tri_stage,
    warmup_then_linear_decay,
)
from .manifest import Entry, read_manifests
from .metrics import percent, rates_line
from .metrics_log import METRICS_FILE, MetricsLog
from .provenance import record_start

TALKERS = 256  # utterances of talk_manifest kept in memory (~50 MB of float32 for 3 s sentences at 16 kHz)


def finetune(config: FinetuneConfig, resume: Path | None = None, reschedule: bool = False) -> Path:
    """Train to `config.max_steps`; returns the best checkpoint folder (the last one without evaluation).
    A resumed run keeps its own learning-rate schedule unless `reschedule`."""
    with Processes.start() as processes:
        return _finetune(config, resume, reschedule, processes)


class _CTCForward(nn.Module):
    """The training forward pass, one module so DistributedDataParallel wraps it whole.
    `frozen` runs the wav2vec 2.0 body without gradients (only the CTC head learns)."""

    def __init__(self, model: Wav2Vec2ForCTC):
        super().__init__()
        self.model = model

    def forward(self, inputs, attention_mask, time_mask, channel_mask, frozen: bool):
        with torch.no_grad() if frozen else nullcontext():
            # Padded batches come with a mask, which keeps padding out: each utterance trains as it is
            # transcribed, alone.
            hidden = self.model.wav2vec2(inputs, attention_mask, time_mask, channel_mask).hidden_states
        return self.model.lm_head(self.model.dropout(hidden))


@dataclass
class _Run:
    """A fine-tuning run between updates: what `_setup` builds and each update advances."""

    config: FinetuneConfig
    processes: Processes
    output: Path
    train: list[Example]
    vocab: CTCVocabulary
    architecture: Wav2Vec2Config
    features: FeatureSettings
    model: Wav2Vec2ForCTC
    forward: nn.Module  # the model's training pass, wrapped for several processes
    averaged: AveragedModel | None
    kept: Wav2Vec2ForCTC  # the weights evaluated and kept as `best`: the trained ones or their average
    augment: Augmentation
    talkers: list[np.ndarray]  # what augment's talk noise is made of
    audio: AudioStore
    evaluation: list[Entry]
    evaluation_audio: AudioStore
    evaluator: Transcriber | None
    batches: BatchStream
    schedule: dict
    optimiser: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    precision: object
    scaler: torch.amp.GradScaler | None
    log: MetricsLog
    step: int = 0
    best: dict | None = None
    gradient_norm: float = 0.0  # of the last update

    def close(self) -> None:
        self.log.close()
        self.audio.close()
        self.evaluation_audio.close()
        if self.evaluator is not None:
            self.evaluator.close()


def _finetune(config: FinetuneConfig, resume: Path | None, reschedule: bool, processes: Processes) -> Path:
    run = _setup(config, resume, reschedule, processes)
    output, rate = run.output, run.features.sampling_rate
    progress = tqdm(
        total=config.max_steps, initial=run.step, disable=not processes.main, unit="step", dynamic_ncols=True
    )
    last = None
    audio_seconds, train_seconds, updates, started = 0.0, 0.0, 0, time.perf_counter()
    try:
        while run.step < config.max_steps:
            frozen = run.step < config.freeze_transformer_steps
            update_started = time.perf_counter()
            loss_total, samples = _update(run, frozen)
            audio_seconds += samples / rate
            train_seconds += time.perf_counter() - update_started
            run.step, updates = run.step + 1, updates + 1
            step = run.step
            progress.update(1)
            if step % config.log_every == 0 or step == config.max_steps:
                # Throughput counts training time only (not evaluation or checkpoints), since this process began.
                record = {
                    "step": step,
                    "loss": round(processes.mean(loss_total), 6),
                    "gradient_norm": round(run.gradient_norm, 4),
                    "learning_rate": run.scheduler.get_last_lr()[0],
                    "frozen": frozen,
                    "audio_seconds_per_second": round(
                        processes.mean(audio_seconds / train_seconds) * processes.world, 2
                    ),
                    "seconds_per_update": round(train_seconds / updates, 4),
                    "train_seconds": round(train_seconds, 3),
                    "audio_seconds": round(audio_seconds * processes.world, 1),
                    "wall_seconds": round(time.perf_counter() - started, 1),
                }
                run.log.write(record)
                progress.set_postfix(
                    loss=f"{record['loss']:.3f}",
                    audio_s_per_s=record["audio_seconds_per_second"],
                    best_wer=percent(run.best["wer"]) if run.best else "-",
                )
            if run.evaluator is not None and (step % config.eval_every == 0 or step == config.max_steps):
                _evaluate_and_keep(run, started, progress)
            if step % config.save_every == 0 or step == config.max_steps:
                last = output / f"checkpoint-{step}"
                if processes.main:
                    _save_checkpoint(run, last, resume)
    finally:
        progress.close()
        run.close()
    if run.best is None and run.averaged is not None and processes.main:  # no evaluation: the average was asked for
        _save(output / "best", run.kept, run.architecture, run.features, run.vocab)
        return output / "best"
    return output / "best" if run.best else (last or resume)


def _setup(config: FinetuneConfig, resume: Path | None, reschedule: bool, processes: Processes) -> _Run:
    """The model, data, optimiser and schedule of a run, from its start or restored from `resume`."""
    torch.manual_seed(config.seed + processes.rank)
    output = Path(config.output_dir)
    _check(config, resumed=resume is not None)
    augment = Augmentation.from_dict(config.augment)
    start = load_start(resume or config.init) if (resume or config.init) else None
    # Unlabelled entries (no text) are left out; an empty text ("") is a negative: nothing to transcribe.
    entries = [entry for entry in read_manifests(config.train_manifest) if entry.text is not None]
    vocab = vocabulary(config, start, [entry.text for entry in entries if entry.text])
    model, architecture = build_model(config, start, vocab, resumed=resume is not None)
    features = audio_settings(config, start, architecture)
    rate = features.sampling_rate
    model.to(processes.device).train()
    train = examples(entries, vocab, architecture, rate, config.max_sample_seconds, processes.main)
    # Only the main process evaluates.
    evaluation = (
        [entry for entry in read_manifests(config.eval_manifest) if entry.text]
        if config.eval_manifest and processes.main
        else []
    )
    audio = AudioStore(
        [example.audio for example in train],
        [example.duration for example in train],
        rate,
        config.preload_gb * 1e9,
        config.decode_workers,
    )
    evaluation_audio = AudioStore(
        [entry.audio for entry in evaluation],
        [entry.duration for entry in evaluation],
        rate,
        config.preload_gb * 1e9,
        config.decode_workers,
    )
    if processes.main:
        print(
            f"training audio: {len(train)} utterances, "
            + (
                f"decoded once and kept in memory ({audio.bytes / 1e9:.2f} GB)"
                if audio.preloaded
                else f"decoded batch by batch ({audio.bytes / 1e9:.2f} GB > preload_gb={config.preload_gb})"
            )
        )

    if config.freeze_feature_encoder:
        model.wav2vec2.feature_extractor.requires_grad_(False)
    # Frozen steps and LayerDrop leave parameters without gradients in some steps.
    forward = _CTCForward(model)
    if processes.world > 1:
        forward = DistributedDataParallel(
            forward, find_unused_parameters=config.freeze_transformer_steps > 0 or architecture.layerdrop > 0
        )
    batches = BatchStream(
        [example.duration for example in train],
        config.max_batch_seconds,
        config.seed,
        processes.rank,
        processes.world,
        config.max_batch_utterances,
        config.batch_by_length,
        config.length_pool,
    )
    schedule = {name: getattr(config, name) for name in SCHEDULE_SETTINGS}
    state = read_trainer_state(resume) if resume else None
    if state is not None:
        schedule, note = resumed_schedule(state["extra"].get("schedule"), schedule, reschedule)
        if note and processes.main:
            print(note)
    optimiser = adamw(model, schedule["learning_rate"], config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, learning_rate_factor(schedule))
    precision, scaler = autocast(config.precision, processes.device)
    averaged = (
        AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay)) if config.ema_decay > 0 else None
    )
    kept = averaged.module if averaged is not None else model
    step, best = 0, None
    if state is not None:
        step = restore_trainer_state(state, optimiser, scheduler, batches, scaler, schedule["learning_rate"])
        best = state["extra"].get("best")
        if averaged is not None and "ema" in state["extra"]:
            averaged.load_state_dict(state["extra"]["ema"])
        del state

    if processes.main:
        output.mkdir(parents=True, exist_ok=True)
        save_config(config, output / "training_config.json")
        record_start(output, step)
    log = MetricsLog(output / METRICS_FILE, processes.main, config.tensorboard)
    evaluator = None
    if evaluation:  # the model as it trains, transcribed as the CLI and the server transcribe
        evaluator = Transcriber(
            TorchRecognizer(kept, features, vocab, processes.device),
            Path(config.lm) if config.lm else None,
            config.lm_alpha,
            config.lm_beta,
            lexicon=read_lexicon(config.lexicon) if config.lexicon else None,
        )
    return _Run(
        config,
        processes,
        output,
        train,
        vocab,
        architecture,
        features,
        model,
        forward,
        averaged,
        kept,
        augment,
        _talkers(config, rate),
        audio,
        evaluation,
        evaluation_audio,
        evaluator,
        batches,
        schedule,
        optimiser,
        scheduler,
        precision,
        scaler,
        log,
        step,
        best,
    )


def _update(run: _Run, frozen: bool) -> tuple[float, int]:
    """One optimiser update of `config.accumulation` micro-batches (sets `run.gradient_norm`); returns
    the loss summed over them and the samples of audio trained on."""
    config, processes, rate = run.config, run.processes, run.features.sampling_rate
    loss_total, samples_trained = 0.0, 0
    for micro in range(config.accumulation):
        generator = np.random.default_rng([config.seed, run.step, micro, processes.rank])
        indices = next(run.batches)
        samples = run.audio.batch(indices)
        if run.augment.active:  # babble is made of the batch's other transcribed utterances
            spoken = [run.train[i].targets for i in indices]
            samples = [
                run.augment(
                    utterance,
                    rate,
                    generator,
                    [other for j, other in enumerate(samples) if j != k and spoken[j]],
                    run.talkers,
                )
                for k, utterance in enumerate(samples)
            ]
        samples_trained += sum(len(utterance) for utterance in samples)
        with gradient_sync(run.forward, micro, config.accumulation, processes.world), run.precision:
            loss = ctc_loss(
                run.forward,
                run.architecture,
                run.features,
                run.vocab,
                samples,
                [run.train[i] for i in indices],
                frozen,
                generator,
                processes.device,
                config.ctc_loss_reduction,
            )
            loss = loss / config.accumulation
            (run.scaler.scale(loss) if run.scaler else loss).backward()
        loss_total += float(loss.detach())
    run.gradient_norm = optimiser_step(run.model, run.optimiser, run.scheduler, run.scaler, config.clip_norm)
    if run.averaged is not None:
        run.averaged.update_parameters(run.model)
    return loss_total, samples_trained


def _evaluate_and_keep(run: _Run, started: float, progress: tqdm) -> None:
    """Score the evaluation manifest at `run.step`; a new best (by the LM's WER when there is one) is
    saved as `output/best`."""
    step = run.step
    report = _evaluate(run.evaluator, run.evaluation, run.evaluation_audio, BeamOptions(run.config.beam_width))
    metric = report.get("beam", report["greedy"])
    record = {"step": step, "eval": report, "wall_seconds": round(time.perf_counter() - started, 1)}
    # Ties go to the later checkpoint: further along its schedule, it is the better trained.
    if run.best is None or (metric["wer"], metric["cer"]) <= (run.best["wer"], run.best["cer"]):
        run.best = {"step": step, "wer": metric["wer"], "cer": metric["cer"]}
        _save(run.output / "best", run.kept, run.architecture, run.features, run.vocab)
        (run.output / "best" / "eval.json").write_text(json.dumps(record, indent=2) + "\n")
    run.log.write({**record, "best": run.best})
    progress.write(
        f"step {step}: {rates_line(report)} (best WER {percent(run.best['wer'])} at step {run.best['step']})"
    )


def _save_checkpoint(run: _Run, folder: Path, resume: Path | None) -> None:
    """The model and everything `--resume` needs to go on exactly (main process only)."""
    _save(folder, run.model, run.architecture, run.features, run.vocab)
    extra = {"best": run.best, "schedule": run.schedule}
    if run.averaged is not None:
        extra["ema"] = run.averaged.state_dict()
    save_trainer_state(folder, run.step, run.optimiser, run.scheduler, run.batches, run.scaler, extra)
    prune_checkpoints(run.output, run.config.keep_checkpoints, protect=resume)


def learning_rate_factor(schedule: dict):
    """The multiplier of the peak learning rate at each update, from the schedule settings."""
    if schedule["lr_schedule"] == "linear":
        return warmup_then_linear_decay(schedule["warmup_steps"], schedule["max_steps"])
    return tri_stage(
        schedule["max_steps"], tuple(schedule["lr_phases"]), schedule["init_lr_scale"], schedule["final_lr_scale"]
    )


def _talkers(config: FinetuneConfig, rate: int) -> list[np.ndarray]:
    """Up to TALKERS utterances of `talk_manifest`, drawn with the run's seed (so a resumed run draws
    the same)."""
    if not config.talk_manifest:
        return []
    entries = read_manifests(config.talk_manifest)
    return [
        load_audio(entry.audio, rate)
        for entry in random.Random(config.seed).sample(entries, min(TALKERS, len(entries)))
    ]


def _check(config: FinetuneConfig, resumed: bool) -> None:
    if config.lexicon and not config.lm:
        raise ValueError("lexicon restricts beam search with an LM: give lm too")
    if "talk" in (config.augment.get("noise_kinds") or ()) and not config.talk_manifest:
        raise ValueError("augment.noise_kinds has talk: give talk_manifest, the speech it is made of")
    if not config.init and config.freeze_feature_encoder and not resumed:
        raise ValueError(
            "training from scratch with a frozen feature encoder would leave it random: "
            "set freeze_feature_encoder=false, or give init=CHECKPOINT"
        )
    if config.lr_schedule not in ("tri_stage", "linear"):
        raise ValueError(f"lr_schedule: tri_stage or linear, got {config.lr_schedule!r}")
    if len(config.lr_phases) != 3 or min(config.lr_phases) < 0 or abs(sum(config.lr_phases) - 1) > 1e-6:
        raise ValueError(f"lr_phases: three fractions (warm-up, hold, decay) that sum to 1, got {config.lr_phases}")
    if config.ctc_loss_reduction not in ("mean", "sum"):
        raise ValueError(f"ctc_loss_reduction: mean or sum, got {config.ctc_loss_reduction!r}")
    masking = sorted(key for key in config.model if key.startswith(("mask_time_", "mask_feature_")))
    if masking:
        raise ValueError(
            f"model.{masking[0]}: masking is a fine-tuning setting (mask_time_prob, mask_time_length, "
            "mask_time_min_masks, mask_channel_prob, mask_channel_length, mask_channel_min_masks)"
        )


def _evaluate(evaluator: Transcriber, entries: list[Entry], audio: AudioStore, beam: BeamOptions) -> dict:
    rows = []
    for first in range(0, len(entries), CHUNK):
        rows += hypotheses(evaluator, audio.batch(list(range(first, min(first + CHUNK, len(entries))))), beam)
    return score([entry.text for entry in entries], rows)


def _save(folder: Path, model, architecture: Wav2Vec2Config, features: FeatureSettings, vocab: CTCVocabulary) -> None:
    if folder.exists() and folder.name == "best":
        shutil.rmtree(folder)
    Checkpoint(model, architecture, features, vocab).save(folder)
