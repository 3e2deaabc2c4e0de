"""The Queue screen: the pool that drains this home's queue, each slot (a CPU or a GPU) with the run on it
and the GPU's memory and utilisation, and the queued runs in the order they will start. `s` changes the
slots; a running pool takes them at its next look at the queue."""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.markup import escape
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static

from mtm_engine.catalogue import BACKBONES, DATASETS, loss_code, title_of
from mtm_engine.errors import MtmError
from mtm_engine.records import Status
from mtm_tui.screens.base import PollingScreen, PromptScreen
from mtm_tui.services import jobs
from mtm_tui.services.rows import age, progress, status

GPU_LOOK_S = 5.0   # nvidia-smi is asked at most this often (it takes a moment on a busy machine)


@dataclass(frozen=True)
class QueueData:
    state: jobs.QueueState
    error: str = ""   # a damaged slot list, said in the panel


class QueueScreen(PollingScreen[QueueData]):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back"),
                Binding("s", "slots", "Set the slots"),
                Binding("enter", "open", "Open the run", show=False),
                Binding("l", "log", "Log")]

    def __init__(self):
        super().__init__()
        self._gpus: dict[str, jobs.GpuStat] = {}
        self._gpus_at = 0.0

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="queue-pool")
        yield DataTable(id="queue-slots", cursor_type="row")
        yield Static("", id="queue-waiting-title")
        yield DataTable(id="queue-waiting", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#queue-slots", DataTable).add_columns("slot", "device", "run", "name", "epoch", "now",
                                                              "GPU memory", "GPU use")
        self.query_one("#queue-waiting", DataTable).add_columns("#", "run", "name", "dataset", "net", "loss", "waiting")
        self.query_one("#queue-slots", DataTable).focus()
        super().on_mount()

    def fetch(self) -> QueueData:
        store = self.app.store
        rows = jobs.with_queue_places(store.rows())
        for row in rows:
            if row["status"] == Status.RUNNING:
                row["progress"] = store.progress(row["id"])
        if time.monotonic() - self._gpus_at > GPU_LOOK_S:
            self._gpus, self._gpus_at = jobs.gpu_stats(), time.monotonic()
        try:
            return QueueData(jobs.queue_state(store, rows, self._gpus))
        except MtmError as exc:   # the slot list is damaged: the rest is still worth showing
            return QueueData(jobs.QueueState(None, False, [], {}, jobs.queued(rows), self._gpus), str(exc))

    def show(self, data: QueueData) -> None:
        state, now = data.state, self.app.clock()
        self.query_one("#queue-pool", Static).update(self._pool_line(state, now) + (
            f"\n[red]{escape(data.error)}[/]" if data.error else ""))
        slots = self.query_one("#queue-slots", DataTable)
        at = slots.cursor_row
        slots.clear()
        for index, device in enumerate(state.slots or []):
            row = state.running.get(index)
            gpu = state.gpus.get(device.removeprefix("gpu:")) if device != "cpu" else None
            memory = f"{gpu.memory_used_gb:.1f}/{gpu.memory_total_gb:.0f} GB" if gpu else "-"
            use = f"{gpu.utilisation_pct:.0f}%" if gpu else "-"
            if row is None:
                slots.add_row(str(index), device, "-", "[dim]free[/]", "", "", memory, use, key=f"slot-{index}")
            else:
                slots.add_row(str(index), device, row["id"][:8], escape(row["name"]), f"{row['epoch']}/{row['epochs']}",
                              progress(row, now, gpu=False) or ("starting" if not row["epoch"] else "training"),
                              memory, use, key=row["id"])
        slots.move_cursor(row=min(at, max(0, slots.row_count - 1)), animate=False)
        waiting = self.query_one("#queue-waiting", DataTable)
        at = waiting.cursor_row
        waiting.clear()
        for row in state.waiting:
            waiting.add_row(str(row["queue_place"]), row["id"][:8], escape(row["name"]),
                            title_of(DATASETS, row["dataset"]),
                            title_of(BACKBONES, row["backbone"]), loss_code(row["loss"]),
                            age(now - row.get("queued", row["created"])), key=row["id"])
        waiting.move_cursor(row=min(at, max(0, waiting.row_count - 1)), animate=False)
        self.query_one("#queue-waiting-title", Static).update(
            f"[b]queued[/b] {len(state.waiting)} run{'s' if len(state.waiting) != 1 else ''}, the next to start first"
            if state.waiting else "[b]queued[/b] none")

    @staticmethod
    def _pool_line(state: jobs.QueueState, now: float) -> str:
        pool = state.pool
        if state.pool_alive:
            line = f"pool {status('running')} (pid {pool['pid']} on {pool['host']}, for {age(now - pool['started'])})"
        elif state.pool_alive is None:
            line = f"pool on {pool['host']} (pid {pool['pid']}): not to be checked from here"
        elif state.waiting:
            line = "pool [bold red]not running[/] with runs queued: it is restarted at the next look (a second)"
        else:
            line = "pool not running: it starts when a run is queued, and ends when the queue is empty"
        if state.slots is None:
            return line + "\nslots not set yet: the first queued run takes every visible GPU once, else one CPU slot (s sets them)"
        count = f"{len(state.slots)} slot{'s' if len(state.slots) != 1 else ''}"
        return line + f"\n{count}, {len(state.running)} busy: {', '.join(state.slots)} (s sets them)"

    def selected(self) -> str | None:
        table = self.focused if isinstance(self.focused, DataTable) else self.query_one("#queue-slots", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return None if key is None or key.startswith("slot-") else key

    def action_open(self) -> None:
        if (run_id := self.selected()) is not None:
            self.app.open_run(run_id)

    def action_log(self) -> None:
        if (run_id := self.selected()) is not None:
            self.app.open_log(run_id)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_slots(self) -> None:
        self.app.push_screen(PromptScreen("Slots, as mtm run -d takes them: --slots N (CPU), or --gpus auto|0,1 "
                                          "[--per-gpu N]", ""), self._set_slots)

    @work(thread=True, group="slots")
    def _set_slots(self, words: str | None) -> None:
        """Off the UI thread: finding the GPUs may ask nvidia-smi."""
        if not words or not words.strip():
            return
        try:
            slots = jobs.slots_from_words(words)
            jobs.configure_slots(self.app.store, slots)
        except MtmError as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error", timeout=8)
            return
        self.app.call_from_thread(self.notify, f"slots set: {', '.join(slots)}; a running pool takes them at its "
                                               f"next look")
        self.app.call_from_thread(self.refetch)
