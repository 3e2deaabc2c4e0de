"""The Runs screen: a live table of every run and sweep in the store."""

from __future__ import annotations

import contextlib
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Input, Static

from mtm_engine.errors import MtmError
from mtm_engine.export import BACKBONE_SHORT, DATASET_TITLES, LOSS_CODES
from mtm_tui import jobs
from mtm_tui.rows import COLUMNS as ROW_COLUMNS
from mtm_tui.rows import row_cells
from mtm_tui.screens.base import ConfirmScreen, PollingScreen

AGE_REFRESH_S = 5.0
ENDED = ("finished", "failed", "diverged", "interrupted")
SHOWN = 500   # rows in the table at most: a 3,750-run store is sorted and filtered whole, shown in part
COLUMNS = ("", *ROW_COLUMNS)
SORT_FIELDS = {"id": "id", "name": "name", "status": "status", "dataset": "dataset", "net": "backbone",
               "loss": "loss", "d": "dim", "epoch": "epoch", "val%": "best_val", "test%": "test_acc", "age": "created",
               "sweep": "sweep"}


def searchable(row: dict[str, Any]) -> str:
    """What the filter matches: the row's fields as stored (fashion-mnist, push_pull) and as shown
    (F-MNIST, PP), its tags and note. Every word typed must occur."""
    shown = (row.get("id", ""), row.get("name", ""), row.get("status", ""), DATASET_TITLES.get(row["dataset"], ""),
             BACKBONE_SHORT.get(row["backbone"], ""), LOSS_CODES.get(row["loss"], ""))
    stored = (row["dataset"], row["backbone"], row["loss"], row.get("sweep") or "", row.get("note") or "",
              *(row.get("tags") or ()))
    return " ".join(map(str, shown + stored)).lower()


def cells(row: dict[str, Any], now: float, marked: bool) -> tuple:
    return ("●" if marked else " ", *row_cells(row, now))


