"""`mtm` commands that start, watch and manage runs: run, keys, logs, tag, note, stop, resume, rm, doctor (and
the hidden worker and pool that detached runs use)."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from mtm_engine.errors import MtmError
from mtm_engine.records import Status
from mtm_tui.commands.base import HOME, RUN, app, aside, console, err_console, foreground, open_store
from mtm_tui.progress import TextSink, result_table


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
        console.print(result_table(result.summary, spec.classifiers, spec.eval.selection))
    if result.status != Status.FINISHED:
        if not as_json:
            err_console.print(f"run {run_id[:8]} {result.status}: {result.message}", markup=False)
        raise typer.Exit(1)


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
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch's CPU threads in the foreground "
                                          "[default: every core]; the same seed repeats its numbers only with the "
                                          "same threads on the same CPU model."),
    from_: Optional[str] = typer.Option(None, "--from", metavar="RUN", help="Start from another run's spec (any "
                                        "status; id, prefix or name), changed by --set: clone and relaunch."),
    home: Optional[Path] = HOME,
) -> None:
    """Train one experiment (in the foreground, or queued in the background with --detach)."""
    import dataclasses

    from mtm_engine.config import load_spec, spec_from_dict
    from mtm_engine.runner import create_run

    tune_keys = [o for o in set_ if o.startswith("tune.")]
    if tune_keys:
        raise MtmError(f"--set {tune_keys[0]}: tune.* keys only apply to `mtm tune`; drop it from `mtm run`")
    store = open_store(home)
    if from_ is not None and config is not None:
        raise MtmError(f"--from {from_} and {config} are two starting points; give one")
    spec = (spec_from_dict(store.meta(store.resolve(from_, aside))["spec"], set_) if from_ is not None
            else load_spec(config, overrides=set_))
    specs = [dataclasses.replace(spec, train=dataclasses.replace(spec.train, seed=spec.train.seed + i))
             for i in range(seeds)]
    if detach:
        from mtm_tui.services import jobs

        if threads is not None:
            raise MtmError("--threads sets a foreground run's threads; a detached run gets its slot's share of the "
                           "cores (--slots N: cores / N each)")

        devices = jobs.plan_slots(gpus, per_gpu, slots) if (gpus, per_gpu, slots) != (None, None, None) else None
        if devices is not None:
            jobs.configure_slots(store, devices)
        jobs.configured_slots(store)   # readable before any run is queued: a damaged slot list queues nothing
        run_ids = [create_run(store, s, status=Status.QUEUED) for s in specs]
        logs = jobs.enqueue(store, run_ids)
        if json_:
            print(json.dumps({"run_ids": run_ids, "run_id": run_ids[0], "status": Status.QUEUED, "log": str(logs[0])}))
        else:
            for run_id, log in zip(run_ids, logs):
                console.print(f"run [bold]{run_id[:8]}[/] (seed {store.meta(run_id)['seed']}) queued; log: {log}")
            console.print(f"slots: {', '.join(jobs.configured_slots(store))}; watch with `mtm list` or "
                          "`mtm show RUN`; stop with `mtm stop RUN`", markup=False)
        return
    if (gpus, per_gpu, slots) != (None, None, None):
        raise MtmError("--gpus, --per-gpu and --slots set the slots of detached runs; add --detach")
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    results = []
    for i, s in enumerate(specs):
        run_id = create_run(store, s, status=Status.RUNNING)
        if not json_:
            console.print(f"run [bold]{run_id[:8]}[/] ({s.name}, seed {s.train.seed}): {s.data.dataset}, "
                          f"{s.model.backbone}, {s.loss.name}, {s.train.epochs} epochs; store {store.home}")
        try:
            result = foreground(store, run_id, s, resume=False, as_json=json_)
            results.append((run_id, result))
            if result.status != Status.FINISHED or seeds == 1:
                _report(run_id, s, result, json_)
        except typer.Exit:   # stopped or failed: the seeds after it were never created; say how to start them
            rest = [t.train.seed for t in specs[i + 1:]]
            if rest:
                again = " ".join(["mtm run", *([str(config)] if config else []), *(f"--set {o}" for o in set_),
                                  f"--set train.seed={rest[0]}", *([f"--seeds {len(rest)}"] if len(rest) > 1 else [])])
                err_console.print(f"seed{'s' * (len(rest) > 1)} {', '.join(map(str, rest))} never started; start "
                                  f"{'them' if len(rest) > 1 else 'it'} with `{again}`", markup=False, soft_wrap=True)
            raise
    if seeds > 1:
        _report_seeds(spec, results, json_)


def _report_seeds(spec, results: list, as_json: bool) -> None:
    """Mean ± std over seeds of the test accuracy at each run's selected epoch (eval.selection)."""
    import statistics

    selection = spec.eval.selection
    per_classifier = {c: [r.summary[selection][c]["test_acc"] for _, r in results] for c in spec.classifiers}
    if as_json:
        print(json.dumps({"run_ids": [i for i, _ in results], "status": Status.FINISHED, "seeds": len(results),
                          "test_accuracy_mean": {c: statistics.mean(v) for c, v in per_classifier.items()},
                          "test_accuracy_std": {c: statistics.stdev(v) for c, v in per_classifier.items()}}))
        return
    table = Table(title=f"{len(results)} seeds: test accuracy at the "
                        + ("validation-selected epoch" if selection == "val" else "best test epoch* (optimistic)"))
    for column in ("classifier", "mean ± std", "per seed"):
        table.add_column(column)
    for c, values in per_classifier.items():
        table.add_row(c, f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}",
                      "  ".join(f"{v:.4f}" for v in values))
    console.print(table)


