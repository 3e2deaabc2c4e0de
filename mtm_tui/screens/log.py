"""The Log screen: a run's log file, followed as it grows (like `tail -f`, or k9s's `l`)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Header, Log, Static

from mtm_engine.records import Status
from mtm_engine.store import LOG
from mtm_tui.screens.base import PollingScreen
from mtm_tui.services.rows import status

FIRST_BYTES = 256 * 1024   # a long log opens at its last 256 KiB (whole lines), then follows


@dataclass(frozen=True)
class LogData:
    row: dict[str, Any]
    lines: tuple[str, ...]    # whole lines written since the last look
    offset: int = 0           # where they end in the file (two looks with the same lines differ by it)
    missing: bool = False     # no log file (yet: a queued run; or ever: a run started in the foreground)


class LogScreen(PollingScreen[LogData]):
    POLL_S = 0.5
    BINDINGS = [Binding("escape", "app.pop_screen", "Back"),
                Binding("f", "follow", "Follow on/off"),
                Binding("G,end", "bottom", "Last line")]

    def __init__(self, run_id: str):
        super().__init__()
        self.run_id = run_id
        self.read_to: int | None = None  # bytes of the file already shown
        self.partial = b""              # a last line still being written
        self.reading = threading.Lock()   # a refetch starts a poll while the last may still be in fetch

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="log-title")
        yield Log(id="log-lines", auto_scroll=True)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(Log).focus()
        super().on_mount()

    def fetch(self) -> LogData:
        store = self.app.store
        row = store.row(self.run_id)
        with self.reading:
            try:
                with open(store.run_dir(self.run_id) / LOG, "rb") as fh:
                    size = fh.seek(0, 2)
                    if self.read_to is None or size < self.read_to:   # the first look, or a log cut short: again
                        start = max(0, size - FIRST_BYTES)
                        fh.seek(start)
                        if start:   # the tail begins inside a line: from the next whole one
                            start += len(fh.readline())
                        self.read_to, self.partial = start, b""
                    fh.seek(self.read_to)
                    data = self.partial + fh.read()
            except FileNotFoundError:
                return LogData(row, (), missing=True)
            self.read_to += len(data) - len(self.partial)
            *whole, self.partial = data.split(b"\n")
            return LogData(row, tuple(line.decode(errors="replace") for line in whole), self.read_to)

    def show(self, data: LogData) -> None:
        row = data.row
        log = self.query_one(Log)
        follow = "following" if log.auto_scroll else "not following (f follows)"
        why = ("no log yet: the run waits in the queue, and its log starts with it" if row["status"] == Status.QUEUED
               else "no log: the run was started in the foreground, and printed to its terminal")
        self.query_one("#log-title", Static).update(
            f"[b]{self.run_id[:8]}[/b] {escape(row['name'])}  {status(row['status'])}  epoch {row['epoch']}/{row['epochs']}"
            f"  · {follow}" + (f"\n[dim]{escape(row['message'])}[/dim]" if row.get("message") else "")
            + (f"\n[dim]({why})[/dim]" if data.missing else ""))
        log.write_lines(data.lines)

    def action_follow(self) -> None:
        log = self.query_one(Log)
        log.auto_scroll = not log.auto_scroll
        if log.auto_scroll:
            log.scroll_end(animate=False)
        self.refetch()

    def action_bottom(self) -> None:
        self.query_one(Log).scroll_end(animate=False)
