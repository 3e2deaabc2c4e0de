"""How a run's index row reads in a table, shared by `mtm list` and the TUI's Runs screen (rich
markup; no Textual import). The paper's short names (F-MNIST, RN18, PP) keep it within 80 columns."""

from __future__ import annotations

from typing import Any

from mtm_engine.export import BACKBONE_SHORT, DATASET_TITLES, LOSS_CODES

STATUS_STYLES = {"queued": "cyan", "running": "bold yellow", "finished": "green", "failed": "bold red",
                 "diverged": "magenta", "interrupted": "dim"}
COLUMNS = ("id", "name", "status", "dataset", "net", "loss", "d", "epoch", "val%", "test%", "age", "sweep")


def age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{max(0, int(seconds))}s"


def pct(value: float | None, decimals: int = 2) -> str:
    return "-" if value is None else f"{100 * value:.{decimals}f}"


def gpu_memory(record: dict[str, Any]) -> str:
    """Peak GPU memory of an epoch, allocated/reserved in GB ("-" for runs off the GPU)."""
    if "gpu_mem_allocated_gb" not in record:
        return "-"
    return f"{record['gpu_mem_allocated_gb']:.1f}/{record['gpu_mem_reserved_gb']:.1f}"


def status(value: str, place: int | None = None) -> str:
    """The status in colour; a queued run's with its place in the queue ("queued #2")."""
    text = f"{value} #{place}" if value == "queued" and place else value
    return f"[{STATUS_STYLES.get(value, '')}]{text}[/]"


def row_cells(row: dict[str, Any], now: float) -> tuple[str, ...]:
    """One string per COLUMNS entry."""
    return (row["id"][:8], row["name"], status(row["status"], row.get("queue_place")), DATASET_TITLES.get(row["dataset"], row["dataset"]),
            BACKBONE_SHORT.get(row["backbone"], row["backbone"]), LOSS_CODES.get(row["loss"], row["loss"]),
            str(row.get("dim") or "-"), f"{row['epoch']}/{row['epochs']}", pct(row.get("best_val")),
            pct(row.get("test_acc")), age(now - row["created"]), row.get("sweep") or "")
