"""What a sweep checks before Ray starts anything, so that a sweep that cannot run stops with one line and leaves
nothing behind: the GPUs a trial asks for and whether trials fit the cluster's nodes, storage every node can write
(and that no one else can, before a resume unpickles it), the Ray token's permissions, where a sweep may resume.
No ray here: the callers hand it what Ray reports (tune.check_storage_shared, which runs a probe on every node,
stays beside Ray)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from mtm_engine.catalogue import BACKBONES
from mtm_engine.errors import MtmError


def gpus_for(gpus_per_trial: float | str, backbone: str, cluster_gpus: float) -> float:
    """tune.gpus_per_trial = "auto": none where the cluster has no GPU; a whole GPU for ResNet-50 and
    larger; a quarter for the small backbones (convnet, ResNet-18/34), so four trials share a GPU
    (they use a few GB each: bench/gpu.sh measures it). A number is taken as it is."""
    if gpus_per_trial != "auto":
        return float(gpus_per_trial)
    if cluster_gpus <= 0:
        return 0.0
    return 1.0 if backbone in BACKBONES and BACKBONES[backbone].large else 0.25


def check_resumable_here(sweep_id: str, saved: dict[str, Any], cluster_gpus: float) -> None:
    """A sweep whose trials trained on GPUs is not resumed where Ray has none: with "auto" the rest would train on
    CPUs without a word (a resume without --address starts a local Ray on the driver's machine)."""
    if saved.get("gpus_per_trial", 0) > 0 and cluster_gpus == 0:
        address = saved.get("address")
        raise MtmError(f"sweep {sweep_id} trained its trials on GPUs ({saved['gpus_per_trial']:g} a trial"
                       f"{', on the cluster at ' + address if address else ''}), and this Ray cluster has none; resume "
                       f"it where it ran: `mtm tune --resume {sweep_id}{' --address ' + address if address else ''}`")


def check_trials_fit(gpus: float, cpus: float, nodes: list[dict[str, Any]]) -> None:
    """Refuse a trial that no single live node can hold (`ray.nodes()`: [{"Alive", "Resources": {"CPU", "GPU"}}]): a
    trial runs on one node, so Ray would keep every trial pending, silently, even where the cluster's total fits."""
    for resource, asked, key in (("GPU", gpus, "gpus_per_trial"), ("CPU", cpus, "cpus_per_trial")):
        have = [node["Resources"].get(resource, 0.0) for node in nodes if node.get("Alive")]
        if asked > max(have, default=0.0):
            cure = "use \"auto\" (none on a machine without GPUs) or 0" if resource == "GPU" else "lower it"
            raise MtmError(f"tune.{key} = {asked:g}, but the largest node of the Ray cluster has {max(have, default=0):g} "
                           f"{resource}s ({sum(have):g} in all, on {len(have)} node{'s' * (len(have) != 1)}): a trial runs "
                           f"on one node, so none could start; {cure}")


def tighten_token(path: Path, say: Callable[[str], None] | None) -> None:
    """Ray's auth token file lets anyone who reads it run code on the cluster: where Ray left it readable by
    others, make it the owner's alone (0600), or say in one line that it could not."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return   # no token here (no token auth, or it comes from RAY_AUTH_TOKEN)
    if not mode & 0o077:
        return
    try:
        path.chmod(0o600)
        said = f"{path} was readable by others ({mode:o}): made it the owner's alone (600)"
    except OSError as exc:
        said = f"{path} is readable by others ({mode:o}) and could not be changed ({exc.strerror}); `chmod 600 {path}`"
    if say is not None:
        say(said)


def check_restorable(experiment: str, say: Callable[[str], None] | None) -> None:
    """The trust boundary of `mtm tune --resume`: Ray restores a sweep by unpickling its files (tuner.pkl, the
    searcher's state, the trials' state), and unpickling runs whatever code the file names. So a sweep is restored
    only from a folder that no one else can write: every folder and file of it owned by this user and writable by
    no group or other. A URI (s3://) cannot be checked from here: restored, with a line that says so."""
    if "://" in experiment:
        if say is not None:
            say(f"restoring from {experiment}: mtm cannot check who can write there, and Ray unpickles its files "
                f"(runs their code); restore only from storage that only you can write")
        return
    me = os.getuid()
    root = Path(experiment)
    for path in (root, *sorted(root.rglob("*"))):
        info = path.lstat()
        if info.st_uid != me or info.st_mode & 0o022 or path.is_symlink():   # a link leads where nothing is checked
            who = ("a symbolic link" if path.is_symlink() else f"owned by uid {info.st_uid}" if info.st_uid != me
                   else f"writable by others ({info.st_mode & 0o777:o})")
            raise MtmError(f"sweep storage {root} holds {path} {who}: --resume unpickles its files, which runs any code "
                           f"planted there, so it restores only what no one else can write; if you trust it, "
                           f"`chmod -R go-w {root}` (and chown it), else start the sweep again")


def storage_path(storage: str, home: Path, sweep_id: str) -> str:
    """Where Ray keeps this sweep (its state, the trials' checkpoints): tune.storage/<sweep id>, a
    folder every node can write or a URI of Ray's storage layer (s3://, gs://), else HOME/sweeps/<id>.
    A folder must be writable from the driver: checked now, before anything is started or saved, and
    without creating anything (the nearest folder that exists must be a writable folder)."""
    if "://" in storage:
        return f"{storage.rstrip('/')}/{sweep_id}"
    root = Path(storage).expanduser().resolve() if storage else (home / "sweeps").resolve()
    existing = next(p for p in (root, *root.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        what = "is not a folder" if not existing.is_dir() else "is not writable"
        raise MtmError(f"tune.storage {root}: {existing} {what}; give a folder that this machine and every node can "
                       f"write (shared storage), or a URI like s3://bucket/path")
    return str(root / sweep_id)
