"""How runs read in words and tables (rich markup; no Textual import): a run's index row as `mtm list` and the
Runs screen show it, its status, epoch in flight and age, and the compact values and short key names the
Compare, Sweep and Queue screens use. The paper's short names (F-MNIST, RN18, PP) keep a row within 80 columns."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from rich.markup import escape

from mtm_engine.catalogue import BACKBONES, DATASETS, loss_code, title_of
from mtm_engine.records import LIVE, RESUMABLE, Status

STATUS_STYLES = {Status.QUEUED: "cyan", Status.RUNNING: "bold yellow", Status.FINISHED: "green",
                 Status.FAILED: "bold red", Status.DIVERGED: "magenta", Status.INTERRUPTED: "dim"}
COLUMNS = ("id", "name", "status", "dataset", "net", "loss", "d", "epoch", "val%", "test%", "age", "sweep")
WIDE_COLUMNS = ("seed", "lr", "time", "now", "tags")   # where the terminal is wide enough (>= 160 columns)
PROGRESS_STALE_S = 120.0   # a progress line older than this is not shown (the run may be evaluating)


def age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{max(0, int(seconds))}s"


# Said beside a run whose reported epoch the test split chose (eval.selection = "max-test")
TEST_SELECTED = "* its epoch chosen on test (eval.selection = max-test): the authors' protocol, optimistic"


def test_selected(row: dict[str, Any]) -> str:
    """"*" after the test accuracy of a run whose epoch the test split chose (see TEST_SELECTED), else ""."""
    return "*" if row.get("selection") == "max-test" else ""


def pct(value: float | None, decimals: int = 2) -> str:
    return "-" if value is None else f"{100 * value:.{decimals}f}"


def gpu_memory(record: dict[str, Any]) -> str:
    """Peak GPU memory of an epoch, allocated/reserved in GB ("-" for runs off the GPU)."""
    if "gpu_mem_allocated_gb" not in record:
        return "-"
    return f"{record['gpu_mem_allocated_gb']:.1f}/{record['gpu_mem_reserved_gb']:.1f}"


def tags_and_note(row: dict[str, Any]) -> str:
    """A run's tags and note as one plain line ("tags: a, b · note: lr too high?"), or "" where it has none."""
    parts = [f"tags: {', '.join(row['tags'])}"] if row.get("tags") else []
    return " · ".join(parts + ([f"note: {row['note']}"] if row.get("note") else []))


def duration(row: dict[str, Any], now: float) -> str:
    """How long the run has trained since it (last) started: to its end, or now while it runs. A run
    found dead has no end recorded: its last write (`updated`) stands in."""
    if not row.get("started"):
        return "-"
    live = row["status"] in LIVE and not row.get("dead")
    end = now if live else row.get("ended") or row.get("updated") or now
    return age(end - row["started"])


def stop_question(row: dict[str, Any]) -> str:
    """What stopping a live run does, as the TUI asks it: a queued run has no epoch to keep."""
    run = f"{row['id'][:8]} ({row.get('name', '')})"
    if row.get("status") == Status.QUEUED:
        return f"Take run {run} out of the queue? It has not started; R resumes it later."
    return f"Stop run {run}? Its last whole epoch stays checkpointed."


def progress(row: dict[str, Any], now: float, gpu: bool = True) -> str:
    """The epoch in flight of a running run ("batch 412/938 · 2,310 img/s · ETA 1m12s · 1.2 GB"), or ""."""
    p = row.get("progress")
    if row["status"] != Status.RUNNING or not p or p["epoch"] <= row["epoch"] or now - p["at"] > PROGRESS_STALE_S:
        return ""
    if p["batch"] >= p["batches"]:   # every batch trained: the epoch's evaluation is running, no ETA to count down
        return f"batch {p['batch']}/{p['batches']} · evaluating"
    text = f"batch {p['batch']}/{p['batches']} · {p['images_per_s']:,.0f} img/s · ETA {age(p['eta_s'])}"
    return text + (f" · {p['gpu_mem_gb']:.1f} GB" if gpu and p.get("gpu_mem_gb") is not None else "")


def cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def detail(row: dict[str, Any], now: float) -> str:
    """The line under the Runs table for the run under the cursor: the epoch in flight of a running run, why a
    failed, diverged or interrupted run ended, or ""."""
    if row["status"] == Status.RUNNING:
        line = progress(row, now)
        return f"{row['id'][:8]} epoch {row['epoch'] + 1}/{row['epochs']}: {line}" if line else ""
    if row["status"] in RESUMABLE and row.get("message"):
        return f"{row['id'][:8]} {row['status']}: {row['message']}"
    return ""


