"""`mtm`: the headless command line. Commands parse, delegate to the engine and print.

Engine errors (`MtmError`) are caught in one place, `main`, and printed as one line; `--debug`
(anywhere on the command line) shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mtm_engine.errors import MtmError, out_of_memory
from mtm_tui.progress import ProgressSink, TextSink, result_table

app = typer.Typer(
    # Help texts are plain text: rich markup would swallow "[default: ...]" and "[tune]".
    no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
    help="mtm: train and study the Moving Targets Model from the terminal.\n\nAny command takes --debug "
         "(anywhere on the line) to show a traceback instead of a one-line error.",
)
console = Console(soft_wrap=True)   # messages are lines, not paragraphs: a script can grep them
err_console = Console(stderr=True, soft_wrap=True)

HOME = typer.Option(None, "--home", envvar="MTM_HOME", show_envvar=True,
                    help="Folder of the store, checkpoints and logs [default: ./mtm-home].")

def _complete_run_ids(incomplete: str) -> list[str]:
    """Shell completion of run ids, from the store of MTM_HOME (or ./mtm-home)."""
    from mtm_engine.store import Store

    runs = Store(os.environ.get("MTM_HOME", "mtm-home")).home / "runs"
    return sorted(p.name[:8] for p in runs.glob(f"{incomplete}*")) if runs.is_dir() else []


RUN = typer.Argument(..., help="Run id or unique prefix.", autocompletion=_complete_run_ids)


def _print_version(value: bool) -> None:
    if not value:
        return
    from importlib import metadata

    import torch

    gpus = [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
    console.print(f"mtm {metadata.version('mtm')}\ntorch {torch.__version__} (CUDA {torch.version.cuda or 'none'})\n"
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


def _foreground(store, run_id: str, spec, *, resume: bool, as_json: bool):
    """Execute a run here. Ctrl-C leaves it interrupted (its last whole epoch checkpointed) and ends
    mtm with one line and exit code 130."""
    from mtm_engine.records import NullSink
    from mtm_engine.runner import execute

    try:
        if as_json:
            return execute(store, run_id, NullSink(), resume=resume)
        with ProgressSink(spec.train.epochs, spec.classifiers) as sink:
            return execute(store, run_id, sink, resume=resume)
    except KeyboardInterrupt:
        err_console.print(f"interrupted; resume with `mtm resume {run_id[:8]}`", markup=False)
        raise typer.Exit(130) from None


def _report(run_id: str, spec, result, as_json: bool) -> None:
    selected = result.summary.get("val", {})
    if as_json:
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
        if not as_json:
            err_console.print(f"run {run_id[:8]} {result.status}: {result.message}", markup=False)
        raise typer.Exit(1)


# --- commands -----------------------------------------------------------------------------------

@app.command()
def run(
    config: Optional[Path] = typer.Argument(None, help="Experiment TOML file; the embedded quick start if omitted."),
    set_: list[str] = typer.Option([], "--set", help="Override a key: --set section.key=value (repeatable)."),
    json_: bool = typer.Option(False, "--json", help="Print one JSON object with the result, nothing else."),
    detach: bool = typer.Option(False, "--detach", "-d", help="Queue it to run in the background (survives "
                                                                 "logout); a pool of device slots drains the queue."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Train N seeds (train.seed, +1, ...), one run each; "
                                                         "report mean ± std. Detached, they share the slots."),
    gpus: Optional[str] = typer.Option(None, "--gpus", help="With --detach: the GPUs of the slots, 'auto' (every "
                                                            "visible GPU) or a list like 0,1."),
    per_gpu: Optional[int] = typer.Option(None, "--per-gpu", help="With --detach: runs at once on each GPU [default: 1]."),
    slots: Optional[int] = typer.Option(None, "--slots", help="With --detach: N CPU slots instead of GPUs."),
    home: Optional[Path] = HOME,
) -> None:
    """Train one experiment (in the foreground, or queued in the background with --detach)."""
    import dataclasses

    from mtm_engine.config import load_spec
    from mtm_engine.runner import create_run

    tune_keys = [o for o in set_ if o.startswith("tune.")]
    if tune_keys:
        raise MtmError(f"--set {tune_keys[0]}: tune.* keys only apply to `mtm tune`; drop it from `mtm run`")
    spec = load_spec(config, overrides=set_)
    specs = [dataclasses.replace(spec, train=dataclasses.replace(spec.train, seed=spec.train.seed + i))
             for i in range(seeds)]
    store = open_store(home)
    if detach:
        from mtm_tui import jobs

        devices = jobs.plan_slots(gpus, per_gpu, slots) if (gpus, per_gpu, slots) != (None, None, None) else None
        run_ids = [create_run(store, s, status="queued") for s in specs]
        if devices is not None:
            jobs.configure_slots(store, devices)
        logs = jobs.enqueue(store, run_ids)
        if json_:
            print(json.dumps({"run_ids": run_ids, "run_id": run_ids[0], "status": "queued", "log": str(logs[0])}))
        else:
            for run_id, log in zip(run_ids, logs):
                console.print(f"run [bold]{run_id[:8]}[/] (seed {store.meta(run_id)['seed']}) queued; log: {log}")
            console.print(f"slots: {', '.join(jobs.configured_slots(store))}; watch with `mtm list` or "
                          "`mtm show RUN`; stop with `mtm stop RUN`", markup=False)
        return
    if (gpus, per_gpu, slots) != (None, None, None):
        raise MtmError("--gpus, --per-gpu and --slots set the slots of detached runs; add --detach")
    results = []
    for s in specs:
        run_id = create_run(store, s, status="running")
        if not json_:
            console.print(f"run [bold]{run_id[:8]}[/] ({s.name}, seed {s.train.seed}): {s.data.dataset}, "
                          f"{s.model.backbone}, {s.loss.name}, {s.train.epochs} epochs; store {store.home}")
        result = _foreground(store, run_id, s, resume=False, as_json=json_)
        results.append((run_id, result))
        if result.status != "finished" or seeds == 1:
            _report(run_id, s, result, json_)
    if seeds > 1:
        _report_seeds(spec, results, json_)


def _report_seeds(spec, results: list, as_json: bool) -> None:
    """Mean ± std over seeds of the test accuracy at each run's validation-selected epoch."""
    import statistics

    per_classifier = {c: [r.summary["val"][c]["test_acc"] for _, r in results] for c in spec.classifiers}
    if as_json:
        print(json.dumps({"run_ids": [i for i, _ in results], "status": "finished", "seeds": len(results),
                          "test_accuracy_mean": {c: statistics.mean(v) for c, v in per_classifier.items()},
                          "test_accuracy_std": {c: statistics.stdev(v) for c, v in per_classifier.items()}}))
        return
    table = Table(title=f"{len(results)} seeds: test accuracy at the validation-selected epoch")
    for column in ("classifier", "mean ± std", "per seed"):
        table.add_column(column)
    for c, values in per_classifier.items():
        table.add_row(c, f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}",
                      "  ".join(f"{v:.4f}" for v in values))
    console.print(table)


