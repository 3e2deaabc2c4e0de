"""The Embedding screen: a 2-D PCA of a run's test embeddings, with its class centres and class
embeddings (the paper's Figs. 2-3), from the snapshot the run saves at its best and last epochs."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Header, Static
from textual_plotext import PlotextPlot

from mtm_tui.screens.base import PollingScreen
from mtm_tui.widgets.charts import embedding


class EmbeddingScreen(PollingScreen):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back"), Binding("b", "toggle", "Best/last epoch")]
    POLL_S = 2.0

    def __init__(self, run_id: str):
        super().__init__()
        self.run_id, self.which = run_id, "last"

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="embedding-title")
        yield PlotextPlot(id="embedding-chart")
        yield Footer()

    def fetch(self) -> tuple:
        store = self.app.store
        return store.meta(self.run_id), store.snapshot(self.run_id, self.which)

    def show(self, data: tuple) -> None:
        meta, snapshot = data
        self.query_one("#embedding-title", Static).update(
            f"[b]{self.run_id[:8]}[/b] {meta['name']}: the {self.which} epoch's snapshot "
            f"(b switches to the {'best' if self.which == 'last' else 'last'})")
        embedding(self.query_one(PlotextPlot), snapshot)

    def action_toggle(self) -> None:
        self.which = "best" if self.which == "last" else "last"
        self.refetch()
