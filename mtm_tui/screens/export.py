"""The Export screen: the paper-layout tables of `mtm export`, with a preview, to a file.

It exports what the Runs screen had in view (the marked runs, else those the filter matched, else
all), with `mtm export`'s options: the epoch selection, the paper's figures beside ours, one sweep.
"""

from __future__ import annotations

from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, Markdown, Select, Static, Switch

from mtm_engine import export as ex
from mtm_engine.atomic import atomic_write
from mtm_engine.errors import MtmError
from mtm_engine.records import Status
from mtm_engine.results import SELECTIONS
from mtm_engine.store import writing
from mtm_tui.screens.base import ConfirmScreen

ANY_SWEEP = "(any)"


class ExportScreen(Screen):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back"), Binding("ctrl+s", "write", "Write file"),
                Binding("ctrl+r", "preview", "Preview")]

    def __init__(self, run_ids: list[str] | None = None, which: str = "every run in the store"):
        super().__init__()
        self.run_ids, self.which = run_ids, which
        self.sweeps: list[str] = []   # those the sweep choice offers

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="export-options"):
            yield Label("select ")
            yield Select([(s, s) for s in SELECTIONS], value="val", allow_blank=False, id="select", compact=True)
            yield Label(" paper ")
            yield Switch(id="compare")
            yield Label(" format ")
            yield Select([(f, f) for f in ("markdown", "csv", "json")], value="markdown", allow_blank=False,
                         id="format", compact=True)
            yield Label(" sweep ")
            yield Select([(ANY_SWEEP, ANY_SWEEP)], value=ANY_SWEEP, allow_blank=False, id="sweep", compact=True)
        with Horizontal(id="export-file"):
            yield Label("file ")
            yield Input("results.md", id="path")
            yield Button("Write (ctrl+s)", id="write", variant="primary", compact=True)
        yield Static("", id="export-target")
        with VerticalScroll(id="preview-box"):
            yield Markdown("building the preview...", id="preview")
        yield Footer()

    def on_mount(self) -> None:
        self.show_target()
        self.action_preview()

    def on_select_changed(self, event: Select.Changed) -> None:
        self.action_preview()

    def on_switch_changed(self, event: Switch.Changed) -> None:
        self.action_preview()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.show_target()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.action_write()

    def target(self) -> Path:
        """Where the file goes, absolute (relative paths are from the folder mtm-tui started in)."""
        return Path(self.query_one("#path", Input).value or "results.md").expanduser().resolve()

    def show_target(self) -> None:
        self.query_one("#export-target", Static).update(f"exports {self.which} (finished runs) to {self.target()}")

    def options(self) -> tuple[str, bool, str, str | None]:
        sweep = str(self.query_one("#sweep", Select).value)
        return (str(self.query_one("#select", Select).value), self.query_one("#compare", Switch).value,
                str(self.query_one("#format", Select).value), None if sweep == ANY_SWEEP else sweep)

    def action_preview(self) -> None:
        self.build(*self.options(), None)

    def action_write(self) -> None:
        path = self.target()
        if path.exists():
            self.app.push_screen(ConfirmScreen(f"{path} exists. Overwrite it?"),
                                 lambda yes: yes and self.build(*self.options(), path))
        else:
            self.build(*self.options(), path)

    @work(thread=True, exclusive=True, group="export")
    def build(self, selection: str, compare: bool, fmt: str, sweep: str | None, path: Path | None) -> None:
        """Read the store and render the tables off the UI thread; preview, and write if asked."""
        store = self.app.store
        try:
            rows = store.rows()
            sweeps = sorted({r["sweep"] for r in rows if r.get("sweep")})
            wanted = set(self.run_ids) if self.run_ids is not None else None
            runs = [store.run(r["id"]) for r in rows if r["status"] == Status.FINISHED
                    and (wanted is None or r["id"] in wanted) and (sweep is None or r.get("sweep") == sweep)]
            tables = ex.build_tables([(meta["spec"], records, meta["id"]) for meta, _, records in runs], selection)
        except MtmError as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error", timeout=8)
            return
        self.app.call_from_thread(self._offer_sweeps, sweeps)
        text = {"markdown": lambda: ex.to_markdown(tables, selection, compare), "csv": lambda: ex.to_csv(tables),
                "json": lambda: ex.to_json(tables, selection)}[fmt]()
        shown = text if fmt == "markdown" else f"```\n{text}\n```"
        preview = self.query_one("#preview", Markdown)
        self.app.call_from_thread(preview.update, shown if tables else "no finished runs among those exported")
        if path is not None:
            try:
                with writing(path):
                    atomic_write(path, text)
            except MtmError as exc:   # a missing folder or a full disk: say so, keep the app
                self.app.call_from_thread(self.notify, str(exc), severity="error", timeout=10)
                return
            self.app.call_from_thread(self.notify, f"wrote {path} ({len(tables)} table{'s' * (len(tables) != 1)}, {len(runs)} run{'s' * (len(runs) != 1)})")

    def _offer_sweeps(self, sweeps: list[str]) -> None:
        if sweeps != self.sweeps:
            self.sweeps = sweeps
            select = self.query_one("#sweep", Select)
            options = [ANY_SWEEP, *sweeps]
            current = select.value
            with self.prevent(Select.Changed):
                select.set_options([(s, s) for s in options])
                select.value = current if current in options else ANY_SWEEP
