"""Epoch selection and run summaries from epoch records (plain dicts; no torch here).

A record holds `epoch` (1-based) and, per classifier `c`, `val_acc_<c>` and `test_acc_<c>`.
The honest protocol selects the epoch on the validation split; the paper's protocol (maximum
test accuracy over epochs) is kept only as a labelled, optimistic extra.
"""

from __future__ import annotations

from typing import Any, Iterable

SELECTIONS = ("val", "final", "max-test")


def classifiers_in(records: list[dict[str, Any]]) -> list[str]:
    """The classifiers that have accuracies in these records, in record order."""
    if not records:
        return []
    return [key[len("test_acc_"):] for key in records[0] if key.startswith("test_acc_")]


def select_epoch(records: list[dict[str, Any]], classifier: str, selection: str = "val") -> dict[str, Any] | None:
    """The record chosen for `classifier`: best validation accuracy (earliest on ties), the last
    epoch, or the best test accuracy (the paper's max-over-test, optimistic). A run without a
    validation split (a refit) has nothing to select on: "val" gives its last epoch."""
    rows = [r for r in records if f"test_acc_{classifier}" in r]
    if not rows:
        return None
    if selection == "final" or selection == "val" and f"val_acc_{classifier}" not in rows[-1]:
        return rows[-1]
    key = f"val_acc_{classifier}" if selection == "val" else f"test_acc_{classifier}"
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
                summary[selection][c] = {"epoch": row["epoch"], "val_acc": row.get(f"val_acc_{c}"),
                                         "test_acc": row[f"test_acc_{c}"]}
    return summary
