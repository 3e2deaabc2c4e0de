"""Terminal charts of a run's records (plotext, through textual-plotext).

A `MetricChart` owns its data: its screen hands it the data with `update(data)` (a run's records,
or several runs for Compare), and the view (which classifier, the test split on or off, the last
N epochs) with `set_view(...)`. What a chart shows is a `ChartSpec`: a title and the series it
takes from the data. The
validation split is always drawn (selection happens on it, under our protocol); the test split is a toggle, on
from the start for a run without a validation split. The
legend, with each series' last value, sits below the plot, never over its points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from rich.markup import escape
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static
from textual_plotext import PlotextPlot

from mtm_engine.records import METRICS, Metric, acc_key
from mtm_tui.widgets.palette import colour, marker, rich_colour

Records = list[dict[str, Any]]
# label -> (xs, ys), or (xs, ys, spread): a mean drawn with a band of ± spread (the std over seeds)
Series = dict[str, tuple[list, list] | tuple[list, list, list]]


@dataclass(frozen=True)
class View:
    classifier: str = ""      # the accuracy chart's classifier ("" : the run's primary)
    test: bool = False        # draw the test split beside validation
    last: int = 0             # only the last N epochs (0: all)


@dataclass(frozen=True)
class ChartSpec:
    tab: str                                   # the tab's label
    title: Callable[[View], str]
    series: Callable[[Any, View], Series]      # (data, view) -> series, each in epoch order
    log_y: bool = False
    xlabel: str = "epoch"
    diagonal: bool = False                     # draw y = x (ρ against σ)


def _splits(view: View) -> tuple[str, ...]:
    return ("val", "test") if view.test else ("val",)


def _by_epoch(records: Records, keys: dict[str, str]) -> Series:
    """{label: (epochs, values)} for the record keys that the records have."""
    epochs = [r["epoch"] for r in records]
    return {label: (epochs, [r.get(key) for r in records]) for label, key in keys.items()
            if any(key in r for r in records)}


def _measures(metrics: list[Metric]) -> Callable[[Records, View], Series]:
    """Each measure's line on each split shown (one line for a measure of the run as a whole), in catalogue order."""
    def series(records: Records, view: View) -> Series:
        return _by_epoch(records, {f"{m.legend or m.symbol} {split}" if m.per_split else m.legend or m.symbol:
                                   m.key(split) for m in metrics for split in (_splits(view) if m.per_split else ("",))})
    return series


def _accuracy(records: Records, view: View) -> Series:
    return _by_epoch(records, {f"{view.classifier} {split}": acc_key(split, view.classifier)
                               for split in _splits(view)})


def _loss(records: Records, view: View) -> Series:
    return _by_epoch(records, {"L train": METRICS["train_loss"].key()})


def _distance_vs_size(records: Records, view: View) -> Series:
    size, distance = METRICS["cluster_size"], METRICS["centre_distance"]
    return {f"ρ(σ) {split}": ([r.get(size.key(split)) for r in records], [r.get(distance.key(split)) for r in records])
            for split in _splits(view)}


def _split_words(view: View) -> str:
    return "validation and test" if view.test else "validation (t adds test)"


# The titles of the measures' charts that say more than the names of what they draw
TITLES: dict[str, Callable[[View], str]] = {
    "σ & ρ": lambda v: f"cluster size σ, centre distance ρ (Figs. 15-16), {_split_words(v)}; log",
    "Separation": lambda v: f"centre and class-embedding separation (Figs. 18-19), {_split_words(v)}; log",
    "Cosine": lambda v: f"median cosine to the class centre, {_split_words(v)}",
}
# Charts of one chart's measures against each other, drawn after it
AFTER = {"σ & ρ": ChartSpec("ρ vs σ", lambda v: "centre distance ρ against cluster size σ, one point an epoch "
                            "(Fig. 17); line: ρ = σ", _distance_vs_size, xlabel="cluster size σ", diagonal=True)}


def charts() -> dict[str, ChartSpec]:
    """The Run screen's charts by tab: accuracy and loss, then one a `chart` the catalogue's measures name (log
    where all its measures are), in the catalogue's order."""
    tabs: dict[str, list[Metric]] = {}
    for metric in METRICS.values():
        if metric.chart:
            tabs.setdefault(metric.chart, []).append(metric)
    specs = [ChartSpec("Accuracy", lambda v: f"accuracy of the {v.classifier} classifier, {_split_words(v)}",
                       _accuracy),
             ChartSpec("Loss", lambda v: "training loss (mean per instance)", _loss)]
    for tab, metrics in tabs.items():
        log = all(m.log for m in metrics)
        title = TITLES.get(tab) or (lambda v, words=", ".join(m.words for m in metrics), log=log:
                                    f"{words}, {_split_words(v)}" + ("; log" if log else ""))
        specs.append(ChartSpec(tab, title, _measures(metrics), log_y=log))
        if tab in AFTER:
            specs.append(AFTER[tab])
    return {spec.tab: spec for spec in specs}


def _drawable(point: tuple, log_y: bool) -> bool:
    """(x, y[, spread]) with every value a finite number, and y above 0 on a log axis."""
    return (all(v is not None and math.isfinite(v) for v in point)) and (not log_y or point[1] > 0)


def epoch_ticks(epochs: list[int], most: int = 8) -> list[int]:
    """Whole-number ticks, evenly spaced, at most `most` of them, always ending on the last epoch."""
    if not epochs:
        return []
    first, last = min(epochs), max(epochs)
    step = max(1, math.ceil((last - first + 1) / most))
    ticks = list(range(last, first - 1, -step))[::-1]
    return ticks


