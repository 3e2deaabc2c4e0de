"""What a run records of where it came from and where it ran, torch-free: the package versions, the mtm source's
git state (and its diff, where the tree was dirty), and its GPU as the machine numbers it."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from mtm_engine import DISTRIBUTION

SOURCE_PATCH = "source.patch"   # beside run.json when the source tree was dirty


def package_versions() -> dict[str, str]:
    """The versions a run records; mtm's under "mtm", whatever its distribution is called."""
    versions = {"python": platform.python_version()}
    for key, name in (("mtm", DISTRIBUTION), ("torch", "torch"), ("torchvision", "torchvision"), ("ray", "ray"),
                      ("tinydb", "tinydb")):
        try:
            versions[key] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def source_state() -> tuple[dict[str, Any], str]:
    """({git commit, dirty flag}, the diff of a dirty tree) of the mtm source, when it runs from a
    git checkout; an installed wheel has no git (its version is in `versions`)."""
    source = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout if out.returncode == 0 else None

    commit = (git("rev-parse", "HEAD") or "").strip() if (source / ".git").exists() else ""
    if not commit:   # an installed wheel: no git to ask (and no process spawned to find out)
        return {"git": None, "git_dirty": None}, ""
    diff = git("diff", "HEAD", "--", "mtm_engine", "mtm_tui") or ""
    return {"git": commit, "git_dirty": bool(diff)}, diff


def physical_device(device: str) -> str:
    """A torch device as the machine numbers it: a queued run is pinned to its slot's GPU with
    CUDA_VISIBLE_DEVICES, under which that GPU is torch's cuda:0."""
    if not device.startswith("cuda"):
        return device
    index = int(device.partition(":")[2] or 0)
    visible = cuda_visible_devices() or []
    return f"cuda:{visible[index]}" if index < len(visible) else f"cuda:{index}"


def cuda_visible_devices() -> list[str] | None:
    """The GPUs CUDA_VISIBLE_DEVICES lets this process see (ids or UUIDs), or None where it is unset."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None:
        return None
    return [d for d in (part.strip() for part in env.split(",")) if d and not d.startswith("-")]
