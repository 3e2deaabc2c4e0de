"""The Run screen: live charts of one run, its spec, log tail and best-vs-last figures.

Every chart shows the validation split; `t` adds the test split, `c` picks the accuracy chart's
classifier (the run's primary first), `z` zooms to the last 10 or 5 epochs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Footer, Header, Static, TabbedContent, TabPane

from mtm_engine.errors import MtmError
from mtm_engine.records import LIVE, Status, acc_key, classifiers_in
from mtm_engine.results import summarise
from mtm_engine.store import LOG
from mtm_tui.screens.base import ConfirmScreen, PollingScreen
from mtm_tui.services import jobs
from mtm_tui.services.rows import (
    TEST_SELECTED,
    gpu_memory,
    progress,
    status,
    stop_question,
    tags_and_note,
    test_selected,
)
from mtm_tui.widgets.certainty import CertaintyView
from mtm_tui.widgets.charts import MetricChart, View, charts

LOG_LINES = 12
ZOOMS = (0, 10, 5)   # `z` cycles: every epoch, the last 10, the last 5


def log_tail(path, lines: int = LOG_LINES) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - 16_384))
            return "\n".join(fh.read().decode(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log: the run was started in the foreground)"


@dataclass(frozen=True)
class RunData:
    """What one poll of the Run screen read."""
    meta: dict[str, Any]
    row: dict[str, Any]
    records: list[dict[str, Any]]
    log: str                              # the log's last lines
    certainty: dict[str, Any] | None      # the kept `mtm eval --certainty`, {"error": ...} if unreadable


class RunScreen(PollingScreen[RunData]):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("c", "classifier", "Classifier", tooltip="the accuracy chart's classifier"),
        Binding("t", "test", "Test", tooltip="test split on/off (validation is always drawn)"),
        Binding("z", "zoom", "Zoom", tooltip="the last 10, 5 or all epochs"),
        Binding("x", "stop", "Stop"),
        Binding("v", "embedding", "Embedding", show=False),
        Binding("R", "resume", "Resume", show=False),
        Binding("f", "compose_from", "From this run", show=False),
        Binding("l", "log", "Log", show=False),
        Binding("left", "tab(-1)", "Previous chart", show=False),
        Binding("right", "tab(1)", "Next chart", show=False),
    ]

    def __init__(self, run_id: str):
        super().__init__()
        self.run_id = run_id
        self.records: list[dict[str, Any]] = []
        self.row: dict[str, Any] = {}
        self.view = View()
        self.charts = charts()
        self.hidden: set[str] = set()   # the tabs of charts that the run's records have nothing for

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="run-header")
        with TabbedContent(id="charts"):
            for n, chart in enumerate(self.charts.values()):
                with TabPane(chart.tab, id=f"chart-{n}"):
                    yield MetricChart(chart)
            with TabPane("Certainty", id="certainty"):
                yield CertaintyView(self.run_id)
            with TabPane("Spec & log", id="details"):
                with VerticalScroll():
                    yield DataTable(id="best-last", cursor_type="none")
                    yield Static("", id="spec")
                    yield Static("", id="log")
        yield Footer()

    def fetch(self) -> RunData:
        store = self.app.store
        meta, row, records = store.run(self.run_id)
        if row["status"] == Status.RUNNING:
            row["progress"] = store.progress(self.run_id)
        try:
            certainty = store.measurement(self.run_id, "certainty")
        except MtmError as exc:   # a corrupt file: said in its tab, not in a notification every poll
            certainty = {"error": str(exc)}
        return RunData(meta, row, records, log_tail(store.run_dir(self.run_id) / LOG), certainty)

    def show(self, data: RunData) -> None:
        meta, row, records, log, certainty = data.meta, data.row, data.records, data.log, data.certainty
        self.records, self.row = records, row
        if self.view.classifier not in classifiers_in(records):   # the primary classifier first
            primary = row.get("primary") or next(iter(classifiers_in(records)), "")
            unvalidated = bool(records) and acc_key("val", primary) not in records[-1]   # data.val_fraction = 0
            self.view = View(primary, self.view.test or unvalidated, self.view.last)
        in_flight = progress(row, self.app.clock())
        self.query_one("#run-header", Static).update(
            f"[b]{self.run_id[:8]}[/b] {row['name']}  {status(row['status'])}  epoch {row['epoch']}/{row['epochs']}  "
            f"{row['dataset']} · {row['backbone']} · {row['loss']}  device {row.get('device') or '-'}"
            + (f"  GPU {gpu_memory(records[-1])} GB" if records and "gpu_mem_allocated_gb" in records[-1] else "")
            + (f" {records[-1]['gpu_util_pct']:.0f}%" if records and "gpu_util_pct" in records[-1] else "")
            + (f"\n[yellow]epoch {row['epoch'] + 1}: {in_flight}[/]" if in_flight else "")
            + (f"\n[dim]{row['message']}[/dim]" if row.get("message") else "")
            + (f"\n{TEST_SELECTED}" if test_selected(row) else "")
            + (f"\n{escape(tags_and_note(row))}" if tags_and_note(row) else ""))
        self._hide_empty_charts(records)
        self.draw_active()
        self.query_one(CertaintyView).update(certainty)
        self._best_vs_last(records)
        spec = meta["spec"]
        self.query_one("#spec", Static).update("\n".join(
            f"[b]{section}[/b]  " + "  ".join(f"{k}={v!r}" for k, v in values.items())
            for section, values in spec.items() if isinstance(values, dict)))
        self.query_one("#log", Static).update(f"[b]log[/b]\n{log}")

    def _hide_empty_charts(self, records: list[dict[str, Any]]) -> None:
        """A chart of measures the run does not record (the authors' geometry of a run without
        eval.authors_geometry) has no tab, once the run has records to tell."""
        everything = View(self.view.classifier, test=True)
        hidden = {f"chart-{n}" for n, chart in enumerate(self.charts.values())
                  if records and not chart.series(records, everything)}
        tabs = self.query_one(TabbedContent)
        for pane in hidden - self.hidden:
            tabs.hide_tab(pane)
        for pane in self.hidden - hidden:
            tabs.show_tab(pane)
        self.hidden = hidden

    def draw_active(self) -> None:
        """Redraw the chart on show only: a hidden tab is drawn when it is opened."""
        active = self.query_one(TabbedContent).active
        if active.startswith("chart-"):
            chart = self.query_one(f"#{active} MetricChart", MetricChart)
            chart.view = self.view
            chart.update(self.records)

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self.draw_active()

    def _best_vs_last(self, records: list[dict[str, Any]]) -> None:
        table = self.query_one("#best-last", DataTable)
        table.clear(columns=True)
        table.add_columns("classifier", "best epoch", "val acc", "test acc (best)", "test acc (last)",
                          "max test (optimistic)")
        summary = summarise(records, classifiers_in(records))
        for c, sel in summary["val"].items():
            val = "-" if sel["val_acc"] is None else f"{sel['val_acc']:.4f}"
            table.add_row(c, str(sel["epoch"]), val, f"{sel['test_acc']:.4f}", f"{summary['final'][c]['test_acc']:.4f}",
                          f"{summary['max-test'][c]['test_acc']:.4f}")

    def set_view(self, **change: Any) -> None:
        self.view = View(**{**self.view.__dict__, **change})
        self.draw_active()

    def action_classifier(self) -> None:
        classifiers = classifiers_in(self.records)
        if classifiers:
            at = classifiers.index(self.view.classifier) if self.view.classifier in classifiers else -1
            self.set_view(classifier=classifiers[(at + 1) % len(classifiers)])
            self.notify(f"accuracy of the {self.view.classifier} classifier", timeout=2)

    def action_test(self) -> None:
        self.set_view(test=not self.view.test)

    def action_zoom(self) -> None:
        self.set_view(last=ZOOMS[(ZOOMS.index(self.view.last) + 1) % len(ZOOMS)])

    def action_tab(self, step: int) -> None:
        tabs = self.query_one(TabbedContent)
        panes = [pane.id for pane in tabs.query(TabPane)]
        tabs.active = panes[(panes.index(tabs.active) + step) % len(panes)]

    def action_embedding(self) -> None:
        self.app.open_embedding(self.run_id)

    def action_log(self) -> None:
        self.app.open_log(self.run_id)

    def action_compose_from(self) -> None:
        self.app.open_compose(self.run_id)

    def action_stop(self) -> None:
        name, status = self.row.get("name", ""), self.row.get("status")
        if status not in LIVE:   # says so at once, rather than asking first
            self.notify(f"run {self.run_id[:8]} {name} is {status}: nothing to stop")
            return
        self.app.push_screen(ConfirmScreen(stop_question({**self.row, "id": self.run_id})),
                             lambda yes: yes and self.run_job(jobs.stop, self.run_id, "stop requested for"))

    def action_resume(self) -> None:
        self.app.push_screen(ConfirmScreen(f"Resume run {self.run_id[:8]} ({self.row.get('name', '')}) in the "
                                           f"background?"),
                             lambda yes: yes and self.run_job(jobs.resume_detached, self.run_id, "resuming"))
