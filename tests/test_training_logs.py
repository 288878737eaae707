"""What a training run tells people: WER and CER in percent wherever they are printed, TensorBoard
event files beside metrics.jsonl, `python -m training plot RUN` drawing the loss and WER curves as a
PNG, and `--help` listing every config key with its default. On a real (tiny, short) fine-tuning run
of spoken digits."""

from __future__ import annotations

import dataclasses
import json
import re
import struct

import pytest
from test_finetune import QUIET, TINY, digits, metrics, training  # noqa: F401  (digits: a fixture)

from training.config import FinetuneConfig, PretrainConfig
from training.metrics import percent, rates_line
from training.metrics_log import MetricsLog, scalars

from conftest import needs_data

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(digits, tmp_path_factory):  # noqa: F811  (the fixture imported above)
    """20 updates from scratch, logged every 5, evaluated every 10, with TensorBoard event files."""
    pytest.importorskip("tensorboard", reason="the tensorboard extra: pip install '.[tensorboard]'")
    out = tmp_path_factory.mktemp("logged") / "run"
    result = training(
        "finetune",
        f"train_manifest={digits}",
        f"eval_manifest={digits}",
        f"output_dir={out}",
        *TINY,
        *QUIET,
        "freeze_feature_encoder=false",
        "freeze_transformer_steps=0",
        "learning_rate=3e-3",
        "max_steps=20",
        "log_every=5",
        "eval_every=10",
        "save_every=20",
        "tensorboard=true",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result.stdout + result.stderr


def png_size(data: bytes) -> tuple[int, int]:
    """A PNG's width and height in pixels, from its header chunk (which must come first)."""
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", data[:16]
    return struct.unpack(">II", data[16:24])


def test_rates_read_in_percent():
    assert percent(0.032667) == "3.27%" and percent(0) == "0.00%" and percent(1.5) == "150.00%"
    report = {"utterances": 3, "greedy": {"wer": 0.25, "cer": 0.125}, "beam": {"wer": 0.0, "cer": 0.01}}
    assert rates_line(report) == "greedy WER 25.00% CER 12.50%, beam WER 0.00% CER 1.00%"


@needs_data("fsdd")
def test_finetuning_prints_its_evaluations_in_percent(run):
    out, output = run
    printed = re.findall(r"step (\d+): greedy WER (\d+\.\d\d)% CER (\d+\.\d\d)% \(best WER (\d+\.\d\d)%", output)
    evaluations = [record for record in metrics(out) if "eval" in record]
    assert [int(step) for step, *_ in printed] == [record["step"] for record in evaluations] == [10, 20], output
    for (_, wer, cer, best), record in zip(printed, evaluations):
        greedy = record["eval"]["greedy"]
        assert (wer, cer) == (f"{100 * greedy['wer']:.2f}", f"{100 * greedy['cer']:.2f}")
        assert best == f"{100 * record['best']['wer']:.2f}"
        assert 0 <= greedy["wer"] <= 1.5, "metrics.jsonl keeps fractions, for programs"
    assert not re.search(r"WER \d\.\d{4}(?!\d|%)", output), "no rate printed as a fraction"


@needs_data("fsdd")
def test_evaluate_prints_its_rates_in_percent(run, digits):  # noqa: F811
    out, _ = run
    result = training("evaluate", "--model", str(out / "best"), "--manifest", str(digits), "--no-lm")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["utterances"] == 8 and 0 <= report["greedy"]["wer"] <= 1.5
    assert f"8 utterances: greedy WER {percent(report['greedy']['wer'])} CER {percent(report['greedy']['cer'])}" in (
        result.stderr
    )


@needs_data("fsdd")
def test_tensorboard_event_files_hold_the_runs_metrics(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = run
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/learning_rate", "eval/greedy/wer", "eval/greedy/cer", "eval/best/wer"} <= tags
    assert "train/frozen" not in tags, "booleans are not curves"
    records = metrics(out)
    logged = [record for record in records if "loss" in record]
    loss = events.Scalars("train/loss")
    assert [event.step for event in loss] == [record["step"] for record in logged] == [5, 10, 15, 20]
    assert [event.value for event in loss] == pytest.approx([record["loss"] for record in logged], rel=1e-6)
    evaluated = [record for record in records if "eval" in record]
    wer = events.Scalars("eval/greedy/wer")
    assert [event.step for event in wer] == [10, 20]
    assert [event.value for event in wer] == pytest.approx(
        [100 * record["eval"]["greedy"]["wer"] for record in evaluated], rel=1e-6
    ), "in percent, as people read rates"


def test_scalars_name_the_numbers_of_each_kind_of_record():
    assert scalars({"step": 3, "loss": 2.5, "frozen": True, "learning_rate": 1e-4}) == {
        "train/loss": 2.5,
        "train/learning_rate": 1e-4,
    }
    evaluation = {
        "step": 3,
        "eval": {"utterances": 2, "greedy": {"wer": 0.5, "cer": 0.25, "words": 4}, "beam": {"wer": 0.25, "cer": 0.1}},
        "best": {"step": 3, "wer": 0.25, "cer": 0.1},
    }
    assert scalars(evaluation) == {
        "eval/greedy/wer": 50.0,
        "eval/greedy/cer": 25.0,
        "eval/beam/wer": 25.0,
        "eval/beam/cer": 10.0,
        "eval/best/wer": 25.0,
        "eval/best/cer": 10.0,
    }


@needs_data("fsdd")
def test_plot_saves_the_loss_and_wer_curves_as_a_png(run, tmp_path):
    pytest.importorskip("matplotlib", reason="the plot extra: pip install '.[plot]'")
    out, _ = run
    chosen = tmp_path / "figures" / "curves.png"
    result = training("plot", str(out), "--out", str(chosen))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str(chosen)
    data = chosen.read_bytes()
    assert png_size(data) == (1200, 400), "two panels, loss and WER, 6 x 4 inches at 100 dpi"
    assert len(data) > 10_000, "curves, axes and labels, not a blank image"
    default = training("plot", str(out))
    assert default.returncode == 0 and (out / "curves.png").is_file(), default.stderr[-3000:]


def test_plot_of_a_pretraining_run_draws_its_loss_alone(tmp_path):
    """A run without evaluations (pretraining): written by MetricsLog itself, one panel."""
    pytest.importorskip("matplotlib", reason="the plot extra: pip install '.[plot]'")
    log = MetricsLog(tmp_path / "metrics.jsonl", enabled=True)
    for step in range(10, 110, 10):
        log.write({"step": step, "loss": 5.0 / step, "accuracy": step / 200, "learning_rate": 1e-4})
    log.close()
    result = training("plot", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert png_size((tmp_path / "curves.png").read_bytes()) == (600, 400)


@pytest.mark.parametrize(
    "contents, words",
    [
        (None, "no such run folder"),
        ({}, "no metrics.jsonl"),
        ({"metrics.jsonl": ""}, "no metrics yet"),
        ({"metrics.jsonl": "{not json\n{}\n"}, "metrics.jsonl:1: not a JSON record"),
        ({"metrics.jsonl": json.dumps({"step": 1, "audio_seconds": 3.0}) + "\n"}, "neither a loss nor an evaluation"),
    ],
)
def test_plot_of_a_folder_without_metrics_is_a_clear_error(tmp_path, contents, words):
    folder = tmp_path / "run"
    if contents is not None:
        folder.mkdir()
        for name, text in contents.items():
            (folder / name).write_text(text)
    result = training("plot", str(folder))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not (folder / "curves.png").exists()


@pytest.mark.parametrize("command, kind", [("finetune", FinetuneConfig), ("pretrain", PretrainConfig)])
def test_help_lists_every_config_key_with_its_default(command, kind):
    result = training(command, "--help")
    assert result.returncode == 0, result.stderr
    listed = dict(re.findall(r"^  (\w+): .* = (.*)$", result.stdout, re.MULTILINE))
    for item in dataclasses.fields(kind):
        default = item.default_factory() if item.default is dataclasses.MISSING else item.default
        assert json.loads(listed.pop(item.name)) == default, item.name
    assert not listed, f"keys listed that the config does not have: {listed}"
    assert "tensorboard: bool = false" in result.stdout
