"""The Runs screen: a live table of every run and sweep in the store."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Callable

from rich.cells import cell_len
from rich.markup import escape
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Input, Static

from mtm_engine.errors import MtmError
from mtm_engine.records import ENDED, LIVE, Status, config_id
from mtm_tui.screens.base import ChoiceScreen, ConfirmScreen, PollingScreen, PromptScreen
from mtm_tui.services import jobs
from mtm_tui.services.rows import COLUMNS as ROW_COLUMNS
from mtm_tui.services.rows import WIDE_COLUMNS, cells, detail, group_cells, searchable, stop_question

AGE_REFRESH_S = 5.0
SHOWN = 200   # rows in the table at most: a 3,750-run store is sorted and filtered whole, shown in part
WIDE_AT = 160   # terminal columns from which the table adds seed, lr, time, progress and tags
NARROW_BELOW = 100   # below it, net and d make room for the figures, and the name takes what is left
GROUPINGS = ("none", "sweep", "config")   # `o` cycles: one row per run, by sweep, seeds of a config as one row
SORT_FIELDS = {"id": "id", "name": "name", "status": "status", "dataset": "dataset", "net": "backbone",
               "loss": "loss", "d": "dim", "epoch": "epoch", "val%": "best_val", "test%": "test_acc", "age": "created",
               "sweep": "sweep", "seed": "seed", "lr": "lr", "tags": "tags"}
NEWEST_FIRST = ("val%", "test%", "age", "epoch")   # sorted high to low when first picked
GROUP = "group:"   # row keys of a configuration's seeds shown as one row
# The value a group's row shows for a sort field: the seeds' mean accuracy, its newest run's age, its least epoch
GROUP_VALUES = {"best_val": statistics.mean, "test_acc": statistics.mean, "created": max, "epoch": min}
COLUMNS = ("", *ROW_COLUMNS)
ALL_COLUMNS = COLUMNS + WIDE_COLUMNS


@dataclass(frozen=True)
class RunsData:
    rows: list[dict[str, Any]]   # every run's row, with its epoch in flight and its place in the queue


class RunsScreen(PollingScreen[RunsData]):
    BINDINGS = [
        Binding("enter", "open", "Open", show=False, tooltip="open the run (a group: its seeds side by side)"),
        Binding("c", "compose", "Compose"),
        Binding("f", "compose_from", "From this run", show=False,
                tooltip="compose from this run's spec (any status: change it, launch it)"),
        Binding("l", "log", "Log", tooltip="the run's log, following it"),
        Binding("p", "queue", "Queue", tooltip="the queue and its devices"),
        Binding("space", "mark", "Mark", key_display="␣", tooltip="mark and move down"),
        Binding("m", "compare", "Compare", tooltip="compare the marked runs"),
        Binding("x", "stop", "Stop"),
        Binding("e", "export", "Export", tooltip="export the marked runs, else the filtered, else all"),
        Binding("slash", "filter", "Filter", show=False),
        Binding("v", "embedding", "Embedding", show=False),
        Binding("w", "sweep", "Sweep view", show=False),
        Binding("R", "resume", "Resume", show=False),
        Binding("d", "delete", "Delete", show=False),
        Binding("s", "sort", "Sort by column", show=False,
                tooltip="sort by a column (or click its header; again reverses)"),
        Binding("o", "group", "Group: none, sweep, config", show=False,
                tooltip="group: none, by sweep, the seeds of a config (mean ± std)"),
        Binding("t", "tag", "Tag", show=False),
        Binding("n", "note", "Note", show=False),
        Binding("escape", "leave_filter", "Leave the filter", show=False, tooltip="clear the filter and leave it"),
        Binding("j", "cursor(1)", "Down", show=False),
        Binding("k", "cursor(-1)", "Up", show=False),
        Binding("g,home", "cursor_to(0)", "First row", show=False),
        Binding("G,end", "cursor_to(-1)", "Last row", show=False),
    ]

    def __init__(self):
        super().__init__()
        self.rows: list[dict[str, Any]] = []
        self.marked: set[str] = set()
        self.sort_by, self.reverse, self.grouping = "age", True, "none"   # newest first
        self.groups: dict[str, list[dict[str, Any]]] = {}   # GROUP + config -> its runs, as shown
        self.configs: dict[str, str | None] = {}   # run id -> config id from its stored spec (a run's spec never changes)
        self._header: tuple = ()
        self._content: dict[str, tuple] = {}
        self._content_columns: tuple[str, ...] = ()
        self._matching = 0
        self.fetched = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="filter: words to match (id, name, status, dataset, net, loss, sweep, tag, note)",
                    id="filter")
        yield Static("", id="empty")
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Static("", id="runs-progress")
        yield Static("", id="runs-status")
        # every shown key, Help and Quit too, within 80 columns (the status line above names ctrl+p)
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()
        self.query_one("#empty").display = False
        self.set_interval(AGE_REFRESH_S, self.redraw)   # ages move on while the store stands still
        super().on_mount()

    def fetch(self) -> RunsData:
        store = self.app.store
        rows = store.rows()
        jobs.tend(store, rows)
        for row in rows:   # the epoch in flight: a small file per running run
            if row["status"] == Status.RUNNING:
                row["progress"] = store.progress(row["id"])
            if self.grouping == "config":
                row["config"] = self.config_of(row)
        return RunsData(jobs.with_queue_places(rows))

    def config_of(self, row: dict[str, Any]) -> str | None:
        """The run's config id as `mtm export` computes it, from its stored spec. The id in the index was
        computed when the run was made, so a spec key added since (at its default) would split the seeds
        of one configuration into two groups. Each run file is read once, and only once grouping by config
        is asked for: reading every file of a 3,750-run store would delay the first table by seconds."""
        if row["id"] not in self.configs:
            try:
                self.configs[row["id"]] = config_id(self.app.store.meta(row["id"])["spec"])
            except (MtmError, KeyError, TypeError):   # a damaged run file: the id it was made with, not read again
                self.configs[row["id"]] = row.get("config")
        return self.configs[row["id"]]

    def show(self, data: RunsData) -> None:
        self.rows, self.fetched = data.rows, True
        self.redraw()

    def on_resize(self) -> None:
        if self.columns() != tuple(self._content_columns):   # the width crossed NARROW_BELOW or WIDE_AT
            self.redraw()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.redraw()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.query_one(DataTable).focus()

    def visible(self) -> list[dict[str, Any]]:
        words = self.query_one("#filter", Input).value.lower().split()
        rows = [r for r in self.rows if not words or all(word in searchable(r) for word in words)]
        field = SORT_FIELDS[self.sort_by]
        rows.sort(key=lambda r: (r.get(field) is None, str(r.get(field)) if field == "tags" else
                                 r.get(field) if r.get(field) is not None else 0), reverse=self.reverse)
        if self.grouping == "sweep":   # stable: keeps the sort inside each sweep
            rows.sort(key=lambda r: r.get("sweep") or "")
        return rows

    def columns(self) -> tuple[str, ...]:
        columns = COLUMNS if self.grouping == "sweep" else COLUMNS[:-1]
        if self.size.width < NARROW_BELOW:
            columns = tuple(c for c in columns if c not in ("net", "d"))
        return columns + WIDE_COLUMNS if self.size.width >= WIDE_AT else columns

    def shown_rows(self, rows: list[dict[str, Any]], now: float) -> dict[str, tuple]:
        """Row key -> cells. Grouped by config, the seeds of one configuration make one row (in the
        place of its first run in the sort order); a run without a config id stands alone."""
        if self.grouping != "config":
            return {r["id"]: cells(r, now, r["id"] in self.marked) for r in rows[:SHOWN]}
        self.groups = {}
        for r in rows:
            self.groups.setdefault(GROUP + (r.get("config") or r["id"]), []).append(r)
        field = SORT_FIELDS[self.sort_by]
        if field in GROUP_VALUES:   # a group sorts by the value its row shows (a mean of seeds), not a member's
            def shown(members: list[dict[str, Any]]) -> tuple[bool, float]:
                values = [r[field] for r in members if r.get(field) is not None]
                return (not values, GROUP_VALUES[field](values) if values else 0)

            self.groups = dict(sorted(self.groups.items(), key=lambda item: shown(item[1]), reverse=self.reverse))
        content = {}
        for key, members in list(self.groups.items())[:SHOWN]:
            if len(members) == 1:
                content[members[0]["id"]] = cells(members[0], now, members[0]["id"] in self.marked)
            else:
                marked = all(r["id"] in self.marked for r in members)
                content[key] = ("●" if marked else " ", *group_cells(members, now))
        return content

    def redraw(self) -> None:
        """Show the visible rows. When only cell values changed (an epoch landed), just those
        cells are updated; a new order, filter, width or set of runs rebuilds the table, and the
        cursor stays on the run it was on."""
        table = self.query_one(DataTable)
        now = self.app.clock()
        matching = self.visible()
        columns = self.columns()
        pick = [ALL_COLUMNS.index(label) for label in columns]
        content = {key: tuple(values[i] for i in pick) for key, values in self.shown_rows(matching, now).items()}
        header = tuple(label + ((" ▼" if self.reverse else " ▲") if label == self.sort_by else "") for label in columns)
        if self.size.width < NARROW_BELOW:   # the name gives way (… marks a cut), never a figure
            content = self._fit_names(columns, header, content)
        if header == self._header and list(content) == list(self._content):
            for key, values in content.items():
                for label, old, new in zip(columns, self._content[key], values):
                    if old != new:   # a longer status ("interrupted") widens its column rather than being cut
                        table.update_cell(key, label, new, update_width=True)
        else:
            selected = self.selected_id()
            table.clear(columns=True)
            for label, title in zip(columns, header):
                table.add_column(title, key=label)
            for key, values in content.items():
                table.add_row(*values, key=key)
            if selected in content:
                table.move_cursor(row=table.get_row_index(selected), animate=False)
        self._header, self._content, self._content_columns, self._matching = header, content, columns, len(matching)
        empty = self.fetched and not self.rows
        self.query_one("#empty", Static).display = empty   # above the empty table, which keeps the focus
        if empty:
            self.query_one("#empty", Static).update(
                f"No runs in {self.app.store.home} — [b]c[/b] to compose, or start mtm-tui with --home DIR")
        self._status(now)

    def _fit_names(self, columns: tuple[str, ...], header: tuple[str, ...],
                   content: dict[str, tuple]) -> dict[str, tuple]:
        """Cut the names to the room the other columns leave in the table's width (each column is its
        widest cell or title, plus the table's padding of one cell on each side)."""
        at = columns.index("name")
        widths = [max([cell_len(title)] + [cell_len(Text.from_markup(v[i]).plain) for v in content.values()])
                  for i, title in enumerate(header)]
        room = self.size.width - 2 - sum(w + 2 for i, w in enumerate(widths) if i != at) - 2   # 2: the scrollbar
        room = max(room, 6)
        return {key: (*v[:at], v[at] if cell_len(v[at]) <= room else v[at][:room - 1] + "…", *v[at + 1:])
                for key, v in content.items()}

    def _status(self, now: float) -> None:
        live = sum(r["status"] in LIVE for r in self.rows)
        shown, matching = len(self._content), self._matching
        if self.grouping == "config":   # rows are groups: count runs, and say how many rows they make
            count = f"{matching} (in {shown} rows)"
        else:
            count = f"{shown} shown of {matching} matching" if matching > shown else f"{matching}"
        grouped = {"none": "", "sweep": " · grouped by sweep", "config": " · seeds grouped by config"}[self.grouping]
        self.query_one("#runs-status", Static).update(
            f"{count} of {len(self.rows)} runs, {live} live, {len(self.marked)} marked · sorted by "
            f"{self.sort_by}{grouped} · ctrl+p: every action")
        key = self.selected_id()
        row = next((r for r in self.rows if r["id"] == key), None) if key else None   # a group's key: none
        self.query_one("#runs-progress", Static).update(escape(detail(row, now)) if row else "")

    def selected_id(self) -> str | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def selected_row(self) -> dict[str, Any] | None:
        """The run under the cursor; None on an empty table, or on a group of seeds (which says so)."""
        key = self.selected_id()
        if key is not None and key.startswith(GROUP):
            self.notify(f"a group of {len(self.groups[key])} seeds: enter compares them; o ungroups them to act on one")
            return None
        return next((r for r in self.rows if r["id"] == key), None)

    def selected_runs(self) -> list[str]:
        """The run under the cursor, or every seed of the group under it."""
        key = self.selected_id()
        if key is None:
            return []
        return [r["id"] for r in self.groups[key]] if key.startswith(GROUP) else [key]

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if self.rows:
            self._status(self.app.clock())

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        self.sort(event.column_key.value)

    def sort(self, label: str | None) -> None:
        """Sort by a column; the column it is sorted by already flips its order."""
        if label not in SORT_FIELDS:
            return
        self.reverse = not self.reverse if label == self.sort_by else label in NEWEST_FIRST
        self.sort_by = label
        self.redraw()

    # --- actions ----------------------------------------------------------------------------------

    def action_open(self) -> None:
        ids = self.selected_runs()
        if len(ids) == 1:
            self.app.open_run(ids[0])
        elif ids:   # a configuration's seeds: side by side
            self.app.open_compare(ids)

    def action_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_leave_filter(self) -> None:
        """Esc: clears the filter (as the README says) and goes back to the table."""
        self.query_one("#filter", Input).value = ""
        self.query_one(DataTable).focus()

    def action_cursor(self, step: int) -> None:
        table = self.query_one(DataTable)
        table.move_cursor(row=max(0, min(table.row_count - 1, table.cursor_row + step)), animate=False)

    def action_cursor_to(self, end: int) -> None:
        table = self.query_one(DataTable)
        table.move_cursor(row=0 if end == 0 else table.row_count - 1, animate=False)

    def action_sort(self) -> None:
        columns = [c for c in self.columns() if c in SORT_FIELDS]
        self.app.push_screen(ChoiceScreen("Sort by which column? (again: reverse the order)", columns, self.sort_by),
                             self.sort)

    def action_group(self) -> None:
        self.grouping = GROUPINGS[(GROUPINGS.index(self.grouping) + 1) % len(GROUPINGS)]
        self.redraw()
        if self.grouping == "config":   # the config ids come from the stored specs, read by the poll
            self.refetch()

    def action_mark(self) -> None:
        """Mark (or unmark) the run, or the group's runs, under the cursor, and move down."""
        ids = set(self.selected_runs())
        if ids:
            self.marked = self.marked - ids if ids <= self.marked else self.marked | ids
            self.redraw()
            self.action_cursor(1)

    def action_compare(self) -> None:
        ids = [r["id"] for r in self.rows if r["id"] in self.marked] or self.selected_runs()
        if ids:
            self.app.open_compare(ids)

    def action_embedding(self) -> None:
        if (row := self.selected_row()) is not None:
            self.app.open_embedding(row["id"])

    def action_sweep(self) -> None:
        row = self.selected_row()
        if row is not None and row.get("sweep"):
            self.app.open_sweep(row["sweep"])
        elif row is not None:
            self.notify(f"run {row['id'][:8]} {row['name']} is not part of a sweep")

    def action_compose(self) -> None:
        self.app.open_compose()

    def action_log(self) -> None:
        if (row := self.selected_row()) is not None:
            self.app.open_log(row["id"])

    def action_queue(self) -> None:
        self.app.open_queue()

    def action_compose_from(self) -> None:
        """Compose from the run's own spec (any status, failed ones included): change it and launch it."""
        if (row := self.selected_row()) is not None:
            self.app.open_compose(row["id"])

    def action_export(self) -> None:
        """Export the marked runs; else those the filter matches; else all of them."""
        marked = [r["id"] for r in self.rows if r["id"] in self.marked]
        words = self.query_one("#filter", Input).value.strip()
        if marked:
            self.app.open_export(marked, f"the {len(marked)} marked runs")
        elif words:
            self.app.open_export([r["id"] for r in self.visible()], f"the runs matching '{words}'")
        else:
            self.app.open_export(None, "every run in the store")

    def action_tag(self) -> None:
        if (row := self.selected_row()) is None:
            return
        self.app.push_screen(PromptScreen(f"Tags of run {row['id'][:8]} ({row['name']}), separated by spaces:",
                                          " ".join(row.get("tags") or [])),
                             lambda text: text is not None and self.run_job(
                                 lambda store, run_id: store.update(run_id, tags=list(dict.fromkeys(text.split()))),
                                 row["id"], "tagged"))

    def action_note(self) -> None:
        if (row := self.selected_row()) is None:
            return
        self.app.push_screen(PromptScreen(f"Note on run {row['id'][:8]} ({row['name']}):", row.get("note") or ""),
                             lambda text: text is not None and self.run_job(
                                 lambda store, run_id: store.update(run_id, note=text.strip()), row["id"], "noted"))

    def _confirm_then(self, question: Callable[[dict[str, Any]], str], job, done: str,
                      refuse: dict[str, str] | None = None) -> None:
        """Ask first, naming the run (id and name); a status in `refuse` is answered at once instead."""
        if (row := self.selected_row()) is None:
            return
        run_id = row["id"]
        if refuse and row["status"] in refuse:
            self.notify(f"run {run_id[:8]} {row['name']} {refuse[row['status']]}")
            return

        def answered(yes: bool) -> None:
            if yes:
                if job is jobs.delete:
                    self.marked.discard(run_id)
                self.run_job(job, run_id, done)

        self.app.push_screen(ConfirmScreen(question(row)), answered)

    def action_stop(self) -> None:
        self._confirm_then(stop_question, jobs.stop,
                           "stop requested for", refuse={s: f"is {s}: nothing to stop" for s in ENDED})

    def action_resume(self) -> None:
        self._confirm_then(lambda row: f"Resume run {row['id'][:8]} ({row['name']}) in the background?",
                           jobs.resume_detached, "resuming",
                           refuse={Status.FINISHED: "has finished all its epochs: nothing to resume",
                                   Status.RUNNING: "is running already", Status.QUEUED: "is queued already"})

    def action_delete(self) -> None:
        self._confirm_then(lambda row: f"Delete run {row['id'][:8]} ({row['name']}): its records, checkpoints and log?",
                           jobs.delete, "deleted")