@app.command(hidden=True)
def worker(run_id: str, home: Optional[Path] = HOME) -> None:
    """Execute one queued run in this process (the pool starts it in the run's slot), continuing from
    its checkpoint if it has one. Its progress goes to the run's log."""
    from mtm_engine.config import spec_from_dict
    from mtm_engine.runner import execute
    from mtm_engine.store import LOG

    store = open_store(home)
    spec = spec_from_dict(store.meta(run_id)["spec"])
    with open(store.run_dir(run_id) / LOG, "a") as log:
        say = lambda text: print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}", file=log, flush=True)  # noqa
        say(f"run {run_id} ({spec.name}, seed {spec.train.seed}) pid {os.getpid()}, "
            f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')!r}")
        try:
            result = execute(store, run_id, TextSink(spec.train.epochs, spec.classifiers, log), resume=True)
        except Exception as exc:   # recorded as failed by execute; say why in the log
            say(f"failed: {type(exc).__name__}: {exc}")
            raise typer.Exit(1)
        say(f"{result.status} {result.message}".rstrip())


@app.command(hidden=True)
def pool(home: Optional[Path] = HOME) -> None:
    """Drain this home's queue of detached runs into its device slots (what --detach starts)."""
    from mtm_tui import jobs

    jobs.drain(open_store(home))


class Status(str, Enum):
    queued = "queued"
    running = "running"
    finished = "finished"
    failed = "failed"
    diverged = "diverged"
    interrupted = "interrupted"


class Format(str, Enum):
    markdown = "markdown"
    csv = "csv"
    json = "json"


class Select(str, Enum):
    val = "val"
    final = "final"
    max_test = "max-test"


class Checkpoint(str, Enum):
    best = "best"
    last = "last"


class Split(str, Enum):
    val = "val"
    test = "test"


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


def _filtered(store, status, dataset, loss, where, sweep, tags=()) -> list[dict[str, Any]]:
    from mtm_engine.export import DATASET_TITLES, LOSS_CODES
    from mtm_engine.store import parse_where
    from mtm_tui.jobs import ensure_pool, with_queue_places

    dataset = dataset if dataset is None or dataset.startswith("folder:") else _named(dataset, DATASET_TITLES, "dataset")
    loss = _named(loss, LOSS_CODES, "loss")
    predicates = [parse_where(w) for w in where]
    rows = store.rows()
    fields = {k for r in rows for k in r}
    for text, predicate in zip(where, predicates):
        if rows and predicate.field not in fields:
            raise MtmError(f"--where {text!r}: unknown field {predicate.field!r}; fields: {', '.join(sorted(fields))}")
    with contextlib.suppress(MtmError):   # a read-only home still lists (dead runs shown as interrupted)
        store.reap(rows)
        if any(r["status"] == "queued" for r in rows):
            ensure_pool(store)   # a pool that was killed is started again
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


@app.command("list")
def list_(
    status: list[Status] = FILTERS["status"], dataset: Optional[str] = FILTERS["dataset"],
    loss: Optional[str] = FILTERS["loss"], where: list[str] = FILTERS["where"], sweep: Optional[str] = FILTERS["sweep"],
    tag: list[str] = FILTERS["tag"],
    sort: Optional[str] = typer.Option(None, "--sort", help="Sort by a field of --json (best_val, created, ...); "
                                                            "-FIELD sorts descending [default: created]."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Show the first N runs (after sorting)."),
    json_: bool = typer.Option(False, "--json", help="A JSON list of runs, for scripts."),
    home: Optional[Path] = HOME,
) -> None:
    """List the runs in the store."""
    rows = _filtered(open_store(home), status, dataset, loss, where, sweep, tag)
    if sort:
        field, descending = sort.lstrip("-"), sort.startswith("-")
        if rows and all(field not in r for r in rows):
            raise MtmError(f"--sort {sort}: unknown field {field!r}; fields: {', '.join(sorted(rows[0]))}")
        present = [r for r in rows if r.get(field) is not None]
        rows = sorted(present, key=lambda r: r[field], reverse=descending) + [r for r in rows if r.get(field) is None]
    rows = rows[:limit] if limit else rows
    if json_:
        print(json.dumps(rows))
        return
    if not rows:
        filtered = status or dataset or loss or where or sweep or tag
        console.print("no runs match" if filtered else "no runs; start one with `mtm run`", markup=False)
        return
    from mtm_tui.rows import COLUMNS, row_cells

    columns = COLUMNS[:-1]   # the sweep shows in --sweep and --json
    now = time.time()
    cells = [row_cells(r, now)[:len(columns)] for r in rows]
    table = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 1))
    # Every column but the name keeps its widest cell (numbers and statuses are never cut); the name
    # gets what is left of the terminal's width.
    widths = [max(len(Text.from_markup(c[i]).plain) for c in cells + [columns]) for i in range(len(columns))]
    name = columns.index("name")
    gaps = 2 * (len(columns) - 1)   # padding (0, 1): one space on each side of an inner border
    widths[name] = max(4, min(widths[name], console.width - (sum(widths) - widths[name]) - gaps))
    for column, width in zip(columns, widths):
        table.add_column(column, justify="right" if column in ("d", "epoch", "val%", "test%", "age") else "left",
                         no_wrap=True, overflow="ellipsis", min_width=width, max_width=width)
    for c in cells:
        table.add_row(*c)
    console.print(table)


