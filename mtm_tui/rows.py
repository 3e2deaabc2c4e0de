"""How a run's index row reads in a table, shared by `mtm list` and the TUI's Runs screen (rich
markup; no Textual import). The paper's short names (F-MNIST, RN18, PP) keep it within 80 columns."""

from __future__ import annotations

from typing import Any

from mtm_engine.export import BACKBONE_SHORT, DATASET_TITLES, LOSS_CODES

STATUS_STYLES = {"queued": "cyan", "running": "bold yellow", "finished": "green", "failed": "bold red",
                 "diverged": "magenta", "interrupted": "dim"}
COLUMNS = ("id", "name", "status", "dataset", "backbone", "loss", "d", "epoch", "val%", "test%", "age", "sweep")


def age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{max(0, int(seconds))}s"


def pct(value: float | None, decimals: int = 2) -> str:
    return "-" if value is None else f"{100 * value:.{decimals}f}"


def status(value: str) -> str:
    return f"[{STATUS_STYLES.get(value, '')}]{value}[/]"


def row_cells(row: dict[str, Any], now: float) -> tuple[str, ...]:
    """One string per COLUMNS entry."""
    return (row["id"], row["name"], status(row["status"]), DATASET_TITLES.get(row["dataset"], row["dataset"]),
            BACKBONE_SHORT.get(row["backbone"], row["backbone"]), LOSS_CODES.get(row["loss"], row["loss"]),
            str(row.get("dim") or "-"), f"{row['epoch']}/{row['epochs']}", pct(row.get("best_val")),
            pct(row.get("test_acc")), age(now - row["created"]), row.get("sweep") or "")
