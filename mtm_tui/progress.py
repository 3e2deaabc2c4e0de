"""Showing a training run on the terminal: the engine's events as a progress bar and lines."""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mtm_engine.events import BatchProgress, EpochEnded, Event, RunDiverged, RunStarted, progress_of
from mtm_engine.records import acc_key
from mtm_tui.services.rows import age

PIPED_WIDTH = 10_000   # what a pipe or file gets: whole lines, never cut or wrapped at 80 columns


def make_console(stderr: bool = False) -> Console:
    """A console for the CLI's output: the terminal's width in a terminal; piped (`mtm list | grep`, `mtm run >
    log`), wide enough that no line is cut or wrapped. Messages are lines, not paragraphs (soft wrap)."""
    stream = sys.stderr if stderr else sys.stdout
    terminal = stream.isatty() or "COLUMNS" in os.environ   # COLUMNS: a width asked for, piped or not
    return Console(stderr=stderr, soft_wrap=True, width=None if terminal else PIPED_WIDTH)


console = make_console()


def epoch_line(record: dict[str, Any], epochs: int, classifiers: tuple[str, ...]) -> str:
    split = "val" if acc_key("val", classifiers[0]) in record else "test"   # a refit has no validation split
    accs = " ".join(f"{c} {record[acc_key(split, c)]:.4f}" for c in classifiers)
    return (f"epoch {record['epoch']}/{epochs} loss {record['train_loss']:.5g} {split} {accs} "
            f"{record['images_per_s']:,.0f} img/s {record['epoch_time_s']:.1f}s")


def started_line(event: RunStarted) -> str:
    sizes = ", ".join(f"{k} {v}" for k, v in event.sizes.items())
    resumed = f"; resuming at epoch {event.start_epoch}" if event.start_epoch > 1 else ""
    return f"device {event.device}, {event.parameters:,} parameters, images: {sizes}{resumed}"


class TextSink:
    """Plain lines, for a detached run's log file."""

    def __init__(self, epochs: int, classifiers: tuple[str, ...], out: TextIO | None = None):
        self.epochs, self.classifiers, self.out = epochs, classifiers, out

    def emit(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            print(started_line(event), file=self.out, flush=True)
        elif isinstance(event, EpochEnded):
            print(epoch_line(event.record, self.epochs, self.classifiers), file=self.out, flush=True)
        elif isinstance(event, RunDiverged):
            print(f"diverged in epoch {event.epoch}: {event.message}", file=self.out, flush=True)


def batch_fields(event: BatchProgress) -> dict[str, Any]:
    """The progress bar's words for the epoch in flight: its speed, and the time left to the end of its
    training, or "evaluating" once every batch is trained (the epoch's evaluation has no count to show)."""
    p = progress_of(event, now=0.0)
    left = "evaluating" if event.batch >= event.batches else f"ETA {age(p['eta_s'])}" if p["eta_s"] else "ETA -"
    return {"epoch": event.epoch, "loss": event.loss, "speed": f"{p['images_per_s']:,.0f} img/s", "left": left}


class ProgressSink(TextSink):
    """On a terminal, a progress bar for the epoch in flight (batches, img/s, ETA, loss) and one line per
    finished epoch; piped, the bar is not drawn (rich draws live displays only on a terminal), so a log
    gets the epoch lines alone."""

    def __init__(self, epochs: int, classifiers: tuple[str, ...], out: Console | None = None):
        super().__init__(epochs, classifiers)
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(),
            MofNCompleteColumn(), TextColumn("{task.fields[speed]} · {task.fields[left]} · loss {task.fields[loss]:.4g}"),
            TimeElapsedColumn(), console=out or console, transient=True,
        )
        self.task = None

    def __enter__(self) -> "ProgressSink":
        if self.progress.console.is_terminal:   # piped, nothing live is drawn, not even its closing blank line
            self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress.live.is_started:
            self.progress.stop()

    def emit(self, event: Event) -> None:
        say = self.progress.console.print
        if isinstance(event, RunStarted):
            say(started_line(event), markup=False)
        elif isinstance(event, BatchProgress):
            if self.task is None:
                self.task = self.progress.add_task("", total=event.batches, epochs=self.epochs, **batch_fields(event))
            self.progress.update(self.task, completed=event.batch, **batch_fields(event))
        elif isinstance(event, EpochEnded):
            say(epoch_line(event.record, self.epochs, self.classifiers), markup=False, highlight=False)
            if self.task is not None:
                self.progress.remove_task(self.task)
                self.task = None
        elif isinstance(event, RunDiverged):
            say(f"[red]diverged[/] in epoch {event.epoch}: {event.message}")


def result_table(summary: dict[str, Any], classifiers: tuple[str, ...], selection: str = "val") -> Table:
    """Each classifier's epoch as eval.selection chose it (on validation; under max-test on test, optimistic)."""
    table = Table(title="test accuracy per classifier")
    chosen = "val-selected" if selection == "val" else "max over epochs*"
    for column in ("classifier", "selected epoch", "val acc", f"test ({chosen})", "test (final)"):
        table.add_column(column, justify="left" if column == "classifier" else "right")
    for c in classifiers:
        sel, fin = summary[selection].get(c), summary["final"].get(c)
        if sel is not None:
            val = "-" if sel["val_acc"] is None else f"{sel['val_acc']:.4f}"
            table.add_row(c, str(sel["epoch"]), val, f"{sel['test_acc']:.4f}", f"{fin['test_acc']:.4f}")
    return table