@app.command()
def show(run: str = RUN,
         json_: bool = typer.Option(False, "--json", help="The run as one JSON object."),
         home: Optional[Path] = HOME) -> None:
    """Show a run: its spec, per-epoch figures, best vs last, and its log tail."""
    from mtm_engine.records import acc_key, classifiers_in
    from mtm_engine.results import summarise
    from mtm_engine.store import LOG
    from mtm_tui.rows import gpu_memory, pct, status

    store = open_store(home)
    run_id = store.resolve(run)
    meta, row, records = store.run(run_id)
    if json_:
        print(json.dumps({**meta, **row, "records": records}))
        return
    console.print(f"[bold]{run_id}[/] {meta['name']}  {status(row['status'])}  epoch {row['epoch']}/{row['epochs']}"
                  f"  device {row.get('device') or '-'}  seed {meta['seed']}" + (f"\n{row['message']}" if row["message"] else ""))
    for section, values in meta["spec"].items():
        if isinstance(values, dict):
            console.print(f"[bold]{section}[/] " + "  ".join(f"{k}={v!r}" for k, v in values.items()),
                          highlight=False)
    if records:
        classifiers = classifiers_in(records)
        table = Table(title="per epoch: val/test accuracy %, test cluster size σ and centre distance ρ",
                      box=None, header_style="bold")
        gpu = "gpu_mem_allocated_gb" in records[-1]   # only runs on CUDA have GPU figures
        for column in ("epoch", "loss", *classifiers, "σ", "ρ", "s", *(("GPU GB", "util%") if gpu else ())):
            table.add_column(column, justify="right", no_wrap=True)
        for r in records:
            table.add_row(str(r["epoch"]), f"{r['train_loss']:.4g}",
                          *(f"{pct(r.get(acc_key('val', c)), 1)}/{pct(r[acc_key('test', c)], 1)}" for c in classifiers),
                          f"{r['test_cluster_size']:.3g}", f"{r['test_centre_distance']:.3g}", f"{r['epoch_time_s']:.1f}",
                          *((gpu_memory(r), f"{r['gpu_util_pct']:.0f}" if "gpu_util_pct" in r else "-") if gpu else ()))
        console.print(table)
        console.print(result_table(summarise(records, classifiers), classifiers))
    log = store.run_dir(run_id) / LOG
    if log.exists():
        tail = log.read_text(errors="replace").splitlines()[-8:]
        console.print("[bold]log[/] " + str(log))
        console.print("\n".join(tail), markup=False, highlight=False)


