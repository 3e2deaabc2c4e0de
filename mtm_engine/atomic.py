"""One way to write a file: whole or not at all.

Every file mtm writes (the store's JSON files, checkpoints, snapshots, measurements, progress lines,
slot lists, exported tables, saved experiments) goes through `atomic_write`: the bytes go to a
temporary file beside the target, are flushed and fsynced, the temporary file is renamed over the
target, and then the folder is fsynced, so that the rename itself survives a power cut. A process
killed at any point leaves the old file or the new one, never a mix; a write that fails removes its
temporary file and raises the OSError, which each caller turns into its one-line message.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import BinaryIO, Callable


def temporary_name(path: Path) -> Path:
    """A hidden sibling, unique to this process and thread: two writers of one file never share one."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def writer_of(tmp: Path) -> int | None:
    """The pid of the process that wrote a temporary file (`.NAME.PID.THREAD.tmp`, or `.NAME.PID.tmp` as
    versions before 0.1.1 named them), or None for a name of another shape."""
    parts = tmp.name.split(".")
    if len(parts) < 4 or parts[-1] != "tmp" or not parts[-2].isdigit():
        return None
    return int(parts[-3]) if parts[-3].isdigit() and len(parts) >= 5 else int(parts[-2])


def atomic_write(path: Path, content: bytes | str | Callable[[BinaryIO], None]) -> None:
    """Replace `path` with `content`: bytes, text (UTF-8), or a function that writes to the open binary file
    (torch.save, json.dump through a wrapper)."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        with open(tmp, "wb") as fh:
            if callable(content):
                content(fh)
            else:
                fh.write(content.encode() if isinstance(content, str) else content)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:   # a failed write (or an interrupt inside it) leaves no temporary file behind
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    sync_folder(path.parent)


def sync_folder(folder: Path) -> None:
    """fsync a folder, so that a rename into it is on disk; where the system cannot (some network file
    systems), the rename is still atomic, only not yet durable."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