def log_ticks(low: float, high: float, most: int = 8) -> tuple[list[float], list[str]]:
    """Ticks for log10 values drawn on a linear axis: (positions as log10, labels as the values).
    1-2-5 steps where the range spans a decade or more (the powers of ten alone where that makes more than
    `most`), else `most` (at most 5) even steps in log space. A narrow chart asks for few: plotext drops
    labels that would overlap, and which it drops depends on the order it draws them in."""
    if high - low >= 1:
        values = [m * 10.0 ** k for k in range(math.floor(low), math.ceil(high) + 1) for m in (1, 2, 5)]
        values = [v for v in values if low <= math.log10(v) <= high] or [10 ** low, 10 ** high]
        if len(values) > most:   # many decades: the powers of ten alone, every k-th of them where still too many
            values = [v for v in values if math.log10(v).is_integer()] or values[::3]
            values = values[::math.ceil(len(values) / most)]
    else:
        steps = min(most, 5)
        values = [10 ** (low + (high - low) * i / (steps - 1)) for i in range(steps)]
    return [math.log10(v) for v in values], [f"{v:.3g}" for v in values]


def readout(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.4g}"


class MetricChart(Vertical):
    """One chart of a run: a plot and its legend (below the plot), each series with its last value."""

    DEFAULT_CSS = """
    MetricChart { height: 1fr; }
    MetricChart > PlotextPlot { height: 1fr; min-height: 8; }
    MetricChart > .legend { height: auto; max-height: 3; padding: 0 1; }
    """

    def __init__(self, chart: ChartSpec, **kwargs: Any):
        super().__init__(**kwargs)
        self.chart = chart
        self.data: Any = []
        self.view = View()
        self.drawn: Series = {}   # what the last redraw plotted, after the zoom: label -> (xs, ys[, spread])

    def compose(self) -> ComposeResult:
        yield PlotextPlot()
        yield Static("", classes="legend")

    def update(self, data: Any) -> None:
        self.data = data
        self.redraw()

    def set_view(self, view: View) -> None:
        self.view = view
        self.redraw()

    def redraw(self) -> None:
        if not self.is_mounted:
            return
        self.drawn = {}
        for label, (xs, ys, *spread) in self.chart.series(self.data, self.view).items():
            if self.view.last:   # the zoom: each series' last N epochs
                xs, ys, spread = xs[-self.view.last:], ys[-self.view.last:], [s[-self.view.last:] for s in spread]
            kept = [p for p in zip(xs, ys, *spread) if _drawable(p, self.chart.log_y)]
            if kept:
                self.drawn[label] = tuple(map(list, zip(*kept)))
        plot = self.query_one(PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        plt.xlabel(self.chart.xlabel)
        title = self.chart.title(self.view) + (f", last {self.view.last} epochs" if self.view.last else "")
        if not self.drawn:
            plt.title(f"{title}: waiting for the first epoch")
            plot.refresh()
            self.query_one(".legend", Static).update("")
            return
        plt.title(title)
        # A log scale is drawn as log10 values on a linear axis, labelled with the values: plotext's own
        # log scale takes log10 of its data in place at every render, so a resize drew log(log(y)) and crashed.
        log = math.log10 if self.chart.log_y else (lambda y: y)
        plotted = [(xs, [log(y) for y in ys]) for xs, ys, *_ in self.drawn.values()]
        def lower(y: float, s: float) -> float:   # on a log axis, a band that reaches 0 stops at the mean
            return log(y - s) if y - s > 0 or not self.chart.log_y else log(y)

        bands = [(i, xs, [lower(y, s) for y, s in zip(ys, spread[0])], [log(y + s) for y, s in zip(ys, spread[0])])
                 for i, (xs, ys, *spread) in enumerate(self.drawn.values()) if spread and any(spread[0])]
        for i, xs, low, high in bands:   # mean ± std over seeds: dotted edges in the series' colour, under its line
            plt.plot(xs, low, color=colour(i), marker="·")
            plt.plot(xs, high, color=colour(i), marker="·")
        for i, (xs, ys) in enumerate(plotted):
            if len(xs) > 1 and not self.chart.diagonal:
                plt.plot(xs, ys, color=colour(i), marker="braille")
            plt.scatter(xs, ys, color=colour(i), marker=marker(i))   # the epochs themselves, by marker
        if self.chart.diagonal:
            values = [v for xs, ys in plotted for v in xs + ys]
            low, high = min(values), max(values)
            plt.plot([low, high], [low, high], color="gray", marker="braille")
        else:
            plt.xticks(epoch_ticks([x for xs, _ in plotted for x in xs]))
        heights = [y for _, ys in plotted for y in ys] + [y for _, _, low, high in bands for y in low + high]
        if self.chart.log_y:
            plt.yticks(*log_ticks(min(heights), max(heights)))
        if max(heights) == min(heights):   # one value (the first epoch): plotext would span it -50%..+50%
            pad = 0.01 * abs(heights[0]) or 0.01
            plt.ylim(heights[0] - pad, heights[0] + pad)
        plot.refresh()
        self.query_one(".legend", Static).update("   ".join(
            f"[{rich_colour(i)}]{marker(i)}[/] {escape(label)} {readout(ys[-1])}" + (f"±{readout(spread[0][-1])}"
                                                                                 if spread else "")
            for i, (label, (_, ys, *spread)) in enumerate(self.drawn.items())))