@app.command("eval")
def eval_(run: str = RUN,
          checkpoint: Checkpoint = typer.Option(Checkpoint.best, "--checkpoint",
                                                help="best (the validation-selected epoch) or last."),
          split: Split = typer.Option(Split.test, "--split", help="The split to evaluate."),
          json_: bool = typer.Option(False, "--json", help="One JSON object: recomputed and recorded figures."),
          set_: list[str] = typer.Option([], "--set", help="Evaluate otherwise: --set eval.key=value, e.g. "
                                                           "eval.flip_tta=true, or data.root=DIR (repeatable)."),
          certainty: bool = typer.Option(False, "--certainty", help="How well certainty scores rank the test "
                                         "predictions: misclassification AUROC, AURC, accuracy at coverage, ECE."),
          ood: Optional[str] = typer.Option(None, "--ood", metavar="DATASET", help="With --certainty: "
                                            "out-of-distribution AUROC and FPR@95 against DATASET's test split."),
          fewshot: list[int] = typer.Option([], "--fewshot", metavar="K", help="K-shot accuracy on the classes the "
                                            "run held out (data.holdout_classes): trained, untrained and pixels (repeatable)."),
          episodes: int = typer.Option(600, "--episodes", min=2, help="With --fewshot: episodes per K."),
          home: Optional[Path] = HOME) -> None:
    """Recompute a run's accuracies and geometry from its kept weights, beside what it recorded."""
    from mtm_engine.analysis import evaluate_checkpoint
    from mtm_engine.config import spec_from_dict
    from mtm_engine.store import LIVE
    from mtm_tui import measure

    checkpoint, split = checkpoint.value, split.value
    trained = [o for o in set_ if not o.startswith(("eval.", "data.root="))]
    if trained:
        raise MtmError(f"--set {trained[0]}: mtm eval changes only how the weights are evaluated (eval.*) and "
                       f"where the data are (data.root); to change the training, start a run with mtm run --set")
    if ood is not None and not certainty:
        raise MtmError("--ood measures certainty scores: add --certainty")
    if certainty and fewshot:
        raise MtmError("--certainty and --fewshot are two measurements; give one at a time")
    if any(k < 1 for k in fewshot):
        raise MtmError(f"--fewshot {min(fewshot)}: K is the number of support images a class, at least 1")
    store = open_store(home)
    run_id = store.resolve(run)
    meta, row, records = store.run(run_id)
    spec = spec_from_dict(meta["spec"], set_)
    if (certainty or fewshot) and row["status"] in LIVE:
        raise MtmError(f"run {run_id[:8]} is {row['status']}: its best checkpoint may still change; "
                       f"measure it when it has ended (or stop it: mtm stop {run_id[:8]})")
    if certainty:
        measure.certainty(store, run_id, checkpoint, spec, ood, json_)
        return
    if fewshot:
        measure.fewshot(store, run_id, checkpoint, spec, sorted(set(fewshot)), episodes, json_)
        return
    epoch, record = evaluate_checkpoint(spec, store.run_dir(run_id), checkpoint)
    stored = next((r for r in records if r["epoch"] == epoch), {})
    keys = [k for k in record if k.startswith(f"{split}_")]
    if json_:
        print(json.dumps({"run_id": run_id, "checkpoint": checkpoint, "epoch": epoch, "split": split,
                          "recomputed": {k: record[k] for k in keys}, "recorded": {k: stored.get(k) for k in keys}}))
        return
    table = Table(title=f"run {run_id[:8]}: {split} split from the {checkpoint} checkpoint (epoch {epoch})",
                  box=None, header_style="bold")
    for column in ("measure", "recomputed", "recorded", ""):
        table.add_column(column, justify="left" if column == "measure" else "right")
    for k in keys:
        same = stored.get(k) == record[k]
        table.add_row(k[len(split) + 1:], f"{record[k]:.6g}", "-" if k not in stored else f"{stored[k]:.6g}",
                      "equal" if same else "differs")
    console.print(table)


