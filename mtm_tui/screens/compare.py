"""The Compare screen: several runs' curves overlaid, and a table of what differs between them.

Seeds of one configuration (the same spec but for the seed: `config_id`) are drawn as one band, their
mean with mean ± std around it, and make one row of the table; `s` shows each run on its own instead.
Legends and rows are named by the keys that differ between what is drawn, never by run names alone."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static

from mtm_engine.config import comparable_spec
from mtm_engine.records import METRICS, Metric, classifiers_in, config_id, differing_keys, flatten_spec
from mtm_engine.results import summarise
from mtm_tui.screens.base import PollingScreen
from mtm_tui.services.rows import compact, mean_std, short_names, test_selected
from mtm_tui.widgets.charts import ChartSpec, MetricChart, Series, View


def compare_choices() -> dict[str, tuple[str, Metric, str]]:
    """key -> (label, metric, split): the accuracies (of each run's primary classifier; pure heads: `pure`), the
    training loss, then the catalogue's measures drawn per epoch, on the validation split (keys 1-9)."""
    choices = [("validation accuracy", METRICS["acc"], "val"), ("test accuracy", METRICS["acc"], "test"),
               ("training loss", METRICS["train_loss"], "val"),
               *((f"{m.words} (validation)", m, "val") for m in METRICS.values() if m.curve)]
    return {str(n): choice for n, choice in enumerate(choices[:9], 1)}


SEED = "train.seed"


def primary(row: dict[str, Any], records: list[dict[str, Any]]) -> str:
    return row.get("primary") or next(iter(classifiers_in(records)), "cos")


@dataclass(frozen=True)
class Group:
    """Runs drawn as one: the seeds of a configuration (grouped), or one run (apart)."""
    label: str                          # the keys that differ from the other groups, "lr=5e-4 loss=PP"
    runs: tuple[tuple[str, tuple], ...]  # (run id, (meta, row, records)), in the order asked for


def groups_of(runs: dict[str, tuple], by_config: bool) -> list[Group]:
    """Group the runs (seeds of a configuration together, or each alone) and name each group by the spec keys
    whose values differ between groups (the seed too, where runs are apart); a name breaks a tie."""
    members: dict[str, list[tuple[str, tuple]]] = {}
    for rid, data in runs.items():
        members.setdefault(config_id(data[0]["spec"]) if by_config else rid, []).append((rid, data))
    firsts = [m[0][1][0]["spec"] for m in members.values()]
    keys = [k for k in differing_keys(firsts) if not (by_config and k == SEED)]
    names = short_names(keys)
    labels = []
    for grouped in members.values():
        flat = flatten_spec(comparable_spec(grouped[0][1][0]["spec"]))   # as differing_keys saw it (r of E: 0)
        label = " ".join(f"{names[k]}={compact(flat.get(k))}" for k in keys)
        labels.append(label or grouped[0][1][1]["name"])
    seen = Counter(labels)
    return [Group(label if seen[label] == 1 else f"{label} {grouped[0][0][:8]}", tuple(grouped))
            for label, grouped in zip(labels, members.values())]


def mean_and_spread(series: list[tuple[list, list]]) -> tuple[list, list, list]:
    """Epochs, the mean, and the std (n - 1) at each epoch, over the runs that reached it (0 where one run did)."""
    at: dict[Any, list[float]] = {}
    for xs, ys in series:
        for x, y in zip(xs, ys):
            if y is not None:
                at.setdefault(x, []).append(y)
    epochs = sorted(at)
    return (epochs, [statistics.fmean(at[e]) for e in epochs],
            [statistics.stdev(at[e]) if len(at[e]) > 1 else 0.0 for e in epochs])


def comparison(label: str, metric: Metric, split: str) -> ChartSpec:
    """A chart of one metric, one series (a band, where a group has several seeds) per group: data is a list
    of `Group`s."""
    def series(groups: list[Group], view: View) -> Series:
        out: Series = {}
        for group in groups:
            curves = [([r["epoch"] for r in records], [r.get(metric.key(split, primary(row, records))) for r in records])
                      for _, (_, row, records) in group.runs]
            if len(curves) == 1:
                out[group.label] = curves[0]
            else:
                xs, mean, spread = mean_and_spread(curves)
                out[f"{group.label} ×{len(curves)}"] = (xs, mean, spread)
        return out
    accuracy = " (each run's primary classifier)" if metric.name == "acc" else ""
    return ChartSpec(label, lambda view: f"{label}{accuracy}" + ("; log" if metric.log else ""), series,
                     log_y=metric.log)


@dataclass(frozen=True)
class CompareData:
    runs: dict[str, tuple]   # run id -> (meta, row, records), in the order asked for


class CompareScreen(PollingScreen[CompareData]):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back"),
                Binding("z", "zoom", "Zoom"),
                Binding("s", "seeds", "Seeds: bands / apart"),
                *(Binding(k, f"metric('{k}')", label, show=k in "1345") for k, (label, _, _) in compare_choices().items())]

    def __init__(self, run_ids: list[str]):
        super().__init__()
        self.choices = compare_choices()
        for key, (label, _, _) in self.choices.items():   # measures registered since the class was made
            if key not in self._bindings.key_to_bindings:
                self._bindings.bind(key, f"metric('{key}')", label, show=False)
        self.run_ids, self.metric, self.by_config = run_ids, "1", True
        self.runs: dict[str, tuple] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield MetricChart(comparison(*self.choices["1"]), id="compare-chart")
        yield Static("", id="compare-hint")
        yield DataTable(id="compare-table", cursor_type="row")
        yield Footer()

    def fetch(self) -> CompareData:
        return CompareData({rid: self.app.store.run(rid) for rid in self.run_ids})

    def show(self, data: CompareData) -> None:
        self.runs = data.runs
        self.draw()

    def draw(self) -> None:
        groups = groups_of(self.runs, self.by_config)
        self.query_one(MetricChart).update(groups)
        specs = [group.runs[0][1][0]["spec"] for group in groups]
        keys = [k for k in differing_keys(specs) if not (self.by_config and k == SEED)] if len(groups) > 1 else []
        table = self.query_one(DataTable)
        table.clear(columns=True)
        # the figures first (what one compares), then the spec keys that differ
        table.add_columns("runs", "drawn as", "val% (best)", "test% (best)", "test% (last)", "classifier", "best epoch",
                          "status", *keys)
        for group in groups:
            chosen, last, epochs, statuses = [], [], [], Counter()
            for _, (_, row, records) in group.runs:
                classifier = primary(row, records)
                summary = summarise(records, (classifier,))
                statuses[row["status"]] += 1
                if (sel := summary[row.get("selection", "val")].get(classifier)) is not None:
                    chosen.append(sel)
                    last.append(summary["final"][classifier]["test_acc"])
                    epochs.append(str(sel["epoch"]))
            rid, (meta, row, records) = group.runs[0]
            flat = flatten_spec(comparable_spec(meta["spec"]))
            figures = (["-"] * 5 if not chosen else
                       [mean_std([s["val_acc"] for s in chosen if s["val_acc"] is not None]),
                        mean_std([s["test_acc"] for s in chosen]) + test_selected(row),
                        mean_std(last), primary(row, records), ",".join(epochs)])
            count = rid[:8] if len(group.runs) == 1 else f"×{len(group.runs)} seeds"
            table.add_row(count, group.label, *figures, " ".join(f"{n} {s}" for s, n in statuses.items()),
                          *(str(flat.get(k)) for k in keys))
        seeds = sum(len(g.runs) > 1 for g in groups)
        self.query_one("#compare-hint", Static).update(
            f"{len(self.runs)} runs in {len(groups)} {'configurations' if self.by_config else 'lines'}"
            + (f" ({seeds} drawn as mean ± std bands of their seeds)" if seeds else "")
            + f"; 1-{len(self.choices)} metric, z zoom, s seeds " + ("apart" if self.by_config else "as bands"))

    def action_metric(self, key: str) -> None:
        self.metric = key
        chart = self.query_one(MetricChart)
        chart.chart = comparison(*self.choices[key])
        chart.redraw()

    def action_seeds(self) -> None:
        self.by_config = not self.by_config
        self.draw()

    def action_zoom(self) -> None:
        chart = self.query_one(MetricChart)
        chart.set_view(View(last={0: 10, 10: 5, 5: 0}[chart.view.last]))