@app.command()
def keys(as_json: bool = typer.Option(False, "--json", help="Print one JSON object: key -> default, choices, meaning.")
         ) -> None:
    """List every configuration key: its default, the values it takes, and what it means."""
    from mtm_engine.config import Spec, choices
    from mtm_engine.records import flatten_spec
    from mtm_engine.reference import key_help, shown_default

    defaults, named = flatten_spec(Spec().to_dict()), choices()
    if as_json:
        print(json.dumps({key: {"default": defaults.get(key), "choices": list(named.get(key, ())),
                                "meaning": meaning.replace("`", "")} for key, meaning in key_help().items() if key != "name"},
                         indent=1))
        return
    table = Table(box=None, header_style="bold")
    for column in ("key", "default", "meaning"):
        table.add_column(column, overflow="fold")
    for key, meaning in key_help().items():
        if key in defaults:
            one_of = f" (one of {', '.join(named[key])})" if key in named else ""
            table.add_row(key, shown_default(defaults[key]), meaning.replace("`", "") + one_of)
    console.print(table)


@app.command(hidden=True)
def worker(run_id: str, home: Optional[Path] = HOME) -> None:
    """Execute one queued run in this process (the pool starts it in the run's slot), continuing from
    its checkpoint if it has one. Its progress goes to the run's log."""
    from mtm_engine.config import spec_from_dict
    from mtm_engine.runner import execute
    from mtm_engine.store import LOG
    from mtm_tui.services import jobs

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
        finally:   # the queue goes on if its pool died while this run trained
            with contextlib.suppress(MtmError):
                jobs.restart_pool_if_queued(store)
        say(f"{result.status} {result.message}".rstrip())


@app.command(hidden=True)
def pool(home: Optional[Path] = HOME) -> None:
    """Drain this home's queue of detached runs into its device slots (what --detach starts)."""
    from mtm_tui.services import jobs

    jobs.drain(open_store(home))


@app.command()
def logs(run: str = RUN,
         follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines until the run ends."),
         home: Optional[Path] = HOME) -> None:
    """Print a run's log (what a detached run printed)."""
    from mtm_engine.store import LIVE, LOG
    from mtm_tui.services import jobs

    store = open_store(home)
    run_id = store.resolve(run, aside)
    path = store.run_dir(run_id) / LOG
    if follow and not path.exists() and store.row(run_id)["status"] == Status.QUEUED:
        err_console.print(f"run {run_id[:8]} is queued: waiting for a slot to start it (Ctrl-C stops the waiting, "
                          f"not the run)", markup=False)
        waited = 0.0
        while not path.exists() and store.row(run_id)["status"] == Status.QUEUED:
            if waited % 5 == 0:   # a killed pool is started again, then looked after every 5 s
                jobs.configured_slots(store)   # a slot list damaged meanwhile would kill every pool: say so
                jobs.restart_pool_if_queued(store)
            time.sleep(0.5)
            waited += 0.5
    if not path.exists():
        row = store.row(run_id)
        status = row["status"]
        if status == Status.QUEUED:
            raise MtmError(f"run {run_id[:8]} is queued: its log begins when a slot takes it (`mtm logs -f` waits)")
        if row.get("started") is None:
            raise MtmError(f"run {run_id[:8]} left the queue without starting ({status}); `mtm resume {run_id[:8]} "
                           f"--detach` queues it again")
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
    run_id = store.resolve(run, aside)
    new = store.tag(run_id, tags, untag)
    console.print(f"run {run_id[:8]} tags: {', '.join(new) or '(none)'}", markup=False)