@app.command()
def logs(run: str = RUN,
         follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines until the run ends."),
         home: Optional[Path] = HOME) -> None:
    """Print a run's log (what a detached run printed)."""
    from mtm_engine.store import LIVE, LOG

    store = open_store(home)
    run_id = store.resolve(run)
    path = store.run_dir(run_id) / LOG
    while follow and not path.exists() and store.row(run_id)["status"] == "queued":
        time.sleep(0.5)   # its log begins when a slot takes it
    if not path.exists():
        if store.row(run_id)["status"] == "queued":
            raise MtmError(f"run {run_id[:8]} is queued: its log begins when a slot takes it (`mtm logs -f` waits)")
        raise MtmError(f"run {run_id[:8]} has no log: it ran in the foreground (its figures: `mtm show {run_id[:8]}`)")
    with open(path, errors="replace") as fh:
        while True:
            chunk = fh.read()
            if chunk:
                print(chunk, end="", flush=True)
            elif not follow or store.row(run_id)["status"] not in LIVE:
                return
            else:
                time.sleep(0.5)


@app.command()
def tag(run: str = RUN, tags: list[str] = typer.Argument(..., help="Tags to add (or remove with --untag)."),
        untag: bool = typer.Option(False, "--untag", help="Remove these tags instead."),
        home: Optional[Path] = HOME) -> None:
    """Tag a run (mtm list --tag TAG shows the runs with a tag)."""
    store = open_store(home)
    run_id = store.resolve(run)
    new = store.tag(run_id, tags, untag)
    console.print(f"run {run_id[:8]} tags: {', '.join(new) or '(none)'}", markup=False)


@app.command()
def note(run: str = RUN, text: str = typer.Argument(..., help="The note; an empty string removes it."),
         home: Optional[Path] = HOME) -> None:
    """Attach a note to a run (shown by mtm show; --where 'note=...' filters on it)."""
    store = open_store(home)
    run_id = store.resolve(run)
    store.update(run_id, note=text)
    console.print(f"run {run_id[:8]} note: {text or '(removed)'}", markup=False)


@app.command()
def diff(a: str = RUN, b: str = RUN,
         json_: bool = typer.Option(False, "--json", help="One JSON object."),
         home: Optional[Path] = HOME) -> None:
    """Two runs side by side: the spec keys that differ, then their best figures."""
    from mtm_engine.records import classifiers_in, differing_keys, flatten_spec
    from mtm_engine.results import summarise

    store = open_store(home)
    runs = [(run_id, *store.run(run_id)) for run_id in (store.resolve(a), store.resolve(b))]
    keys = differing_keys(meta["spec"] for _, meta, _, _ in runs)
    best = {}
    for run_id, _, _, records in runs:
        summary = summarise(records, classifiers_in(records))["val"]
        best[run_id] = {c: {"epoch": v["epoch"], "val_acc": v["val_acc"], "test_acc": v["test_acc"]}
                        for c, v in summary.items()}
    if json_:
        print(json.dumps({"runs": [r[0] for r in runs],
                          "spec": {k: [flatten_spec(meta["spec"]).get(k) for _, meta, _, _ in runs] for k in keys},
                          "best": best}))
        return
    table = Table(box=None, header_style="bold")
    table.add_column("")
    for run_id, meta, row, _ in runs:
        table.add_column(f"{run_id[:8]} {meta['name']}")
    for k in keys:
        table.add_row(k, *(repr(flatten_spec(meta["spec"]).get(k)) for _, meta, _, _ in runs))
    for c in dict.fromkeys(c for figures in best.values() for c in figures):
        table.add_row(f"{c} val/test (epoch)", *(
            f"{100 * f[c]['val_acc']:.2f}/{100 * f[c]['test_acc']:.2f} ({f[c]['epoch']})"
            if c in (f := best[run_id]) and f[c]["val_acc"] is not None else "-" for run_id, *_ in runs))
    console.print(table if keys or best else "the two runs have the same spec and no records")


