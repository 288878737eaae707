"""What every training command shares: processes (torchrun), precision, optimiser and schedule,
checkpoints that resume exactly. A run's metrics are `training.metrics_log`'s."""

from __future__ import annotations

import gc
import os
import random
import shutil
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

TRAINER_STATE = "trainer_state.pt"


@dataclass
class Processes:
    """This process's place among those torchrun started (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @classmethod
    def start(cls) -> Processes:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            device = torch.device("cuda", local)
        else:
            device = torch.device("cpu")
        if world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(int(os.environ.get("RANK", "0")), world, device)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device if self.device.type == "cuda" else None)
        dist.all_reduce(tensor)
        return float(tensor) / self.world

    def close(self, finished: bool = True) -> None:
        """Leave the process group. `finished`: every rank got here normally, so they wait for each
        other first (rank 0 saves the last checkpoint alone; the others must not tear their connections
        down under it); after an error there is no collective, torchrun stops the others."""
        if self.world > 1 and dist.is_initialized():
            if finished:
                dist.barrier()
            # A DistributedDataParallel wrapper outlives the run that made it: it sits in a reference
            # cycle, and with it the group's gloo work and tensors, until a garbage collection. Left to
            # the interpreter's shutdown, gloo's threads free them without Python and the process
            # aborts ("terminate called without an active exception", now and then, under load).
            # Collected here, the group is whole when it is destroyed and nothing outlives it.
            gc.collect()
            dist.destroy_process_group()

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, error_type, *_) -> None:
        self.close(finished=error_type is None)


def autocast(precision: str, device: torch.device):
    """bf16 (or fp16) autocast on GPUs, plain fp32 on CPUs; `precision`: auto, fp32, bf16 or fp16."""
    if precision == "auto":
        precision = "fp32" if device.type != "cuda" else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    if precision == "fp32":
        return nullcontext(), None
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return torch.autocast(device.type, dtype=dtype), scaler


def warmup_then_linear_decay(warmup: int, total: int):
    """A linear warm-up over `warmup` updates, then a linear decay to 0 at update `total`."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def tri_stage(
    total: int,
    phases: tuple[float, float, float] = (0.1, 0.4, 0.5),
    init_scale: float = 0.01,
    final_scale: float = 0.05,
):
    """The fine-tuning schedule of the paper (fairseq's tri-stage): a linear warmup from
    `init_scale` x the peak rate, a hold at the peak, then an exponential decay to `final_scale` x."""
    warmup, hold = int(phases[0] * total), int(phases[1] * total)
    decay = max(1, total - warmup - hold)

    def factor(step: int) -> float:
        if step < warmup:
            return init_scale + (1.0 - init_scale) * step / warmup
        if step < warmup + hold:
            return 1.0
        return final_scale ** (min(step - warmup - hold, decay) / decay)

    return factor


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_trainer_state(
    folder: Path, step: int, optimiser, scheduler, batches, scaler, extra: dict | None = None
) -> None:
    torch.save(
        {
            "step": step,
            "extra": extra or {},
            "optimiser": optimiser.state_dict(),
            "scheduler": scheduler.state_dict(),
            "batches": batches.state(),
            "rng": rng_state(),
            "scaler": scaler.state_dict() if scaler else None,
        },
        folder / TRAINER_STATE,
    )


def read_trainer_state(folder: Path) -> dict:
    return torch.load(folder / TRAINER_STATE, weights_only=False)  # our own file: RNG states are not tensors


def restore_trainer_state(state: dict, optimiser, scheduler, batches, scaler, learning_rate: float) -> int:
    """Restores everything in place, on the schedule `scheduler` was built with (peak `learning_rate`);
    returns the step reached."""
    optimiser.load_state_dict(state["optimiser"])
    scheduler.load_state_dict(state["scheduler"])
    scheduler.base_lrs = [learning_rate] * len(optimiser.param_groups)
    for group, factor in zip(optimiser.param_groups, scheduler.lr_lambdas):
        group["initial_lr"] = learning_rate
        group["lr"] = learning_rate * factor(scheduler.last_epoch)
    batches.restore(state["batches"])
    set_rng_state(state["rng"])
    if scaler and state["scaler"]:
        scaler.load_state_dict(state["scaler"])
    return state["step"]


def resumed_schedule(saved: dict | None, wanted: dict, reschedule: bool) -> tuple[dict, str | None]:
    """The schedule settings a resumed run follows, and what to tell the user when the config asks
    for another: a run continues its own schedule unless `reschedule` (--reschedule) says otherwise."""
    if saved is None or saved == wanted:
        return wanted, None
    changes = ", ".join(f"{key} {saved.get(key)} -> {wanted[key]}" for key in wanted if saved.get(key) != wanted[key])
    if reschedule:
        return wanted, f"resumed on this config's learning-rate schedule ({changes}), as --reschedule asks"
    return saved, (
        f"resumed on the run's own learning-rate schedule; this config changes it ({changes}), "
        "which --reschedule would apply from the step reached"
    )


def adamw(
    model: torch.nn.Module, learning_rate: float, weight_decay: float, betas=(0.9, 0.98), eps: float = 1e-8
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, decaying only weight matrices and convolution kernels: never
    biases, norm gains, the mask embedding, or a weight norm's magnitude (the usual convention)."""
    decay, keep = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 and not name.endswith("original0") else keep).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]
    return torch.optim.AdamW([group for group in groups if group["params"]], lr=learning_rate, betas=betas, eps=eps)


def gradient_sync(forward, micro: int, accumulation: int, world: int):
    """The context of one micro-batch's backward pass: with several processes, gradients are
    averaged across them only on the last micro-batch of an update."""
    if world > 1 and micro < accumulation - 1:
        return forward.no_sync()
    return nullcontext()


def optimiser_step(model: torch.nn.Module, optimiser, scheduler, scaler, clip_norm: float) -> float:
    """One update from the accumulated gradients: unscale (fp16), clip, step, clear, advance the
    schedule. Returns the gradient norm before clipping."""
    if scaler:
        scaler.unscale_(optimiser)
    gradient_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm))
    if scaler:
        scaler.step(optimiser)
        scaler.update()
    else:
        optimiser.step()
    optimiser.zero_grad(set_to_none=True)
    scheduler.step()
    return gradient_norm


def prune_checkpoints(output_dir: Path, keep: int, protect: Path | None = None) -> None:
    folders = sorted(output_dir.glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))
    for folder in folders[:-keep] if keep > 0 else []:
        if folder != protect:
            shutil.rmtree(folder)
