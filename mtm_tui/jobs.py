"""Start, stop, resume and delete runs (and start sweeps) as detached processes. No Textual
import: the CLI and the TUI both use these.

A detached run is a `mtm worker RUN` process in a new session (so it survives the end of the
terminal or SSH session), writing its progress to the run's log file.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from mtm_engine.errors import MtmError
from mtm_engine.store import LIVE, LOG, Store


def _spawn(command: list[str], log: Path) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                   start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return process.pid


def launch(store: Store, run_ids: str | list[str], *, resume: bool = False) -> list[Path]:
    """Start stored runs in one background process, one after another; returns their logs. The
    process's own output (a crash, say) goes to the first run's log."""
    run_ids = [run_ids] if isinstance(run_ids, str) else run_ids
    logs = [store.run_dir(run_id) / LOG for run_id in run_ids]
    command = [sys.executable, "-m", "mtm_tui.cli", "worker", *run_ids, "--home", str(store.home.resolve())]
    pid = _spawn(command + (["--resume"] if resume else []), logs[0])
    for run_id in run_ids:
        store.update(run_id, pid=pid, host=socket.gethostname())
    return logs


def launch_sweep(store: Store, config: Path, args: list[str] = ()) -> Path:
    """Start `mtm tune CONFIG` in the background; returns its log file."""
    log = store.home / "sweeps" / f"tune-{time.strftime('%Y%m%d-%H%M%S')}.log"
    _spawn([sys.executable, "-m", "mtm_tui.cli", "tune", str(config), "--home", str(store.home.resolve()), *args], log)
    return log


def stop(store: Store, run_id: str) -> None:
    """Ask a live run to stop after its current batch (its last whole epoch stays checkpointed)."""
    row = store.row(run_id)
    if row["status"] not in LIVE:
        raise MtmError(f"run {run_id} is not running (status {row['status']}); nothing to stop")
    store.request_stop(run_id)


def check_resumable(store: Store, run_id: str) -> None:
    """Refuse a live or finished run; otherwise forget its old stop request, so it can run."""
    row = store.row(run_id)
    if row["status"] in LIVE:
        raise MtmError(f"run {run_id} is still {row['status']}; stop it first with `mtm stop {run_id}`")
    if row["status"] == "finished":
        raise MtmError(f"run {run_id} has finished all its epochs; nothing to resume")
    store.clear_stop(run_id)


def resume_detached(store: Store, run_id: str) -> Path:
    check_resumable(store, run_id)
    store.update(run_id, status="queued", message="")
    return launch(store, run_id, resume=True)[0]


def delete(store: Store, run_id: str) -> None:
    row = store.row(run_id)
    if row["status"] in LIVE:
        raise MtmError(f"run {run_id} is {row['status']}; stop it first with `mtm stop {run_id}`")
    store.delete(run_id)