@app.command()
def stop(run: str = RUN,
         wait: float = typer.Option(0.0, "--wait", help="Wait up to this many seconds for the run to stop."),
         home: Optional[Path] = HOME) -> None:
    """Stop a run gracefully: its last whole epoch stays checkpointed; it becomes `interrupted`."""
    from mtm_engine.store import LIVE
    from mtm_tui import jobs

    store = open_store(home)
    run_id = store.resolve(run)
    done = jobs.stop(store, run_id)
    deadline = time.time() + wait
    while wait and time.time() < deadline and store.row(run_id)["status"] in LIVE:
        time.sleep(0.5)
    status = store.row(run_id)["status"]
    short = run_id[:8]
    console.print(f"run {short}: " + (f"{done}: stopped ({status}); `mtm resume {short}` continues it"
                                      if status not in LIVE else f"{done}; it stops after the current batch"),
                  markup=False, soft_wrap=True)


@app.command()
def resume(run: str = RUN,
           detach: bool = typer.Option(False, "--detach", "-d", help="Continue in the background."),
           json_: bool = typer.Option(False, "--json", help="Print one JSON object with the result."),
           home: Optional[Path] = HOME) -> None:
    """Continue an interrupted (or failed) run from its last checkpoint."""
    from mtm_engine.config import spec_from_dict
    from mtm_engine.store import owner
    from mtm_tui import jobs

    store = open_store(home)
    run_id = store.resolve(run)
    if detach:
        log = jobs.resume_detached(store, run_id)
        console.print(f"run [bold]{run_id[:8]}[/] queued to resume in the background; log: {log}")
        return
    jobs.claim_for_resume(store, run_id, status="running", **owner())
    spec = spec_from_dict(store.meta(run_id)["spec"])
    _report(run_id, spec, _foreground(store, run_id, spec, resume=True, as_json=json_), json_)


@app.command()
def rm(run: str = RUN,
       yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
       home: Optional[Path] = HOME) -> None:
    """Delete a run: its records, checkpoint and log."""
    from mtm_tui import jobs

    store = open_store(home)
    run_id = store.resolve(run)
    row = store.row(run_id)
    if not yes and not typer.confirm(f"delete run {run_id} ({row['name']}, {row['status']})?"):
        raise typer.Exit(1)
    jobs.delete(store, run_id)
    console.print(f"deleted run {run_id}")


