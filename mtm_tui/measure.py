"""`mtm eval --certainty` and `mtm eval --fewshot`: measure a finished run from its kept weights,
keep the result in the run's folder (records.MEASUREMENTS) and print it as a table or JSON."""

from __future__ import annotations

import json
from typing import Any

from rich.table import Table

from mtm_engine.errors import MtmError
from mtm_engine.records import CERTAINTY_MEASURES
from mtm_engine.store import StoreError
from mtm_tui.progress import make_console

console = make_console()

# A kept few-shot measurement whose settings match these keeps its other K beside the new ones.
FEWSHOT_SETTINGS = ("checkpoint", "epoch", "held_out", "episodes", "queries", "metric")


def certainty(store, run_id: str, checkpoint: str, spec, ood: str | None, as_json: bool) -> None:
    from mtm_engine.analysis import certainty as measure

    result = {"checkpoint": checkpoint, **measure(spec, store.run_dir(run_id), checkpoint, ood)}
    kept = store.write_measurement(run_id, "certainty", result)   # for mtm export, mtm plot and the TUI's tab
    if as_json:
        print(json.dumps({"run_id": run_id, **result}))
        return
    table = Table(title=f"run {run_id[:8]}: certainty of the {result['classifier']} classifier on the test split, "
                        f"{checkpoint} checkpoint (epoch {result['epoch']}); AUROC: right against wrong"
                        + (f"; OOD: against {ood}'s test split" if ood else ""), box=None, header_style="bold")
    table.add_column("score", no_wrap=True)
    shown = [k for k in CERTAINTY_MEASURES if k in next(iter(result["scores"].values()))]
    for k in shown:
        table.add_column(CERTAINTY_MEASURES[k], justify="right")
    for name, row in result["scores"].items():
        table.add_row(name, *(f"{row[k]:.4f}" for k in shown))
    console.print(table)
    console.print(f"accuracy {result['accuracy']:.4f} · temperature {result['temperature']:.4g} (fitted on validation) "
                  f"· ECE {result['ece']:.4f}")
    console.print(f"kept in {kept}")


def fewshot(store, run_id: str, checkpoint: str, spec, shots: list[int], episodes: int, as_json: bool,
            force: bool = False) -> None:
    """A measurement with other settings than the kept one replaces it only with `force` (a 5-episode try
    silently replaced a 600-episode result); one with the same settings adds its K to the kept ones."""
    from mtm_engine.analysis import fewshot as measure

    try:
        earlier = store.measurement(run_id, "fewshot")
    except StoreError:   # a corrupt earlier measurement: this one replaces it
        earlier = None

    def refuse_other_settings(result: dict[str, Any]) -> None:
        if not earlier or force:
            return
        differ = [k for k in FEWSHOT_SETTINGS if k in result and earlier.get(k) != result[k]]
        if differ:
            kept = ", ".join(f"{k} {earlier.get(k)}" for k in differ)
            raise MtmError(f"run {run_id[:8]} keeps a few-shot measurement with {kept}; measure with the same "
                           f"settings to add K to it, or add --force to replace it")

    refuse_other_settings({"checkpoint": checkpoint, "episodes": episodes})   # before the long computation
    result = {"checkpoint": checkpoint, **measure(spec, store.run_dir(run_id), shots, checkpoint, episodes)}
    refuse_other_settings(result)
    if earlier and all(earlier.get(k) == result[k] for k in FEWSHOT_SETTINGS):
        for name, by_k in earlier["features"].items():
            merged = {**by_k, **result["features"].get(name, {})}
            result["features"][name] = dict(sorted(merged.items(), key=lambda item: int(item[0])))
    kept = store.write_measurement(run_id, "fewshot", result)   # for mtm export
    if as_json:
        print(json.dumps({"run_id": run_id, **result}))
        return
    console.print(fewshot_table(run_id, result))
    console.print(f"kept in {kept}")


def fewshot_table(run_id: str, result: dict[str, Any]) -> Table:
    table = Table(title=f"run {run_id[:8]}: {result['ways']}-way few-shot on held-out classes {result['held_out']}, "
                        f"{result['checkpoint']} checkpoint (epoch {result['epoch']}); {result['episodes']} episodes, "
                        f"{result['queries']} queries a class, nearest {result['metric']} centre",
                  box=None, header_style="bold")
    for column in ("features", "K", "accuracy ± 95% CI", "generalised: old", "generalised: new"):
        table.add_column(column, justify="left" if column == "features" else "right")
    for features, by_k in result["features"].items():
        for k, row in by_k.items():
            table.add_row(features, k, f"{100 * row['accuracy']:.2f} ± {100 * row['ci95']:.2f}",
                          f"{100 * row['generalised_old']:.2f}", f"{100 * row['generalised_new']:.2f}")
    return table
