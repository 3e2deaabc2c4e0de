"""`mtm`: the headless command line. Commands parse, delegate to the engine and print.

Engine errors (`MtmError`) are caught in one place, `main`, and printed as one line; `--debug`
(anywhere on the command line) shows the traceback instead.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mtm_engine.errors import MtmError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="mtm: train and study the Moving Targets Model from the terminal.",
)
console = Console()
err_console = Console(stderr=True)

HOME_HELP = "Folder for runs, checkpoints and logs (default ./mtm-home, or $MTM_HOME)."


@app.callback()
def _commands() -> None:
    """Train and study the Moving Targets Model. Add --debug to any command for tracebacks."""


def resolve_home(home: Optional[Path]) -> Path:
    return Path(home or os.environ.get("MTM_HOME") or "mtm-home").expanduser()


class ProgressSink:
    """Shows a training run on the terminal: a bar per epoch and one line per finished epoch."""

    def __init__(self, epochs: int, classifiers: tuple[str, ...]):
        self.epochs = epochs
        self.classifiers = classifiers
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(),
            MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.4g}"), TimeElapsedColumn(),
            console=console, transient=True,
        )
        self.task = None

    def __enter__(self) -> "ProgressSink":
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def emit(self, event: Any) -> None:
        from mtm_engine.train import BatchProgress, EpochEnded, RunDiverged, RunStarted

        if isinstance(event, RunStarted):
            sizes = ", ".join(f"{k} {v}" for k, v in event.sizes.items())
            self.progress.console.print(
                f"device {event.device}, {event.parameters:,} parameters, images: {sizes}"
                + (f"; resuming at epoch {event.start_epoch}" if event.start_epoch > 1 else "")
            )
        elif isinstance(event, BatchProgress):
            if self.task is None:
                self.task = self.progress.add_task("", total=event.batches, epoch=event.epoch,
                                                   epochs=self.epochs, loss=event.loss)
            self.progress.update(self.task, completed=event.batch, total=event.batches,
                                 epoch=event.epoch, loss=event.loss)
        elif isinstance(event, EpochEnded):
            r = event.record
            accs = "  ".join(f"{c} {r[f'val_acc_{c}']:.4f}" for c in self.classifiers)
            self.progress.console.print(
                f"epoch {event.epoch:>3}/{self.epochs}  loss {r['train_loss']:<11.5g} val: {accs}  "
                f"{r['images_per_s']:,.0f} img/s  {r['epoch_time_s']:.1f} s"
            )
            if self.task is not None:
                self.progress.remove_task(self.task)
                self.task = None
        elif isinstance(event, RunDiverged):
            self.progress.console.print(f"[red]diverged[/] in epoch {event.epoch}: {event.message}")


def result_table(summary: dict[str, Any], classifiers: tuple[str, ...]) -> Table:
    table = Table(title="test accuracy per classifier")
    for column in ("classifier", "selected epoch", "val acc", "test acc (val-selected)", "test acc (final)"):
        table.add_column(column, justify="left" if column == "classifier" else "right")
    for c in classifiers:
        sel, fin = summary["val"].get(c), summary["final"].get(c)
        if sel is None:
            continue
        table.add_row(c, str(sel["epoch"]), f"{sel['val_acc']:.4f}", f"{sel['test_acc']:.4f}", f"{fin['test_acc']:.4f}")
    return table


@app.command()
def run(
    config: Optional[Path] = typer.Argument(None, help="Experiment TOML file; the embedded quick start if omitted."),
    set_: list[str] = typer.Option([], "--set", help="Override a key: --set section.key=value (repeatable)."),
    json_: bool = typer.Option(False, "--json", help="Print one JSON object with the result, nothing else."),
    home: Optional[Path] = typer.Option(None, "--home", help=HOME_HELP),
) -> None:
    """Train one experiment in the foreground."""
    from mtm_engine.config import load_spec
    from mtm_engine.train import NullSink, fit

    spec = load_spec(config, overrides=set_)
    run_id = secrets.token_hex(4)
    run_dir = resolve_home(home) / "runs" / run_id
    if json_:
        result = fit(spec, run_dir, NullSink())
    else:
        console.print(f"run [bold]{run_id}[/] ({spec.name}): {spec.data.dataset}, {spec.model.backbone}, "
                      f"{spec.loss.name}, {spec.train.epochs} epochs -> {run_dir}")
        with ProgressSink(spec.train.epochs, spec.classifiers) as sink:
            result = fit(spec, run_dir, sink)
    selected = result.summary.get("val", {})
    if json_:
        print(json.dumps({
            "run_id": run_id, "name": spec.name, "status": result.status, "message": result.message,
            "epochs": len(result.records),
            "test_accuracy": {c: v["test_acc"] for c, v in selected.items()},
            "selected_epoch": {c: v["epoch"] for c, v in selected.items()},
            "final_test_accuracy": {c: v["test_acc"] for c, v in result.summary.get("final", {}).items()},
        }))
    elif result.records:
        console.print(result_table(result.summary, spec.classifiers))
    if result.status != "finished":
        if not json_:
            err_console.print(f"run {run_id} {result.status}: {result.message}", markup=False)
        raise typer.Exit(1)


def main() -> None:
    """Entry point: strips --debug from anywhere, runs the app, prints engine errors as one line."""
    debug = "--debug" in sys.argv or bool(os.environ.get("MTM_DEBUG"))
    sys.argv = [a for a in sys.argv if a != "--debug"]
    try:
        app()
    except MtmError as exc:
        if debug:
            raise
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted", markup=False)
        sys.exit(130)


if __name__ == "__main__":
    main()
