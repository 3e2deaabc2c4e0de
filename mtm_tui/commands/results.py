"""`mtm` commands that read results: list, show, eval, diff, export and plot."""

from __future__ import annotations

import json
import os
import time
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from mtm_engine.errors import MtmError
from mtm_engine.records import Status
from mtm_tui.commands.base import (
    FILTERS,
    HOME,
    RUN,
    app,
    aside,
    console,
    err_console,
    matching_runs,
    open_store,
)
from mtm_tui.progress import result_table


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
    rows = matching_runs(open_store(home), status, dataset, loss, where, sweep, tag)
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
    from mtm_tui.services.rows import COLUMNS, row_cells

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


def listed_words(words: list[str]) -> str:
    """["a", "b", "c"] -> "a, b and c"."""
    return " and ".join(filter(None, (", ".join(words[:-1]), *words[-1:])))


@app.command()
def show(run: str = RUN,
         json_: bool = typer.Option(False, "--json", help="The run as one JSON object."),
         home: Optional[Path] = HOME) -> None:
    """Show a run: its spec, per-epoch figures, best vs last, and its log tail."""
    from mtm_engine.records import METRICS, acc_key, classifiers_in
    from mtm_engine.results import summarise
    from mtm_engine.store import LOG
    from mtm_tui.services.rows import TEST_SELECTED, gpu_memory, pct, status, tags_and_note, test_selected

    store = open_store(home)
    run_id = store.resolve(run, aside)
    meta, row, records = store.run(run_id)
    if json_:
        print(json.dumps({**meta, **row, "records": records}))
        return
    console.print(f"[bold]{run_id}[/] {meta['name']}  {status(row['status'])}  epoch {row['epoch']}/{row['epochs']}"
                  f"  device {row.get('device') or '-'}  seed {meta['seed']}")
    for line in (row["message"], tags_and_note(row),   # what happened to it; what the user wrote on it
                 TEST_SELECTED if test_selected(row) else ""):
        if line:
            console.print(line, markup=False, highlight=False)
    for section, values in meta["spec"].items():
        if isinstance(values, dict):
            console.print(f"[bold]{section}[/] " + "  ".join(f"{k}={v!r}" for k, v in values.items()),
                          highlight=False)
    if records:
        classifiers = classifiers_in(records)
        # the test split's measures that the run records, in one compact format
        shown = [m for m in METRICS.values() if m.show and any(m.key() in r for r in records)]
        table = Table(title=f"per epoch: val/test accuracy %, test {listed_words([m.words for m in shown])}",
                      box=None, header_style="bold")
        gpu = "gpu_mem_allocated_gb" in records[-1]   # only runs on CUDA have GPU figures
        for column in ("epoch", "loss", *classifiers, *(m.symbol for m in shown), "s",
                       *(("GPU GB", "util%") if gpu else ())):
            table.add_column(column, justify="right", no_wrap=True)
        for r in records:
            table.add_row(str(r["epoch"]), f"{r[METRICS['train_loss'].key()]:.4g}",
                          *(f"{pct(r.get(acc_key('val', c)), 1)}/{pct(r[acc_key('test', c)], 1)}" for c in classifiers),
                          *(f"{r[m.key()]:.3g}" if m.key() in r else "-" for m in shown),
                          f"{r['epoch_time_s']:.1f}",
                          *((gpu_memory(r), f"{r['gpu_util_pct']:.0f}" if "gpu_util_pct" in r else "-") if gpu else ()))
        console.print(table)
        console.print(result_table(summarise(records, classifiers), classifiers, row.get("selection", "val")))
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
          force: bool = typer.Option(False, "--force", help="With --fewshot: replace a kept measurement made "
                                     "with other settings."),
          home: Optional[Path] = HOME) -> None:
    """Recompute a run's accuracies and geometry from its kept weights, beside what it recorded."""
    from mtm_engine.analysis import check_best, evaluate_checkpoint
    from mtm_engine.config import spec_from_dict
    from mtm_engine.records import LIVE
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
    run_id = store.resolve(run, aside)
    meta, row, records = store.run(run_id)
    spec = spec_from_dict(meta["spec"], set_)
    if (certainty or fewshot) and row["status"] in LIVE:
        raise MtmError(f"run {run_id[:8]} is {row['status']}: its best checkpoint may still change; "
                       f"measure it when it has ended (or stop it: mtm stop {run_id[:8]})")
    if checkpoint == "best":
        check_best(store.run_dir(run_id), row.get("best_epoch"), run_id)
    if (certainty or fewshot) and not os.access(store.run_dir(run_id), os.W_OK):   # before minutes of computing
        raise MtmError(f"cannot keep the measurement in {store.run_dir(run_id)}: the folder is not writable; fix its "
                       f"permissions, or copy the home somewhere writable and give it with --home")
    if certainty:
        measure.certainty(store, run_id, checkpoint, spec, ood, json_)
        return
    if fewshot:
        measure.fewshot(store, run_id, checkpoint, spec, sorted(set(fewshot)), episodes, json_, force)
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
def diff(a: str = RUN, b: str = RUN,
         json_: bool = typer.Option(False, "--json", help="One JSON object."),
         home: Optional[Path] = HOME) -> None:
    """Two runs side by side: the spec keys that differ, then their best figures."""
    from mtm_engine.records import classifiers_in, differing_keys, flatten_spec
    from mtm_engine.results import summarise

    store = open_store(home)
    runs = [(run_id, *store.run(run_id)) for run_id in (store.resolve(a, aside), store.resolve(b, aside))]
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
def export(
    run: Optional[str] = typer.Argument(None, help="One run's report instead of the result tables."),
    format_: Format = typer.Option(Format.markdown, "--format", help="The output format."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write to this file instead of the terminal."),
    select: Select = typer.Option(Select.val, "--select", help="val (validation-selected epoch), final, or max-test "
                                                              "(the paper's protocol, optimistic)."),
    compare_paper: bool = typer.Option(False, "--compare-paper", help="Put the paper's figures beside ours."),
    measures: bool = typer.Option(False, "--measures", help="Instead: each configuration's accuracy, retrieval, "
                                  "geometry, certainty and few-shot figures side by side (Markdown)."),
    status: list[Status] = typer.Option([Status.FINISHED], "--status", help="Runs with this status (repeatable)."),
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
        run_id = store.resolve(run, aside)
        meta, row, records = store.run(run_id)
        measured = {kind: store.measurement(run_id, kind) for kind in MEASUREMENTS}
        text = (ex.run_report(meta, row, records, measured) if format_ == "markdown"
                else json.dumps({**meta, **row, "records": records, **measured}, indent=1))
    else:
        rows = matching_runs(store, status, dataset, loss, where, sweep)
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
        tables = ex.build_tables([(meta["spec"], records, meta["id"]) for meta, _, records in runs], select)
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
    from mtm_engine.atomic import atomic_write
    from mtm_engine.store import writing

    with writing(out, elsewhere="another --out"):
        atomic_write(out, text)
    err_console.print(f"wrote {out.resolve()}", markup=False)


@app.command()
def plot(
    runs: list[str] = typer.Argument(None, help="Run ids or prefixes; or choose runs with the filters."),
    out: Path = typer.Option(Path("figures"), "--out", help="Folder for the figures."),
    format_: list[str] = typer.Option(["png", "svg"], "--format", help="png, svg, pdf (repeatable)."),
    status: list[Status] = typer.Option([Status.FINISHED], "--status", help="Runs with this status (repeatable)."),
    dataset: Optional[str] = FILTERS["dataset"], loss: Optional[str] = FILTERS["loss"],
    where: list[str] = FILTERS["where"], sweep: Optional[str] = FILTERS["sweep"],
    home: Optional[Path] = HOME,
) -> None:
    """Figures like the paper's Appendix B, and each run's embedding space (Figs. 2-3)."""
    from mtm_tui.plots import plot_runs

    store = open_store(home)
    chosen = [store.resolve(r, aside) for r in runs] if runs else None
    ids = chosen or [r["id"] for r in matching_runs(store, status, dataset, loss, where, sweep)]
    written = plot_runs([store.run(i) for i in ids], {i: store.snapshot(i, "best") for i in ids}, out,
                        tuple(format_), {i: store.measurement(i, "certainty") for i in ids})
    console.print(f"wrote {len(written)} files to {out}/: " + ", ".join(sorted({p.stem for p in written})))
