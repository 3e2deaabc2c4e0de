"""The Export screen: the paper-layout tables of `mtm export`, with a preview, to a file."""

from __future__ import annotations

from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, Markdown, Select, Switch

from mtm_engine import export as ex
from mtm_engine.errors import MtmError
from mtm_engine.results import SELECTIONS
from mtm_engine.store import writing


class ExportScreen(Screen):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back"), Binding("ctrl+s", "write", "Write file"),
                Binding("ctrl+r", "preview", "Preview")]

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="export-options"):
            yield Label("select ")
            yield Select([(s, s) for s in SELECTIONS], value="val", allow_blank=False, id="select")
            yield Label(" compare with the paper ")
            yield Switch(id="compare")
            yield Label(" format ")
            yield Select([(f, f) for f in ("markdown", "csv", "json")], value="markdown", allow_blank=False, id="format")
        with Horizontal(id="export-file"):
            yield Label("file ")
            yield Input("results.md", id="path")
            yield Button("Write (ctrl+s)", id="write", variant="primary")
        with VerticalScroll(id="preview-box"):
            yield Markdown("building the preview...", id="preview")
        yield Footer()

    def on_mount(self) -> None:
        self.action_preview()

    def on_select_changed(self, event: Select.Changed) -> None:
        self.action_preview()

    def on_switch_changed(self, event: Switch.Changed) -> None:
        self.action_preview()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.action_write()

    def options(self) -> tuple[str, bool, str]:
        return (str(self.query_one("#select", Select).value), self.query_one("#compare", Switch).value,
                str(self.query_one("#format", Select).value))

    def action_preview(self) -> None:
        self.build(*self.options(), None)

    def action_write(self) -> None:
        self.build(*self.options(), Path(self.query_one("#path", Input).value or "results.md"))

    @work(thread=True, exclusive=True, group="export")
    def build(self, selection: str, compare: bool, fmt: str, path: Path | None) -> None:
        """Read the store and render the tables off the UI thread; preview, and write if asked."""
        store = self.app.store
        try:
            runs = [store.run(r["id"]) for r in store.rows() if r["status"] == "finished"]
            tables = ex.build_tables([(meta["spec"], records) for meta, _, records in runs], selection)
        except MtmError as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error", timeout=8)
            return
        text = {"markdown": lambda: ex.to_markdown(tables, selection, compare), "csv": lambda: ex.to_csv(tables),
                "json": lambda: ex.to_json(tables, selection)}[fmt]()
        shown = text if fmt == "markdown" else f"```\n{text}\n```"
        preview = self.query_one("#preview", Markdown)
        self.app.call_from_thread(preview.update, shown if tables else "no finished runs yet")
        if path is not None:
            path = path.expanduser().resolve()
            try:
                with writing(path):
                    path.write_text(text)
            except MtmError as exc:   # a missing folder or a full disk: say so, keep the app
                self.app.call_from_thread(self.notify, str(exc), severity="error", timeout=10)
                return
            self.app.call_from_thread(self.notify, f"wrote {path} ({len(tables)} tables)")
