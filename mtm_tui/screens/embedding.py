"""The Embedding screen: a run's test embeddings in a plane, with its class centres and class
embeddings (the paper's Figs. 2-3), from the snapshot the run saves at its best and last epochs.
`p` cycles the planes the snapshot holds (the class centres' PCA, Fisher LDA, the points' PCA);
`b` switches between the best and the last epoch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Header, Static

from mtm_engine.snapshots import PLANES, next_projection
from mtm_tui.screens.base import PollingScreen
from mtm_tui.widgets.embedding import EmbeddingPlot


@dataclass(frozen=True)
class EmbeddingData:
    meta: dict[str, Any]
    snapshot: dict[str, Any] | None   # the epoch's 2-D snapshot, None before the first epoch


class EmbeddingScreen(PollingScreen[EmbeddingData]):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back"), Binding("b", "toggle", "Best/last epoch"),
                Binding("p", "projection", "Next plane")]
    POLL_S = 2.0

    def __init__(self, run_id: str):
        super().__init__()
        self.run_id, self.which = run_id, "last"
        self.projection: str | None = None   # the plane asked for (None: the snapshot's default)
        self.meta: dict | None = None
        self.snapshot: dict | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="embedding-title")
        yield EmbeddingPlot(id="embedding")
        yield Footer()

    def fetch(self) -> EmbeddingData:
        store = self.app.store
        return EmbeddingData(store.meta(self.run_id), store.snapshot(self.run_id, self.which))

    def show(self, data: EmbeddingData) -> None:
        self.meta, self.snapshot = data.meta, data.snapshot
        self.redraw()

    def redraw(self) -> None:
        plot = self.query_one(EmbeddingPlot)
        shown = plot.update(self.snapshot, self.projection)
        other = "best" if self.which == "last" else "last"
        name = escape(self.meta["name"]) if self.meta else ""
        head = f"[b]{self.run_id[:8]}[/b] {name}: the {self.which} epoch"
        if shown is None:
            self.query_one("#embedding-title", Static).update(f"{head} · b: the {other}")
            return
        following = next_projection(self.snapshot, shown)
        keys = f"p: the {following} plane · b: the {other} epoch" if following != shown else \
            f"b: the {other} epoch · PCA only (an older snapshot)"
        self.query_one("#embedding-title", Static).update(
            f"{head} ({self.snapshot.get('epoch', '?')}) · {keys}\n"
            f"plane [b]{shown}[/b] · {escape(plot.describe())}")

    def action_projection(self) -> None:
        plot = self.query_one(EmbeddingPlot)
        following = next_projection(self.snapshot, plot.projection)
        if following is None:
            self.notify("no embedding snapshot yet: the run writes one after each epoch")
            return
        if following == plot.projection:
            title = PLANES[following].title if following in PLANES else following
            self.notify(f"this snapshot has one plane ({title}): it was written before runs saved three")
        self.projection = following
        self.redraw()

    def action_toggle(self) -> None:
        self.which = "best" if self.which == "last" else "last"
        self.refetch()
