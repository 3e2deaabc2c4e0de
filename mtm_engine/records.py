"""The run's data model, shared by every reader (CLI, TUI, exporter); no torch.

A run's epoch record is a flat dict: accuracies under `acc_key(split, classifier)`, geometry under
"{split}_{measure}", plus train_loss, lr and timings. The spec is nested ("section" -> key -> value);
readers that compare runs flatten it to "section.key".
"""

from __future__ import annotations

from typing import Any, Iterable

SPLITS = ("val", "test")


def acc_key(split: str, classifier: str) -> str:
    """The record key of a classifier's accuracy on a split, e.g. val_acc_cos."""
    return f"{split}_acc_{classifier}"


def classifiers_in(records: Iterable[dict[str, Any]]) -> tuple[str, ...]:
    """The classifiers that records hold test accuracies of, in their order."""
    prefix = acc_key("test", "")
    for record in records:
        return tuple(k[len(prefix):] for k in record if k.startswith(prefix))
    return ()


def flatten_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """{"train": {"lr": 0.001}, "name": "x"} -> {"train.lr": 0.001} (sections only)."""
    return {f"{s}.{k}": v for s, values in spec.items() if isinstance(values, dict) for k, v in values.items()}


def differing_keys(specs: Iterable[dict[str, Any]]) -> list[str]:
    """The flattened spec keys whose values are not all equal across `specs`, sorted."""
    flat = [flatten_spec(spec) for spec in specs]
    keys = sorted({k for f in flat for k in f})
    return [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]
