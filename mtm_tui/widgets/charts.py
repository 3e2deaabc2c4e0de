"""Terminal charts of a run's records (plotext, through textual-plotext). Pure drawing: each
function takes a PlotextPlot and plain data, and redraws it."""

from __future__ import annotations

import math
from typing import Any, Iterable

from textual_plotext import PlotextPlot

from mtm_engine.records import METRICS, acc_key, classifiers_in

COLOURS = ("blue+", "red+", "green+", "orange+", "magenta+", "cyan+", "yellow+", "white", "gray", "blue")


def _reset(widget: PlotextPlot, title: str, xlabel: str = "epoch", ylabel: str = ""):
    plt = widget.plt
    plt.clear_data()
    plt.title(title)
    plt.xlabel(xlabel)
    plt.ylabel(ylabel)
    plt.yscale("linear")
    return plt


def _finite(xs: Iterable[Any], ys: Iterable[Any], log_y: bool) -> tuple[list, list]:
    pairs = [(x, y) for x, y in zip(xs, ys)
             if y is not None and math.isfinite(y) and (not log_y or y > 0)]
    return [x for x, _ in pairs], [y for _, y in pairs]


def lines(widget: PlotextPlot, title: str, series: dict[str, tuple[list, list]], *, xlabel: str = "epoch",
          ylabel: str = "", log_y: bool = False, scatter: bool = False) -> None:
    """One line (or scatter) per named series of (x, y)."""
    plt = _reset(widget, title, xlabel, ylabel)
    drawn = 0
    for i, (label, (xs, ys)) in enumerate(series.items()):
        xs, ys = _finite(xs, ys, log_y)
        if not xs:
            continue
        draw = plt.scatter if scatter or len(xs) == 1 else plt.plot
        draw(xs, ys, label=label, color=COLOURS[i % len(COLOURS)], marker="braille" if not scatter else "dot")
        drawn += 1
    if not drawn:   # an empty log-scale plot crashes plotext (reverse_scale of no data): stay linear
        plt.title(f"{title}: waiting for the first epoch")
    elif log_y:
        plt.yscale("log")
    widget.refresh()


def metric_series(records: list[dict[str, Any]], keys: dict[str, str]) -> dict[str, tuple[list, list]]:
    """{label: (epochs, values)} for record keys, skipping keys a run does not have."""
    epochs = [r["epoch"] for r in records]
    return {label: (epochs, [r.get(key) for r in records]) for label, key in keys.items()
            if any(key in r for r in records)}


# The run screen's charts: name -> (title, drawer). Each drawer takes (widget, records).
def accuracy(widget: PlotextPlot, records: list[dict[str, Any]]) -> None:
    keys = {}
    for c in classifiers_in(records):
        keys[f"val {c}"] = acc_key("val", c)
        keys[f"test {c}"] = acc_key("test", c)
    lines(widget, "accuracy per classifier (validation and test)", metric_series(records, keys), ylabel="accuracy")


def loss(widget: PlotextPlot, records: list[dict[str, Any]]) -> None:
    lines(widget, "training loss (mean per instance)", metric_series(records, {"train loss": "train_loss"}))


def size_and_distance(widget: PlotextPlot, records: list[dict[str, Any]]) -> None:
    size, distance = METRICS["cluster_size"], METRICS["centre_distance"]
    keys = {f"{m.label} {m.symbol} ({split})": m.key(split) for split in ("test", "val") for m in (size, distance)}
    lines(widget, "cluster size σ and centre distance ρ (Figs. 15-16), log scale", metric_series(records, keys),
          log_y=True)


def distance_vs_size(widget: PlotextPlot, records: list[dict[str, Any]]) -> None:
    xs = [r.get(METRICS["cluster_size"].key("test")) for r in records]
    ys = [r.get(METRICS["centre_distance"].key("test")) for r in records]
    top = max([v for v in xs + ys if v is not None and v > 0] or [1.0])
    lines(widget, "centre distance ρ against cluster size σ, test split (Fig. 17); line: ρ = σ",
          {"epochs": (xs, ys), "ρ = σ": ([1e-3, top], [1e-3, top])}, xlabel="cluster size σ", ylabel="ρ",
          scatter=False)


def separation(widget: PlotextPlot, records: list[dict[str, Any]]) -> None:
    separation = METRICS["centre_separation"]
    keys = {"centre separation (test)": separation.key("test"), "centre separation (val)": separation.key("val"),
            "class embedding separation": "ce_separation", "mean |c - g| (test)": "test_ce_gap"}
    lines(widget, "centre separation (Figs. 18-19), log scale", metric_series(records, keys), log_y=True)


def median_cosine(widget: PlotextPlot, records: list[dict[str, Any]]) -> None:
    keys = {f"median cosine ({split})": METRICS["median_cosine"].key(split) for split in ("test", "val")}
    lines(widget, "median cosine similarity to the class centre", metric_series(records, keys))


RUN_CHARTS = {
    "accuracy": ("Accuracy", accuracy),
    "loss": ("Loss", loss),
    "geometry": ("σ & ρ", size_and_distance),
    "rho_sigma": ("ρ vs σ", distance_vs_size),
    "separation": ("Separation", separation),
    "cosine": ("Cosine", median_cosine),
}


def embedding(widget: PlotextPlot, snapshot: dict[str, Any] | None) -> None:
    """The 2-D PCA snapshot: points coloured by class, centres G (+) and class embeddings C (x)."""
    plt = _reset(widget, "", xlabel="PC 1", ylabel="PC 2")
    if not snapshot:
        plt.title("no embedding snapshot yet: it is written after each epoch")
        widget.refresh()
        return
    var = snapshot.get("explained_variance", [0, 0])
    plt.title(f"test embeddings, epoch {snapshot.get('epoch')}: PCA ({100 * var[0]:.0f}% + {100 * var[1]:.0f}% "
              f"of the variance); + class centres G, x class embeddings C")
    points, labels = snapshot["points"], snapshot["labels"]
    for k in sorted(set(labels)):
        xs = [p[0] for p, label in zip(points, labels) if label == k]
        ys = [p[1] for p, label in zip(points, labels) if label == k]
        plt.scatter(xs, ys, marker="dot", color=COLOURS[k % len(COLOURS)], label=f"class {k}")
    centres = snapshot.get("centres") or []
    plt.scatter([c[0] for c in centres], [c[1] for c in centres], marker="+", color="white", label="G")
    if snapshot.get("class_embeddings"):
        ce = snapshot["class_embeddings"]
        plt.scatter([c[0] for c in ce], [c[1] for c in ce], marker="x", color="red", label="C")
    widget.refresh()
