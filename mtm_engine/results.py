"""Epoch selection and run summaries from epoch records (plain dicts; no torch here).

A record holds `epoch` (1-based) and, per classifier `c`, `val_acc_<c>` and `test_acc_<c>`.
The honest protocol selects the epoch on the validation split; the paper's protocol (maximum
test accuracy over epochs) is kept only as a labelled, optimistic extra.
"""

from __future__ import annotations

from typing import Any, Iterable

from mtm_engine.records import acc_key, classifiers_in

SELECTIONS = ("val", "final", "max-test")


def select_epoch(records: list[dict[str, Any]], classifier: str, selection: str = "val") -> dict[str, Any] | None:
    """The record chosen for `classifier`: best validation accuracy (earliest on ties), the last
    epoch, or the best test accuracy (the paper's max-over-test, optimistic). A run without a
    validation split (a refit) has nothing to select on: "val" gives its last epoch."""
    rows = [r for r in records if acc_key("test", classifier) in r]
    if not rows:
        return None
    if selection == "final" or selection == "val" and acc_key("val", classifier) not in rows[-1]:
        return rows[-1]
    key = acc_key("val" if selection == "val" else "test", classifier)
    return max(rows, key=lambda r: (r[key], -r["epoch"]))


def summarise(records: list[dict[str, Any]], classifiers: Iterable[str] | None = None) -> dict[str, Any]:
    """{selection: {classifier: {epoch, val_acc, test_acc}}} for every selection rule."""
    classifiers = list(classifiers) if classifiers is not None else classifiers_in(records)
    summary: dict[str, Any] = {}
    for selection in SELECTIONS:
        summary[selection] = {}
        for c in classifiers:
            row = select_epoch(records, c, selection)
            if row is not None:
                summary[selection][c] = {"epoch": row["epoch"], "val_acc": row.get(acc_key("val", c)),
                                         "test_acc": row[acc_key("test", c)]}
    return summary
