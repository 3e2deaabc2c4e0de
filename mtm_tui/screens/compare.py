"""The Compare screen: several runs' curves overlaid, and a table of what differs between them."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static

from mtm_engine.records import METRICS, Metric, classifiers_in, differing_keys, flatten_spec
from mtm_engine.results import summarise
from mtm_tui.screens.base import PollingScreen
from mtm_tui.widgets.charts import ChartSpec, MetricChart, Series, View

# key -> (label, metric, split); accuracies are of each run's primary classifier (pure heads: `pure`)
CHOICES = {
    "1": ("validation accuracy", METRICS["acc"], "val"),
    "2": ("test accuracy", METRICS["acc"], "test"),
    "3": ("training loss", METRICS["train_loss"], "val"),
    "4": ("cluster size σ (validation)", METRICS["cluster_size"], "val"),
    "5": ("centre distance ρ (validation)", METRICS["centre_distance"], "val"),
    "6": ("centre separation (validation)", METRICS["centre_separation"], "val"),
    "7": ("median cosine (validation)", METRICS["median_cosine"], "val"),
}


def primary(row: dict[str, Any], records: list[dict[str, Any]]) -> str:
    return row.get("primary") or next(iter(classifiers_in(records)), "cos")


def comparison(label: str, metric: Metric, split: str) -> ChartSpec:
    """A chart of one metric, one series per run: data is {run id: (meta, row, records)}."""
    def series(runs: dict[str, tuple], view: View) -> Series:
        return {f"{rid[:8]} {row['name']}": ([r["epoch"] for r in records],
                                             [r.get(metric.key(split, primary(row, records))) for r in records])
                for rid, (_, row, records) in runs.items()}
    accuracy = " (each run's primary classifier)" if metric.name == "acc" else ""
    return ChartSpec(label, lambda view: f"{label}{accuracy}" + ("; log" if metric.log else ""), series,
                     log_y=metric.log)


class CompareScreen(PollingScreen):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back"),
                Binding("z", "zoom", "Zoom"),
                *(Binding(k, f"metric('{k}')", label, show=k in "1345") for k, (label, _, _) in CHOICES.items())]

    def __init__(self, run_ids: list[str]):
        super().__init__()
        self.run_ids, self.metric = run_ids, "1"
        self.runs: dict[str, tuple] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield MetricChart(comparison(*CHOICES["1"]), id="compare-chart")
        yield Static("", id="compare-hint")
        yield DataTable(id="compare-table", cursor_type="row")
        yield Footer()

    def fetch(self) -> dict[str, tuple]:
        return {rid: self.app.store.run(rid) for rid in self.run_ids}

    def show(self, runs: dict[str, tuple]) -> None:
        self.runs = runs
        self.query_one(MetricChart).update(runs)
        specs = {rid: meta["spec"] for rid, (meta, _, _) in runs.items()}
        keys = differing_keys(specs.values()) if len(runs) > 1 else []
        table = self.query_one(DataTable)
        table.clear(columns=True)
        # the figures first (what one compares), then the spec keys that differ
        table.add_columns("run", "name", "val (best)", "test (best)", "test (last)", "classifier", "best epoch",
                          "status", *keys)
        for rid, (meta, row, records) in runs.items():
            flat = flatten_spec(meta["spec"])
            classifier = primary(row, records)
            summary = summarise(records, (classifier,))
            sel = summary["val"].get(classifier)
            figures = (["-"] * 5 if sel is None else
                       [f"{sel['val_acc'] or 0:.4f}", f"{sel['test_acc']:.4f}",
                        f"{summary['final'][classifier]['test_acc']:.4f}", classifier, str(sel["epoch"])])
            table.add_row(rid[:8], row["name"], *figures, row["status"], *(str(flat.get(k)) for k in keys))
        self.query_one("#compare-hint", Static).update(
            f"{len(runs)} runs; keys 1-7 choose the metric, z zooms; the table shows only the keys that differ")

    def action_metric(self, key: str) -> None:
        self.metric = key
        chart = self.query_one(MetricChart)
        chart.chart = comparison(*CHOICES[key])
        chart.redraw()

    def action_zoom(self) -> None:
        chart = self.query_one(MetricChart)
        chart.set_view(View(last={0: 10, 10: 5, 5: 0}[chart.view.last]))