@app.command()
def note(run: str = RUN, text: str = typer.Argument(..., help="The note; an empty string removes it."),
         home: Optional[Path] = HOME) -> None:
    """Attach a note to a run (shown by mtm show; --where 'note=...' filters on it)."""
    store = open_store(home)
    run_id = store.resolve(run, aside)
    store.update(run_id, note=text)
    console.print(f"run {run_id[:8]} note: {text or '(removed)'}", markup=False)


@app.command()
def stop(run: str = RUN,
         wait: float = typer.Option(0.0, "--wait", help="Wait up to this many seconds for the run to stop."),
         home: Optional[Path] = HOME) -> None:
    """Stop a run gracefully: its last whole epoch stays checkpointed; it becomes `interrupted`."""
    from mtm_engine.records import LIVE
    from mtm_tui.services import jobs

    store = open_store(home)
    run_id = store.resolve(run, aside)
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
    from mtm_engine.processes import owner
    from mtm_tui.services import jobs

    store = open_store(home)
    run_id = store.resolve(run, aside)
    if detach:
        log = jobs.resume_detached(store, run_id)
        console.print(f"run [bold]{run_id[:8]}[/] queued to resume in the background; log: {log}")
        return
    jobs.claim_for_resume(store, run_id, status=Status.RUNNING, slot=None, slot_device=None, **owner())
    spec = spec_from_dict(store.meta(run_id)["spec"])
    _report(run_id, spec, foreground(store, run_id, spec, resume=True, as_json=json_), json_)


@app.command()
def rm(run: str = RUN,
       yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
       home: Optional[Path] = HOME) -> None:
    """Delete a run: its records, checkpoint and log."""
    from mtm_engine.store import StoreError
    from mtm_tui.services import jobs

    store = open_store(home)
    try:
        run_id = store.resolve(run, aside)
    except StoreError:   # perhaps an index row whose run folder is gone: removing it is all there is to do
        ghosts = [row for row in store.ghosts() if run and row["id"].startswith(run)]
        if len(ghosts) != 1:
            raise
        store.remove_index_row(ghosts[0])
        console.print(f"removed the index row of run {ghosts[0]['id']} (its run folder was already gone)")
        return
    row = store.row(run_id)
    if not yes and not typer.confirm(f"delete run {run_id} ({row['name']}, {row['status']})?"):
        raise typer.Exit(1)
    jobs.delete(store, run_id)
    console.print(f"deleted run {run_id}")


@app.command()
def doctor(dry_run: bool = typer.Option(False, "--dry-run", help="Only say what it would mend."),
           home: Optional[Path] = HOME) -> None:
    """Mend the store from the run folders: move unreadable files into HOME/quarantine, remove index rows whose
    run folder is gone, rebuild missing index rows (after a shard was moved aside), and remove the half-written
    temporary files of killed writers. Deletes no data."""
    from mtm_engine.doctor import doctor as mend

    store = open_store(home)
    checkup = mend(store, fix=not dry_run)
    verb = (lambda done, would: would) if dry_run else (lambda done, would: done)
    for path, target in checkup.quarantined:
        console.print(f"{verb('moved', 'would move')} unreadable {path} to {target}", markup=False)
    for run_id in checkup.ghosts:
        console.print(f"{verb('removed', 'would remove')} the index row of run {run_id}: its run folder is gone",
                      markup=False)
    if checkup.reindexed:
        console.print(f"{verb('re-indexed', 'would re-index')} {len(checkup.reindexed)} run"
                      f"{'s' * (len(checkup.reindexed) != 1)} missing from the index or out of date: "
                      f"{', '.join(r[:8] for r in checkup.reindexed)}", markup=False)
    if checkup.temporary:
        console.print(f"{verb('removed', 'would remove')} {len(checkup.temporary)} half-written temporary file"
                      f"{'s' * (len(checkup.temporary) != 1)} of killed writers", markup=False)
    if checkup.healthy:
        console.print(f"the store in {store.home} is sound: nothing to mend", markup=False)
