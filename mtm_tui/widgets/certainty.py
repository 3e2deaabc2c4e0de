"""The Run screen's Certainty tab: a run's kept `mtm eval --certainty` measurement, as a table of
each score's AUROCs and a chart of its risk-coverage curves.

The TUI never measures (that loads the dataset and the checkpoint: a command's work, not a UI's);
it shows what `mtm eval RUN --certainty` kept in the run's folder, or how to make it.
"""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static
from textual_plotext import PlotextPlot

from mtm_engine.records import CERTAINTY_MEASURES
from mtm_tui.widgets.palette import colour, marker, rich_colour

SHOWN = ("misclassification_auroc", "aurc", "accuracy_at_90", "ood_auroc", "ood_fpr95")   # of CERTAINTY_MEASURES


class CertaintyView(Vertical):
    """update(result): analysis.certainty's result, None (never measured) or {"error": line}."""

    DEFAULT_CSS = """
    CertaintyView > .about { height: auto; padding: 0 1; }
    CertaintyView > DataTable { height: auto; max-height: 10; }
    CertaintyView > PlotextPlot { height: 1fr; min-height: 8; }
    CertaintyView > .legend { height: auto; max-height: 3; padding: 0 1; }
    """

    def __init__(self, run_id: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.run_id = run_id
        self.result: dict[str, Any] | None = None

    def compose(self) -> ComposeResult:
        yield Static("", classes="about")
        yield DataTable(cursor_type="none")
        yield PlotextPlot()
        yield Static("", classes="legend")

    def update(self, result: dict[str, Any] | None) -> None:
        self.result = result
        if self.is_mounted:
            self.redraw()

    def redraw(self) -> None:
        about, table = self.query_one(".about", Static), self.query_one(DataTable)
        plot, legend = self.query_one(PlotextPlot), self.query_one(".legend", Static)
        table.clear(columns=True)
        plot.plt.clear_data()
        plot.plt.clear_figure()
        result = self.result
        if not result or "error" in result:
            about.update((f"[red]{escape(result['error'])}[/]\n" if result else "Not measured yet. ")
                         + f"In a shell: [b]mtm eval {self.run_id[:8]} --certainty --ood DATASET[/b] (for "
                         "example --ood mnist for a Fashion-MNIST run); it measures the best checkpoint and keeps "
                         "the result here.")
            plot.display = legend.display = table.display = False
            return
        plot.display = legend.display = table.display = True
        about.update(f"the {result['classifier']} classifier on the test split, {result['checkpoint']} checkpoint "
                     f"(epoch {result['epoch']}): accuracy {100 * result['accuracy']:.2f}%, ECE {result['ece']:.4f} "
                     f"at T = {result['temperature']:.3g} (fitted on validation); AUROC: right against wrong"
                     + (f"; OOD: {result['ood']}'s test split" if result["ood"] else ""))
        first = next(iter(result["scores"].values()))
        shown = [k for k in SHOWN if k in first]
        table.add_columns("score", *(CERTAINTY_MEASURES[k] for k in shown))
        for name, row in result["scores"].items():
            table.add_row(name, *(f"{row[k]:.4f}" for k in shown))
        plt = plot.plt
        plt.title("risk (error rate of the surest) against coverage")
        plt.xlabel("coverage")
        curves = result["risk_coverage"]
        for i, curve in enumerate(curves.values()):
            plt.plot(curve["coverage"], curve["risk"], color=colour(i), marker="braille")
        plot.refresh()
        legend.update("   ".join(f"[{rich_colour(i)}]{marker(i)}[/] {escape(name)} AURC {result['scores'][name]['aurc']:.4f}"
                                 for i, name in enumerate(curves)))
