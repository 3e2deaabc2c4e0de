"""`mtm tune`: a Ray Tune sweep, each trial a run, and the optional refit of its best config."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Optional

import typer

from mtm_engine.errors import MtmError
from mtm_engine.records import Status
from mtm_tui.commands.base import HOME, app, console, err_console, foreground, open_store


def resume_command(sweep_id: str, address: str | None) -> str:
    """How to go on with an interrupted sweep: on the cluster it ran on (without --address, a resume would
    start a local Ray and train the rest on this machine)."""
    return f"mtm tune --resume {sweep_id}" + (f" --address {address}" if address else "")


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
    from mtm_engine.sweep_spec import load_sweep, planned_trials

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
    driving = contextlib.ExitStack()

    def started(sweep_id: str, shown: dict[str, Any]) -> None:   # once Ray is up; a resumed sweep shows its own
        driving.enter_context(store.sweep_driver(sweep_id))   # one driver a sweep: a second --resume is refused
        planned.update(shown)
        if not json_:
            console.print(f"sweep {sweep_id}: {planned_trials(shown)} trials of at most {shown['max_epochs']} epochs, "
                          f"{shown['search']} search, scheduler {shown['scheduler']}, maximising "
                          f"{shown['maximising']}; `mtm list --sweep {sweep_id}` shows the trials", markup=False)

    with driving:
        summary = run_sweep(spec, settings, store.home, sweep_id=resume, resume=bool(resume), address=address,
                            dashboard=dashboard, say=say, started=started)
    ended = sum(summary["status"].get(k, 0) for k in (Status.FINISHED, Status.FAILED, Status.DIVERGED))
    if planned and ended < planned_trials(planned):   # Ctrl-C: Tune stopped before every trial had ended
        err_console.print(f"interrupted; resume with `{resume_command(summary['sweep_id'], address)}`", markup=False)
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
    console.print(f"best trial {best['run_id']}: {values}\n  {summary['metric']} {best['score']:.4f} at epoch "
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
    run_id = create_run(store, spec, status=Status.RUNNING, extra={"refit_of": summary["sweep_id"]})
    if not as_json:
        console.print(f"refit {run_id}: the best config on train+validation for {spec.train.epochs} epochs")
    result = foreground(store, run_id, spec, resume=False, as_json=as_json)
    final = result.summary["final"]
    if not as_json and result.records:
        console.print("refit test accuracy: " + "  ".join(f"{c} {v['test_acc']:.4f}" for c, v in final.items()))
    return {"run_id": run_id, "status": result.status, "test_accuracy": {c: v["test_acc"] for c, v in final.items()}}
