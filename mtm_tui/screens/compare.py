"""The Compare screen: several runs' curves overlaid, and a table of what differs between them."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static
from textual_plotext import PlotextPlot

from mtm_engine.records import METRICS, classifiers_in, differing_keys, flatten_spec
from mtm_engine.results import summarise
from mtm_tui.screens.base import PollingScreen
from mtm_tui.widgets.charts import lines

# key -> (label, metric, split); accuracies are of each run's first classifier
CHOICES = {
    "1": ("validation accuracy", METRICS["acc"], "val"),
    "2": ("test accuracy", METRICS["acc"], "test"),
    "3": ("training loss", METRICS["train_loss"], "test"),
    "4": ("cluster size σ (test)", METRICS["cluster_size"], "test"),
    "5": ("centre distance ρ (test)", METRICS["centre_distance"], "test"),
    "6": ("centre separation (test)", METRICS["centre_separation"], "test"),
    "7": ("median cosine (test)", METRICS["median_cosine"], "test"),
}

class CompareScreen(PollingScreen):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back"),
                *(Binding(k, f"metric('{k}')", label, show=k in "1345") for k, (label, _, _) in CHOICES.items())]

    def __init__(self, run_ids: list[str]):
        super().__init__()
        self.run_ids, self.metric = run_ids, "1"
        self.runs: dict[str, tuple] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield PlotextPlot(id="compare-chart")
        yield Static("", id="compare-hint")
        yield DataTable(id="compare-table", cursor_type="row")
        yield Footer()

    def fetch(self) -> dict[str, tuple]:
        return {rid: self.app.store.run(rid) for rid in self.run_ids}

    def show(self, runs: dict[str, tuple]) -> None:
        self.runs = runs
        self.draw()
        specs = {rid: meta["spec"] for rid, (meta, _, _) in runs.items()}
        keys = differing_keys(specs.values()) if len(runs) > 1 else []
        table = self.query_one(DataTable)
        table.clear(columns=True)
        table.add_columns("run", "name", "status", *keys, "classifier", "best epoch", "val (best)", "test (best)",
                          "test (last)")
        for rid, (meta, row, records) in runs.items():
            flat = flatten_spec(meta["spec"])
            classifiers = classifiers_in(records)
            summary = summarise(records, classifiers[:1])
            sel = summary["val"].get(classifiers[0]) if classifiers else None
            figures = (["-"] * 5 if sel is None else
                       [classifiers[0], str(sel["epoch"]), f"{sel['val_acc'] or 0:.4f}", f"{sel['test_acc']:.4f}",
                        f"{summary['final'][classifiers[0]]['test_acc']:.4f}"])
            table.add_row(rid, row["name"], row["status"], *(str(flat.get(k)) for k in keys), *figures)
        self.query_one("#compare-hint", Static).update(
            f"{len(runs)} runs; keys 1-7 choose the metric; the table shows only the keys that differ")

    def draw(self) -> None:
        label, metric, split = CHOICES[self.metric]
        series = {}
        for rid, (_, row, records) in self.runs.items():
            key = metric.key(split, next(iter(classifiers_in(records)), "cos"))
            series[f"{rid[:8]} {row['name']}"] = ([r["epoch"] for r in records], [r.get(key) for r in records])
        lines(self.query_one(PlotextPlot), f"{label} (first classifier of each run)", series, log_y=metric.log)

    def action_metric(self, key: str) -> None:
        self.metric = key
        self.draw()