class RunsScreen(PollingScreen):
    BINDINGS = [
        Binding("enter", "open", "Open", show=False),
        Binding("space", "mark", "Mark"),
        Binding("m", "compare", "Compare"),
        Binding("v", "embedding", "Embedding"),
        Binding("x", "stop", "Stop"),
        Binding("R", "resume", "Resume"),
        Binding("d", "delete", "Delete"),
        Binding("c", "compose", "Compose"),
        Binding("e", "export", "Export"),
        Binding("s", "sort", "Sort"),
        Binding("g", "group", "Group"),
        Binding("slash", "filter", "Filter", show=False),
    ]

    def __init__(self):
        super().__init__()
        self.rows: list[dict[str, Any]] = []
        self.marked: set[str] = set()
        self.sort_by, self.reverse, self.grouped = "age", True, False   # newest first
        self._header: tuple = ()
        self._content: dict[str, tuple] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="filter: words to match (id, name, status, dataset, net, loss, sweep, tag, note)",
                    id="filter")
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Static("", id="runs-status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()
        self.set_interval(AGE_REFRESH_S, self.redraw)   # ages move on while the store stands still
        super().on_mount()

    def fetch(self) -> list[dict[str, Any]]:
        rows = self.app.store.rows()
        with contextlib.suppress(MtmError):   # record dead runs, and restart a killed pool, where the home is writable
            self.app.store.reap(rows)
            if any(r["status"] == "queued" for r in rows):
                jobs.ensure_pool(self.app.store)
        return jobs.with_queue_places(rows)

    def show(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.redraw()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.redraw()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.query_one(DataTable).focus()

    def visible(self) -> list[dict[str, Any]]:
        words = self.query_one("#filter", Input).value.lower().split()
        rows = [r for r in self.rows if not words or all(word in searchable(r) for word in words)]
        field = SORT_FIELDS[self.sort_by]
        rows.sort(key=lambda r: (r.get(field) is None, r.get(field) if r.get(field) is not None else 0),
                  reverse=self.reverse)
        if self.grouped:   # stable: keeps the sort inside each sweep
            rows.sort(key=lambda r: r.get("sweep") or "")
        return rows

    def redraw(self) -> None:
        """Show the visible rows. When only cell values changed (an epoch landed), just those
        cells are updated; a new order, filter or set of runs rebuilds the table."""
        table = self.query_one(DataTable)
        now = self.app.clock()
        matching = self.visible()
        rows = matching[:SHOWN]
        columns = COLUMNS if self.grouped else COLUMNS[:-1]
        header = tuple(label + ((" ▼" if self.reverse else " ▲") if label == self.sort_by else "") for label in columns)
        content = {row["id"]: cells(row, now, row["id"] in self.marked)[:len(columns)] for row in rows}
        if header == self._header and list(content) == list(self._content):
            for run_id, values in content.items():
                for label, old, new in zip(columns, self._content[run_id], values):
                    if old != new:   # a longer status ("interrupted") widens its column rather than being cut
                        table.update_cell(run_id, label, new, update_width=True)
        else:
            selected = self.selected_id()
            table.clear(columns=True)
            for label, title in zip(columns, header):
                table.add_column(title, key=label)
            for run_id, values in content.items():
                table.add_row(*values, key=run_id)
            if selected in content:
                table.move_cursor(row=table.get_row_index(selected))
        self._header, self._content = header, content
        live = sum(r["status"] in ("queued", "running") for r in self.rows)
        shown = f"{len(rows)} shown of {len(matching)} matching" if len(matching) > SHOWN else f"{len(rows)}"
        self.query_one("#runs-status", Static).update(
            f"{shown} of {len(self.rows)} runs, {live} live, {len(self.marked)} marked · sorted by "
            f"{self.sort_by}{' · grouped by sweep' if self.grouped else ''} · enter opens a run, ? for help")

    def selected_id(self) -> str | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.app.open_run(event.row_key.value)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        label = event.column_key.value
        if label in SORT_FIELDS:
            self.reverse = not self.reverse if label == self.sort_by else False
            self.sort_by = label
            self.redraw()

    # --- actions ----------------------------------------------------------------------------------

    def action_open(self) -> None:
        if (run_id := self.selected_id()) is not None:
            self.app.open_run(run_id)

    def action_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_sort(self) -> None:
        order = list(SORT_FIELDS)
        self.sort_by = order[(order.index(self.sort_by) + 1) % len(order)]
        self.reverse = self.sort_by in ("val%", "test%", "age", "epoch")
        self.redraw()

    def action_group(self) -> None:
        self.grouped = not self.grouped
        self.redraw()

    def action_mark(self) -> None:
        if (run_id := self.selected_id()) is not None:
            self.marked ^= {run_id}
            self.redraw()

    def action_compare(self) -> None:
        ids = [r["id"] for r in self.rows if r["id"] in self.marked] or [self.selected_id()]
        if ids[0] is not None:
            self.app.open_compare(ids)

    def action_embedding(self) -> None:
        if (run_id := self.selected_id()) is not None:
            self.app.open_embedding(run_id)

    def action_compose(self) -> None:
        self.app.open_compose()

    def action_export(self) -> None:
        self.app.open_export()

    def _confirm_then(self, question: str, job, done: str, refuse: dict[str, str] | None = None) -> None:
        """Ask first, naming the run (id and name); a status in `refuse` is answered at once instead."""
        if (run_id := self.selected_id()) is None:
            return
        row = next(r for r in self.rows if r["id"] == run_id)
        if refuse and row["status"] in refuse:
            self.notify(f"run {run_id[:8]} {row['name']} {refuse[row['status']]}")
            return

        def answered(yes: bool) -> None:
            if yes:
                if job is jobs.delete:
                    self.marked.discard(run_id)
                self.run_job(job, run_id, done)

        self.app.push_screen(ConfirmScreen(question.format(run=f"{run_id[:8]} ({row['name']})")), answered)

    def action_stop(self) -> None:
        self._confirm_then("Stop run {run}? Its last whole epoch stays checkpointed.", jobs.stop,
                           "stop requested for", refuse={s: f"is {s}: nothing to stop" for s in ENDED})

    def action_resume(self) -> None:
        self._confirm_then("Resume run {run} in the background?", jobs.resume_detached, "resuming",
                           refuse={"finished": "has finished all its epochs: nothing to resume",
                                   "running": "is running already", "queued": "is queued already"})

    def action_delete(self) -> None:
        self._confirm_then("Delete run {run}: its records, checkpoints and log?", jobs.delete, "deleted")
