"""A training run's learning curves as a PNG: the training loss by update and, for a fine-tuning run
that evaluated, the WER in percent by update (greedy, and beam search with the LM when it has one).
Read from the run folder's metrics.jsonl (`training.metrics_log`); drawn with matplotlib's Agg
backend (no display needed)."""

from __future__ import annotations

from pathlib import Path

from .metrics_log import read_records

INSTALL_MATPLOTLIB = "pip install 'w2v-asr[plot]'"
DECODERS = {"greedy": "greedy", "beam": "beam search with the LM"}


def curves(records: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """(update, value) series: "loss", and "wer greedy" / "wer beam" in percent where evaluated."""
    series: dict[str, list[tuple[int, float]]] = {"loss": []}
    for record in records:
        if isinstance(record.get("loss"), int | float):
            series["loss"].append((record["step"], float(record["loss"])))
        for decoder in DECODERS:
            rates = record.get("eval", {}).get(decoder)
            if isinstance(rates, dict) and "wer" in rates:
                series.setdefault(f"wer {decoder}", []).append((record["step"], 100 * float(rates["wer"])))
    return {name: points for name, points in series.items() if points}


def plot_run(run: Path, out: Path | None = None) -> Path:
    """Draw `run`'s curves into `out` (default: RUN/curves.png); returns the file written.
    ValueError if the run has no metrics to draw, or matplotlib is not installed."""
    series = curves(read_records(run))
    if not series:
        raise ValueError(f"{run}: its metrics hold neither a loss nor an evaluation to plot")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ValueError(f"plotting needs matplotlib: {INSTALL_MATPLOTLIB}") from None
    rates = {name: points for name, points in series.items() if name.startswith("wer ")}
    panels = int("loss" in series) + int(bool(rates))
    figure = Figure(figsize=(6 * panels, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)  # the Agg backend renders the PNG
    axes = iter(figure.subplots(1, panels, squeeze=False)[0])
    if "loss" in series:
        loss = next(axes)
        steps, values = zip(*series["loss"])
        loss.plot(steps, values, color="tab:blue")
        if min(values) > 0 and max(values) / min(values) > 100:  # a loss that falls by orders of magnitude
            loss.set_yscale("log")
        loss.set(title="training loss", xlabel="update", ylabel="loss")
        loss.grid(alpha=0.3)
    if rates:
        wer = next(axes)
        for name, points in rates.items():
            steps, values = zip(*points)
            wer.plot(steps, values, marker="o", label=DECODERS[name.removeprefix("wer ")])
        wer.set(title="evaluation WER", xlabel="update", ylabel="WER (%)")
        wer.set_ylim(bottom=0)
        wer.grid(alpha=0.3)
        wer.legend()
    figure.suptitle(run.resolve().name)
    out = out or run / "curves.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, format="png")
    return out