@app.command()
def export(
    run: Optional[str] = typer.Argument(None, help="One run's report instead of the result tables."),
    format_: Format = typer.Option(Format.markdown, "--format", help="The output format."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write to this file instead of the terminal."),
    select: Select = typer.Option(Select.val, "--select", help="val (validation-selected epoch), final, or max-test "
                                                              "(the paper's protocol, optimistic)."),
    compare_paper: bool = typer.Option(False, "--compare-paper", help="Put the paper's figures beside ours."),
    measures: bool = typer.Option(False, "--measures", help="Instead: each configuration's accuracy, retrieval, "
                                  "geometry, certainty and few-shot figures side by side (Markdown)."),
    status: list[Status] = typer.Option([Status.finished], "--status", help="Runs with this status (repeatable)."),
    dataset: Optional[str] = FILTERS["dataset"], loss: Optional[str] = FILTERS["loss"],
    where: list[str] = FILTERS["where"], sweep: Optional[str] = FILTERS["sweep"],
    home: Optional[Path] = HOME,
) -> None:
    """Export result tables in the layout of the paper's Tables 6-7 (or one run's report)."""
    from mtm_engine import export as ex
    from mtm_engine.records import MEASUREMENTS

    format_, select = format_.value, select.value
    store = open_store(home)
    if run is not None:
        run_id = store.resolve(run)
        meta, row, records = store.run(run_id)
        measured = {kind: store.measurement(run_id, kind) for kind in MEASUREMENTS}
        text = (ex.run_report(meta, row, records, measured) if format_ == "markdown"
                else json.dumps({**meta, **row, "records": records, **measured}, indent=1))
    else:
        rows = _filtered(store, status, dataset, loss, where, sweep)
        runs = [store.run(r["id"]) for r in rows]
        if measures:
            if format_ != "markdown" or select != "val" or compare_paper:
                raise MtmError("--measures is a Markdown table at the validation-selected epoch; "
                               "drop --format, --select and --compare-paper")
            text = ex.measures_markdown([(meta["spec"], records, {kind: store.measurement(meta["id"], kind)
                                                                  for kind in MEASUREMENTS}) for meta, _, records in runs])
            if not text:
                raise MtmError("no runs with records match; `mtm list` shows the runs")
            return _write(text, out)
        tables = ex.build_tables([(meta["spec"], records) for meta, _, records in runs], select)
        if not tables:
            raise MtmError("no runs with records match; `mtm list` shows the runs (export takes finished "
                           "runs unless --status says otherwise)")
        text = {"markdown": lambda: ex.to_markdown(tables, select, compare_paper), "csv": lambda: ex.to_csv(tables),
                "json": lambda: ex.to_json(tables, select)}[format_]()
    _write(text, out)


def _write(text: str, out: Optional[Path]) -> None:
    """To the terminal, or to the file `out` (saying where)."""
    if out is None:
        print(text, end="" if text.endswith("\n") else "\n")
        return
    from mtm_engine.store import writing

    with writing(out):
        out.write_text(text)
    err_console.print(f"wrote {out.resolve()}", markup=False)


@app.command("tune")
def tune_(
    config: Optional[Path] = typer.Argument(None, help="Experiment TOML with a [tune] section; the quick start if omitted."),
    set_: list[str] = typer.Option([], "--set", help="Override a key, tune.* included: --set tune.search=random."),
    samples: Optional[int] = typer.Option(None, "--samples", help="Trials to run (tune.num_samples; the paper: 50)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Most epochs per trial (tune.max_epochs; the paper: 30)."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Restore an interrupted sweep by its id."),
    address: Optional[str] = typer.Option(None, "--address", help="Join a running Ray cluster, e.g. 10.0.0.5:6379."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Where Ray keeps the sweep (tune.storage): a "
                                          "folder every node can write, or a URI (s3://...); default HOME/sweeps."),
    dashboard: bool = typer.Option(False, "--dashboard", help="Start Ray's dashboard (on 127.0.0.1)."),
    refit: bool = typer.Option(False, "--refit", help="Then train the best config on train+validation."),
    json_: bool = typer.Option(False, "--json", help="Print the sweep's summary as one JSON object."),
    home: Optional[Path] = HOME,
) -> None:
    """Search hyperparameters with Ray Tune (HyperOpt, ASHA, plateau stopping); every trial is a run."""
    from mtm_engine.sweep_spec import load_sweep

    if resume and (set_ or samples is not None or epochs is not None or config is not None or storage is not None):
        raise MtmError(f"--resume {resume} restores the sweep with its saved settings; drop the config, --set, "
                       f"--samples, --epochs and --storage (or start a new sweep)")
    overrides = list(set_) + ([f"tune.num_samples={samples}"] if samples is not None else []) + (
        [f"tune.max_epochs={epochs}"] if epochs is not None else []) + (
        [f"tune.storage={json.dumps(storage)}"] if storage is not None else [])
    store = open_store(home)
    spec, settings = load_sweep(config, overrides)   # validates before Ray starts
    from mtm_engine.tune import run_sweep

    say = None if json_ else (lambda text: console.print(text, markup=False, highlight=False))
    planned: dict[str, Any] = {}

    def started(sweep_id: str, shown: dict[str, Any]) -> None:   # once Ray is up; a resumed sweep shows its own
        planned.update(shown)
        if not json_:
            console.print(f"sweep {sweep_id}: {shown['num_samples']} trials of at most {shown['max_epochs']} epochs, "
                          f"{shown['search']} search, scheduler {shown['scheduler']}, maximising "
                          f"val_acc_{shown['metric']}; `mtm list --sweep {sweep_id}` shows the trials", markup=False)

    summary = run_sweep(spec, settings, store.home, sweep_id=resume, resume=bool(resume), address=address,
                        dashboard=dashboard, say=say, started=started)
    ended = sum(summary["status"].get(k, 0) for k in ("finished", "failed", "diverged"))
    if ended < planned.get("num_samples", 0):   # Ctrl-C: Tune stopped before every trial had ended
        err_console.print(f"interrupted; resume with `mtm tune --resume {summary['sweep_id']}`", markup=False)
        raise typer.Exit(130)
    best = summary["best"]
    if refit and best is not None:
        summary["refit"] = _refit(store, summary, as_json=json_)
    if json_:
        print(json.dumps(summary))
        return
    counts = ", ".join(f"{n} {status}" for status, n in summary["status"].items())
    console.print(f"sweep [bold]{summary['sweep_id']}[/]: {summary['trials']} trials ({counts})")
    if best is None:
        raise MtmError(f"sweep {summary['sweep_id']} has no trial with a result; `mtm list --sweep "
                       f"{summary['sweep_id']} --status failed` shows why")
    values = ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["config"].items())
    console.print(f"best trial {best['run_id']}: {values}\n  {summary['metric']} {best['best_val']:.4f} at epoch "
                  f"{best['best_epoch']}, test accuracy there {best['test_acc']:.4f}")


def _refit(store, summary: dict[str, Any], as_json: bool) -> dict[str, Any]:
    """Train the best trial's config on train+validation, for as many epochs as its selected one."""
    from mtm_engine.config import spec_from_dict
    from mtm_engine.runner import create_run

    best = summary["best"]
    raw = store.meta(best["run_id"])["spec"]
    raw["name"] = f"{raw['name']}-refit"
    raw["data"]["val_fraction"] = 0.0
    raw["train"]["epochs"] = best["best_epoch"]
    spec = spec_from_dict(raw)
    run_id = create_run(store, spec, status="running", extra={"refit_of": summary["sweep_id"]})
    if not as_json:
        console.print(f"refit {run_id}: the best config on train+validation for {spec.train.epochs} epochs")
    result = _foreground(store, run_id, spec, resume=False, as_json=as_json)
    final = result.summary["final"]
    if not as_json and result.records:
        console.print("refit test accuracy: " + "  ".join(f"{c} {v['test_acc']:.4f}" for c, v in final.items()))
    return {"run_id": run_id, "status": result.status, "test_accuracy": {c: v["test_acc"] for c, v in final.items()}}


@app.command()
def plot(
    runs: list[str] = typer.Argument(None, help="Run ids or prefixes; or choose runs with the filters."),
    out: Path = typer.Option(Path("figures"), "--out", help="Folder for the figures."),
    format_: list[str] = typer.Option(["png", "svg"], "--format", help="png, svg, pdf (repeatable)."),
    status: list[Status] = typer.Option([Status.finished], "--status", help="Runs with this status (repeatable)."),
    dataset: Optional[str] = FILTERS["dataset"], loss: Optional[str] = FILTERS["loss"],
    where: list[str] = FILTERS["where"], sweep: Optional[str] = FILTERS["sweep"],
    home: Optional[Path] = HOME,
) -> None:
    """Figures like the paper's Appendix B, and each run's embedding space (Figs. 2-3)."""
    from mtm_tui.plots import plot_runs

    store = open_store(home)
    ids = [store.resolve(r) for r in runs] if runs else [r["id"] for r in _filtered(store, status, dataset, loss,
                                                                                      where, sweep)]
    written = plot_runs([store.run(i) for i in ids], {i: store.snapshot(i, "best") for i in ids}, out,
                        tuple(format_), {i: store.measurement(i, "certainty") for i in ids})
    console.print(f"wrote {len(written)} files to {out}/: " + ", ".join(sorted({p.stem for p in written})))


@app.command()
def tui(home: Optional[Path] = HOME) -> None:
    """Open the terminal UI (the same as `mtm-tui`)."""
    from mtm_tui.app import run

    raise typer.Exit(run(home or Path("mtm-home")))


def main() -> None:
    """Entry point: strips --debug from anywhere, runs the app, prints engine errors as one line."""
    debug = "--debug" in sys.argv or bool(os.environ.get("MTM_DEBUG"))
    sys.argv = [a for a in sys.argv if a != "--debug"]
    try:
        app()
    except MtmError as exc:
        if debug:
            raise
        if "--json" in sys.argv:   # scripts parse stdout: the error is JSON too
            print(json.dumps({"error": str(exc)}))
        else:
            err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted; `mtm resume RUN` continues from the last checkpoint", markup=False)
        sys.exit(130)
    except Exception as exc:   # not a user error, but still one line (the run, if any, is recorded failed)
        if debug:
            raise
        what = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        oom = out_of_memory(exc)   # outside a run too (mtm eval)
        line = str(oom) if oom else f"{type(exc).__name__}: {what[:300]} (add --debug for the traceback)"
        if "--json" in sys.argv:
            print(json.dumps({"error": line}))
        else:
            err_console.print(f"error: {line}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
