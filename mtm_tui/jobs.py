"""Start detached run processes. No Textual import: the CLI and the TUI both use it.

A detached run is a `mtm worker RUN` process in a new session (so it survives the end of the
terminal or SSH session), writing its progress to the run's log file.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from mtm_engine.store import LOG, Store


def launch(store: Store, run_id: str, *, resume: bool = False) -> Path:
    """Start the run in the background; returns its log file."""
    log = store.run_dir(run_id) / LOG
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "mtm_tui.cli", "worker", run_id, "--home", str(store.home.resolve())]
    if resume:
        command.append("--resume")
    with open(log, "ab") as fh:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                   start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    store.update(run_id, pid=process.pid, host=socket.gethostname())
    return log
