"""What every `mtm` command shares: the Typer app, the consoles, the --home and run-id arguments, the
store, a run in the foreground (`mtm run`, `mtm resume`, `mtm tune --refit`), and the run filters of
`mtm list`, `mtm export` and `mtm plot`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import typer

from mtm_engine import DISTRIBUTION
from mtm_engine.errors import MtmError
from mtm_tui.progress import ProgressSink, make_console

app = typer.Typer(
    # Help texts are plain text: rich markup would swallow "[default: ...]" and "[tune]".
    no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
    help="mtm: train and study the Moving Targets Model from the terminal.\n\nAny command takes --debug "
         "(anywhere on the line) to show a traceback instead of a one-line error.",
)
console = make_console()   # messages are lines, not paragraphs: a script can grep them
err_console = make_console(stderr=True)


def aside(text: str) -> None:
    """A note beside a command's output (on stderr, so that --json and pipes stay clean)."""
    err_console.print(text, markup=False)


HOME = typer.Option(None, "--home", envvar="MTM_HOME", show_envvar=True,
                    help="Folder of the store, checkpoints and logs [default: ./mtm-home].")


def _complete_run_ids(incomplete: str) -> list[str]:
    """Shell completion of run ids, from the store of MTM_HOME (or ./mtm-home)."""
    from mtm_engine.store import Store

    runs = Store(os.environ.get("MTM_HOME", "mtm-home")).home / "runs"
    return sorted(p.name[:8] for p in runs.glob(f"{incomplete}*")) if runs.is_dir() else []


RUN = typer.Argument(..., help="Run id, a unique prefix of it, or the run's name (the newest of that name).",
                     autocompletion=_complete_run_ids)


def _print_version(value: bool) -> None:
    if not value:
        return
    from importlib import metadata

    import torch

    gpus = [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
    console.print(f"{DISTRIBUTION} {metadata.version(DISTRIBUTION)}\n"
                  f"torch {torch.__version__} (CUDA {torch.version.cuda or 'none'})\n"
                  f"CUDA devices: {', '.join(gpus) or 'none visible'}", markup=False, highlight=False)
    raise typer.Exit()


@app.callback()
def _commands(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                           help="Print the versions of mtm and torch, and the CUDA devices seen.")
              ) -> None:
    """Train and study the Moving Targets Model."""


def open_store(home: Optional[Path]):
    from mtm_engine.store import Store

    return Store(home or Path("mtm-home"))


def foreground(store, run_id: str, spec, *, resume: bool, as_json: bool):
    """Execute a run here. Ctrl-C leaves it interrupted (its last whole epoch checkpointed) and ends
    mtm with one line and exit code 130."""
    from mtm_engine.events import NullSink
    from mtm_engine.runner import execute

    try:
        if as_json:
            return execute(store, run_id, NullSink(), resume=resume)
        with ProgressSink(spec.train.epochs, spec.classifiers) as sink:
            return execute(store, run_id, sink, resume=resume)
    except KeyboardInterrupt:
        err_console.print(f"interrupted; resume with `mtm resume {run_id[:8]}`", markup=False)
        raise typer.Exit(130) from None


def _named(value: Optional[str], names: dict[str, str], what: str) -> Optional[str]:
    """A dataset or loss as typed: its name, or the code the tables show (F-MNIST, PP), any case."""
    if value is None:
        return None
    lookup = {k.lower(): k for k in names} | {v.lower(): k for k, v in names.items()}
    try:
        return lookup[value.lower()]
    except KeyError:
        raise MtmError(f"--{what} {value}: unknown; choose one of "
                       f"{', '.join(f'{k} ({v})' for k, v in names.items())}") from None


def matching_runs(store, status, dataset, loss, where, sweep, tags=()) -> list[dict[str, Any]]:
    """The rows of the store that pass every filter (reaping dead runs, restarting a killed pool first)."""
    from mtm_engine.catalogue import DATASETS, loss_codes
    from mtm_engine.where import parse_where
    from mtm_tui.services.jobs import tend, with_queue_places

    dataset = dataset if dataset is None or dataset.startswith("folder:") else _named(dataset, {name: e.title for name, e in DATASETS.items()}, "dataset")
    loss = _named(loss, loss_codes(), "loss")
    predicates = [parse_where(w) for w in where]
    rows = store.rows()
    fields = {k for r in rows for k in r}
    for text, predicate in zip(where, predicates):
        if rows and predicate.field not in fields:
            raise MtmError(f"--where {text!r}: unknown field {predicate.field!r}; fields: {', '.join(sorted(fields))}")
    tend(store, rows)
    rows = with_queue_places(rows)
    return [r for r in rows
            if (not status or r["status"] in status) and (not dataset or r["dataset"] == dataset)
            and (not loss or r["loss"] == loss) and (not sweep or r.get("sweep") == sweep)
            and set(tags) <= set(r.get("tags") or ())
            and all(p(r) for p in predicates)]


FILTERS = {
    "status": typer.Option([], "--status", help="Only runs with this status (repeatable)."),
    "dataset": typer.Option(None, "--dataset", help="Only runs on this dataset (its name or code: fashion-mnist "
                                                    "or F-MNIST)."),
    "loss": typer.Option(None, "--loss", help="Only runs with this loss (its name or code: push_pull or PP)."),
    "where": typer.Option([], "--where", help="A condition on a field, e.g. 'best_val>0.9' (repeatable)."),
    "sweep": typer.Option(None, "--sweep", help="Only the trials of this sweep."),
    "tag": typer.Option([], "--tag", help="Only runs with this tag (repeatable: all of them)."),
}
