"""Which process owns a run, and whether it still runs. A pid alone does not name a process (pids are
reused, most of all in containers): it is paired with the process's start time, and with its host, since
only a process on this host can be looked at."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Any


def process_start(pid: int) -> int | None:
    """When the process started (clock ticks since boot, /proc/PID/stat field 22), or None where
    that cannot be read. A pid with another start time is another process: pids are reused."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def owner(pid: int | None = None) -> dict[str, Any]:
    """The row fields that name the process owning a run: host, pid and its start time."""
    pid = os.getpid() if pid is None else pid
    return {"host": socket.gethostname(), "pid": pid, "pid_start": process_start(pid)}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not alive for our purposes.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def same_process_alive(fields: dict[str, Any]) -> bool | None:
    """Whether the process that `owner()` described (host, pid, pid_start) still runs: None where it is on
    another host (nothing here can tell) or its start time cannot be compared. No host: this one's."""
    if fields.get("host") not in (None, socket.gethostname()) or not fields.get("pid"):
        return None
    if not pid_alive(fields["pid"]):
        return False
    recorded, now = fields.get("pid_start"), process_start(fields["pid"])
    return None if recorded is None or now is None else now == recorded
