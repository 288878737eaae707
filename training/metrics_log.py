"""A training run's metrics: `metrics.jsonl` in its folder (one JSON object per logged step, appended,
so a resumed run continues the same file) and, with `tensorboard: true` in the config, the same numbers
as TensorBoard event files in `tensorboard/` beside it.

Records are what the loops log: training steps (`step`, `loss`, `learning_rate`, ...: numbers at the
top level) and evaluations (`step`, `eval`: each decoder's rates as fractions, `best`). In the JSON
the rates stay fractions (what programs read); everything written for people, TensorBoard included,
shows them in percent.
"""

from __future__ import annotations

import json
from pathlib import Path

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_FOLDER = "tensorboard"
RATES = ("wer", "cer")  # the error rates of an evaluation: fractions in the JSON, percent for people
INSTALL_TENSORBOARD = "pip install 'w2v-asr[tensorboard]'"


def require_tensorboard() -> None:
    """ValueError, saying what to install, unless TensorBoard's event writer can be had."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401  (needs the tensorboard package)
    except ImportError:
        raise ValueError(f"tensorboard: true needs the tensorboard package: {INSTALL_TENSORBOARD}") from None


def scalars(record: dict) -> dict[str, float]:
    """A record's numbers as TensorBoard tags: `train/<key>` for a training step's (booleans left out),
    `eval/<decoder>/wer` and `/cer` in percent for an evaluation's, and `eval/best/wer`."""
    if "eval" not in record:
        return {
            f"train/{key}": float(value)
            for key, value in record.items()
            if key != "step" and isinstance(value, int | float) and not isinstance(value, bool)
        }
    rates = {decoder: values for decoder, values in record["eval"].items() if isinstance(values, dict)}
    if record.get("best"):
        rates["best"] = record["best"]
    return {
        f"eval/{decoder}/{rate}": 100 * float(values[rate])
        for decoder, values in rates.items()
        for rate in RATES
        if rate in values
    }


class MetricsLog:
    """Appends records to `path`; with `tensorboard`, writes their numbers (`scalars`) as event files
    in `path.parent / "tensorboard"` too. Only an `enabled` log writes (the main process's)."""

    def __init__(self, path: Path, enabled: bool, tensorboard: bool = False):
        self.path, self.enabled = path, enabled
        self.events = None
        if enabled and tensorboard:
            require_tensorboard()
            from torch.utils.tensorboard import SummaryWriter

            self.events = SummaryWriter(str(path.parent / TENSORBOARD_FOLDER))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.events is not None:
            for tag, value in scalars(record).items():
                self.events.add_scalar(tag, value, record["step"])
            self.events.flush()  # a run watched live, or stopped, shows every step logged

    def close(self) -> None:
        if self.events is not None:
            self.events.close()
            self.events = None


def read_records(run: Path) -> list[dict]:
    """The records of a run folder's metrics.jsonl; ValueError saying what is missing if it has none."""
    path = run / METRICS_FILE
    if not run.is_dir():
        raise ValueError(f"{run}: no such run folder")
    if not path.is_file():
        raise ValueError(f"{run}: no {METRICS_FILE}; is it the output_dir of a pretrain or finetune run?")
    records = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # a record being written as the run goes on
                continue
            raise ValueError(f"{path}:{number}: not a JSON record") from None
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    if not records:
        raise ValueError(f"{path}: no metrics yet (the run logs every log_every steps)")
    return records