def wide_cells(row: dict[str, Any], now: float) -> tuple[str, ...]:
    """One string per WIDE_COLUMNS entry. `now`: the epoch in flight, or why a failed or diverged run ended."""
    lr = row.get("lr")
    p = row.get("progress")
    now_cell = f"{100 * p['batch'] / p['batches']:.0f}% ETA {age(p['eta_s'])}" if progress(row, now) else \
        f"[{STATUS_STYLES[row['status']]}]{escape(cut(row['message'], 48))}[/]" \
        if row["status"] in (Status.FAILED, Status.DIVERGED) and row.get("message") else ""
    return (str(row.get("seed", "-")), f"{lr:.2g}" if isinstance(lr, (int, float)) else "-", duration(row, now),
            now_cell, " ".join(row.get("tags") or []))


def status(value: str, place: int | None = None) -> str:
    """The status in colour; a queued run's with its place in the queue ("queued #2")."""
    text = f"{value} #{place}" if value == Status.QUEUED and place else value
    return f"[{STATUS_STYLES.get(value, '')}]{text}[/]"


def row_cells(row: dict[str, Any], now: float) -> tuple[str, ...]:
    """One string per COLUMNS entry."""
    return (row["id"][:8], row["name"], status(row["status"], row.get("queue_place")), title_of(DATASETS, row["dataset"]),
            title_of(BACKBONES, row["backbone"]), loss_code(row["loss"]),
            str(row.get("dim") or "-"), f"{row['epoch']}/{row['epochs']}", pct(row.get("best_val")),
            pct(row.get("test_acc")) + test_selected(row), age(now - row["created"]), row.get("sweep") or "")


def searchable(row: dict[str, Any]) -> str:
    """What the filter matches: the row's fields as stored (fashion-mnist, push_pull) and as shown
    (F-MNIST, PP), its tags and note. Every word typed must occur."""
    shown = (row.get("id", ""), row.get("name", ""), row.get("status", ""), title_of(DATASETS, row["dataset"]),
             title_of(BACKBONES, row["backbone"]), loss_code(row["loss"]))
    stored = (row["dataset"], row["backbone"], row["loss"], row.get("sweep") or "", row.get("note") or "",
              *(row.get("tags") or ()))
    return " ".join(map(str, shown + stored)).lower()


def mean_std(values: list[float]) -> str:
    """Percent, mean ± std over seeds (std with n - 1, as `mtm export`)."""
    if not values:
        return "-"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return pct(mean)
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{100 * mean:.2f}±{100 * std:.2f}"


def cells(row: dict[str, Any], now: float, marked: bool) -> tuple:
    """The Runs screen's cells: the mark, the COLUMNS, then the WIDE_COLUMNS."""
    return ("●" if marked else " ", *row_cells(row, now), *wide_cells(row, now))


def group_cells(members: list[dict[str, Any]], now: float) -> tuple[str, ...]:
    """A configuration's seeds as one row: its run count, statuses, and val%/test% as mean ± std."""
    first = members[0]
    counts = Counter(r["status"] for r in members)
    shown = list(row_cells(first, now))
    shown[COLUMNS.index("id")] = f"×{len(members)}"
    shown[COLUMNS.index("status")] = " ".join(f"{n} {s}" for s, n in counts.items())
    shown[COLUMNS.index("epoch")] = f"{min(r['epoch'] for r in members)}/{first['epochs']}"
    for column, field in (("val%", "best_val"), ("test%", "test_acc")):
        shown[COLUMNS.index(column)] = mean_std([r[field] for r in members if r.get(field) is not None])
    shown[COLUMNS.index("test%")] += test_selected(first)
    shown[COLUMNS.index("age")] = age(now - max(r["created"] for r in members))
    seeds = ",".join(str(r.get("seed", "?")) for r in members)
    return (*shown, seeds, *wide_cells(first, now)[1:3], "", "")


def compact(value: Any) -> str:
    """A drawn value in a few characters: 3.2e-04, 0.95, 1234, adam."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    size = abs(value)
    if size < 1e-2 or size >= 1e4:
        return f"{value:.1e}"
    return f"{value:.0f}" if size >= 100 else f"{value:.3g}"


def short_names(params: list[str]) -> dict[str, str]:
    """"train.lr" -> "lr" where the key alone names one parameter of the sweep, else the full name;
    a section's name ("loss.name") goes by the section ("loss")."""
    tails = [section if key == "name" else key for section, _, key in (p.rpartition(".") for p in params)]
    return {p: t if tails.count(t) == 1 else p for p, t in zip(params, tails)}
