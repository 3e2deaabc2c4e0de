"""Detached runs: a queue in the store, drained by a pool of device slots. No Textual import and
no torch: the CLI and the TUI both use these.

- `enqueue` marks runs `queued` (oldest first) and makes sure a pool process is draining the
  queue of this home. The pool is a small `mtm pool` process in its own session, so it survives
  logout and the TUI quitting; it exits when the queue is empty and its runs have ended.
- The pool gives each free slot the head of the queue: a `mtm worker RUN` process, pinned to the
  slot's device with CUDA_VISIBLE_DEVICES (CPU slots see no GPU), in its own session.
- A slot is busy while a process holds the flock of `HOME/queue/slot-N.lock`. The pool takes that
  lock and hands it to the worker it starts, so the kernel frees the slot the moment the worker
  ends, however it ends (kill -9 included), and a restarted pool never double-books a slot whose
  worker outlived the old pool.

Why not Ray's resource scheduling: it would keep a Ray cluster (GCS, raylet, open ports) alive
per home for as long as runs are queued, and every run would die with it; a flock per slot and
the store's own compare-and-set are all a single machine needs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from mtm_engine.atomic import atomic_write
from mtm_engine.errors import MtmError
from mtm_engine.processes import owner, same_process_alive
from mtm_engine.provenance import cuda_visible_devices
from mtm_engine.records import GPU_SHARE_ENV, LIVE, RESUMABLE, Status
from mtm_engine.runner import STOPPED_BEFORE_START
from mtm_engine.store import LOG, Store, StoreError, writing

QUEUE_DIR = "queue"
POOL_FILE = "pool.json"   # the pool draining the queue: its owner() fields and when it started
POLL_S = 1.0   # how often the pool looks at the queue


# --- slots --------------------------------------------------------------------------------------

def visible_gpus() -> list[str]:
    """The GPUs runs may be pinned to, as CUDA_VISIBLE_DEVICES entries, found without torch:
    CUDA_VISIBLE_DEVICES where it is set, else the indices nvidia-smi lists."""
    visible = cuda_visible_devices()
    if visible is not None:
        return visible
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return out.stdout.split() if out.returncode == 0 else []


def plan_slots(gpus: str | None = None, per_gpu: int | None = None, slots: int | None = None) -> list[str]:
    """The device of each slot: "gpu:<id>" (a CUDA_VISIBLE_DEVICES entry) or "cpu".

    gpus: "auto" (every visible GPU) or "0,1"; per_gpu: slots on each of those GPUs (1);
    slots: that many CPU slots instead. Nothing given: every visible GPU once, else one CPU slot.
    """
    if slots is not None and (gpus is not None or per_gpu is not None):
        raise MtmError("--slots gives CPU slots; it cannot be combined with --gpus or --per-gpu")
    if slots is not None:
        if slots < 1:
            raise MtmError(f"--slots {slots}: give at least 1 CPU slot")
        return ["cpu"] * slots
    per_gpu_given, per_gpu = per_gpu is not None, 1 if per_gpu is None else per_gpu
    if per_gpu < 1:
        raise MtmError(f"--per-gpu {per_gpu}: give at least 1 slot per GPU")
    visible = visible_gpus()
    if gpus in (None, "auto"):
        if not visible and (gpus == "auto" or per_gpu_given):
            raise MtmError(f"{'--gpus auto' if gpus else f'--per-gpu {per_gpu}'}: no GPU is visible here; use --slots N "
                           f"for N CPU slots")
        chosen = visible
    else:
        chosen = [g.strip() for g in gpus.split(",") if g.strip()]
        missing = [g for g in chosen if g not in visible]
        if missing or not chosen:
            raise MtmError(f"--gpus {gpus}: no GPU {', '.join(missing) or '(none given)'} here; visible GPUs: "
                           f"{', '.join(visible) or 'none'} (use --slots N for CPU slots)")
    return [f"gpu:{g}" for g in chosen for _ in range(per_gpu)] or ["cpu"]


def _queue_dir(store: Store) -> Path:
    return store.home / QUEUE_DIR


def configure_slots(store: Store, devices: list[str]) -> None:
    """Set this home's slots; a running pool picks them up at its next look at the queue."""
    _write_json(_queue_dir(store) / "slots.json", {"slots": devices})


def configured_slots(store: Store) -> list[str]:
    """This home's slots. The first enqueue sets the default plan, where --gpus/--slots set none."""
    slots = read_slots(store)
    if slots is None:
        configure_slots(store, plan_slots())
        return configured_slots(store)
    return slots


def read_slots(store: Store) -> list[str] | None:
    """This home's slots as set, or None where none are set yet (nothing is written here)."""
    path = _queue_dir(store) / "slots.json"
    try:
        slots = json.loads(path.read_text())["slots"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):   # a folder planted there, not JSON, no "slots"
        slots = None
    if not isinstance(slots, list) or not all(isinstance(d, str) and re.fullmatch(r"cpu|gpu:\d+", d) for d in slots):
        raise MtmError(f"{path} is not a slot list (\"cpu\" or \"gpu:N\" each); delete it, or set the slots again "
                       f"with --gpus or --slots")
    return slots or ["cpu"]


def slots_from_words(words: str) -> list[str]:
    """Slots as `mtm run -d` takes them, typed in one line: "--slots 2", "--gpus auto --per-gpu 2", "--gpus 0,1"."""
    options = {"--slots": None, "--gpus": None, "--per-gpu": None}
    parts = words.split()
    if len(parts) % 2 or any(p not in options for p in parts[::2]):
        raise MtmError(f"{words!r}: give --slots N (CPU slots), or --gpus auto|0,1 with --per-gpu N if more than one "
                       f"run shares a GPU")
    given = dict(zip(parts[::2], parts[1::2]))
    try:
        slots = int(given["--slots"]) if "--slots" in given else None
        per_gpu = int(given["--per-gpu"]) if "--per-gpu" in given else None
    except ValueError:
        raise MtmError(f"{words!r}: --slots and --per-gpu take whole numbers") from None
    return plan_slots(given.get("--gpus"), per_gpu, slots)


@contextlib.contextmanager
def _try_lock(path: Path) -> Iterator[Any]:
    """Yield the open, exclusively flocked file, or None if another process holds it."""
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        yield None
        return
    try:
        yield fh
    finally:
        fh.close()   # closing our descriptor releases the lock unless a worker inherited it


# --- the queue ----------------------------------------------------------------------------------

def queued(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Queued runs in the order the pool starts them: first queued, first started."""
    return sorted((r for r in rows if r["status"] == Status.QUEUED), key=lambda r: r.get("queued", r["created"]))


def with_queue_places(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows, each queued one with its `queue_place` (1 starts next)."""
    places = {r["id"]: place for place, r in enumerate(queued(rows), start=1)}
    return [{**r, "queue_place": places[r["id"]]} if r["id"] in places else r for r in rows]


@dataclass(frozen=True)
class GpuStat:
    """One GPU as nvidia-smi reports it now."""
    index: str
    name: str
    memory_used_gb: float
    memory_total_gb: float
    utilisation_pct: float


@dataclass(frozen=True)
class QueueState:
    """What the queue panel shows: the pool, each slot and its run, the queue in order, the GPUs."""
    pool: dict[str, Any] | None              # POOL_FILE's fields, where a pool of this home has run
    pool_alive: bool | None                  # None: on another host, or not to be told from here
    slots: list[str] | None                  # None: not set yet (the first queued run sets them)
    running: dict[int, dict[str, Any]]       # slot index -> the run in it
    waiting: list[dict[str, Any]]            # queued runs, the next to start first
    gpus: dict[str, GpuStat]                 # by CUDA_VISIBLE_DEVICES entry (nvidia-smi's index)


def queue_state(store: Store, rows: list[dict[str, Any]], gpus: dict[str, GpuStat] | None = None) -> QueueState:
    pool = None
    with contextlib.suppress(OSError, ValueError):
        pool = json.loads((_queue_dir(store) / POOL_FILE).read_text())
    pool = pool if isinstance(pool, dict) else None
    running = {r["slot"]: r for r in rows if r["status"] == Status.RUNNING and isinstance(r.get("slot"), int)
               and not r.get("sweep")}
    return QueueState(pool, same_process_alive(pool) if pool else False, read_slots(store), running, queued(rows),
                      gpus or {})


def parse_gpu_stats(text: str) -> dict[str, GpuStat]:
    """nvidia-smi --query-gpu=index,name,memory.used,memory.total,utilization.gpu --format=csv,noheader,nounits
    (memory in MiB); lines it cannot read (a "[N/A]" utilisation) are left out."""
    stats = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        with contextlib.suppress(ValueError):
            index, name, used, total, util = parts
            stats[index] = GpuStat(index, name, float(used) / 1024, float(total) / 1024, float(util))
    return stats


def gpu_stats() -> dict[str, GpuStat]:
    """Every GPU's memory and utilisation now, from nvidia-smi (none where it is missing or fails)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,name,memory.used,memory.total,utilization.gpu",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return parse_gpu_stats(out.stdout) if out.returncode == 0 else {}


def _spawn(command: list[str], log: Path, env: dict[str, str] | None = None,
           pass_fds: tuple[int, ...] = ()) -> subprocess.Popen:
    """A process in its own session (it survives logout), its output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True, pass_fds=pass_fds,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def _mtm(*args: str) -> list[str]:
    # -P: never let the current folder shadow the installed package.
    return [sys.executable, "-P", "-m", "mtm_tui.cli", *args]


def enqueue(store: Store, run_ids: str | list[str]) -> list[Path]:
    """Start draining new queued runs (create_run made them `queued`); returns their log files."""
    run_ids = [run_ids] if isinstance(run_ids, str) else run_ids
    configured_slots(store)   # the pool's slots are known before it starts
    ensure_pool(store)
    return [store.run_dir(run_id) / LOG for run_id in run_ids]


def ensure_pool(store: Store) -> None:
    """Start a pool for this home unless one is running. The queue is written before this check and
    the pool looks at the queue again after it lets go of its lock, so no queued run is missed."""
    with _try_lock(_queue_dir(store) / "pool.lock") as fh:
        if fh is None:
            return
    _spawn(_mtm("pool", "--home", str(store.home.resolve())), _queue_dir(store) / "pool.log")


def tend(store: Store, rows: list[dict[str, Any]]) -> None:
    """What every reader of the runs does first, where the home is writable (a read-only one still reads):
    record the runs whose process died as interrupted, and restart a killed pool where runs wait."""
    with contextlib.suppress(MtmError):
        store.reap(rows)
        restart_pool_if_queued(store, rows)


def restart_pool_if_queued(store: Store, rows: list[dict[str, Any]] | None = None) -> None:
    """Start a pool where runs wait in the queue and none drains it (killed with kill -9, or by a logout's
    SIGHUP): what every command that reads the queue, and every worker at its end, calls."""
    if any(r["status"] == Status.QUEUED for r in (store.rows() if rows is None else rows)):
        ensure_pool(store)


def drain(store: Store) -> None:
    """The pool: start the head of the queue in every free slot until the queue is empty. Only one
    pool runs per home (it holds pool.lock); a second one returns at once. Queued runs whose run.json is
    missing or damaged are skipped, once, for the pool's whole life: they never keep it alive."""
    unreadable: set[str] = set()   # queued in the index, but the run's own file is gone or damaged
    record = _queue_dir(store) / POOL_FILE
    started = time.time()
    while True:
        with _try_lock(_queue_dir(store) / "pool.lock") as pool:
            if pool is None:
                return
            with contextlib.suppress(MtmError):   # who drains the queue, for the panel: never a reason to stop
                _write_json(record, {**owner(), "started": started})
            try:
                _drain_while_queued(store, unreadable)
            finally:
                record.unlink(missing_ok=True)
        # Let go, then look once more: a run queued while we let go has found no pool to start.
        if not [r for r in queued(store.rows()) if r["id"] not in unreadable]:
            return


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(data))


def _drain_while_queued(store: Store, unreadable: set[str]) -> None:
    children: list[subprocess.Popen] = []
    while True:
        children = [c for c in children if c.poll() is None]   # reap ended workers
        waiting = [r for r in queued(store.rows()) if r["id"] not in unreadable]
        if not waiting and not children:
            return
        slots = configured_slots(store)
        for index, device in enumerate(slots):
            if not waiting:
                break
            with _try_lock(_queue_dir(store) / f"slot-{index}.lock") as slot:
                if slot is None:
                    continue
                row = waiting.pop(0)
                if store.transition(row["id"], Status.QUEUED, status=Status.RUNNING, slot=index, slot_device=device, pid=None,
                                    host=socket.gethostname(), message=f"starting in slot {index} ({device})"):
                    children.append(_start_worker(store, row["id"], device, slot.fileno(), slots))
                elif not _readable(store, row["id"]):
                    unreadable.add(row["id"])
                    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} skipped run {row['id']}: its run.json is missing "
                          f"or damaged", flush=True)
        time.sleep(POLL_S)


def _readable(store: Store, run_id: str) -> bool:
    try:
        store.row(run_id)
    except StoreError:
        return False
    return True


def worker_environment(device: str, slots: list[str]) -> dict[str, str]:
    """What a slot's worker process runs under.

    - A GPU slot's run sees only its GPU, numbered as nvidia-smi numbers them (PCI order; CUDA's own
      order puts the fastest first, so `--gpus 1` could otherwise be another card); CPU slots see none.
    - The cores are shared between all the slots: each worker's torch gets its share of threads (a
      GPU run's host-side work needs few, and 8 runs on one GPU would otherwise start 8 pools over
      every core).
    - Runs that share a GPU each get 1/n of its memory (the run that allocates last would otherwise fail
      its neighbour), and PyTorch's expandable segments, so fragmentation does not eat into that share."""
    env = {"CUDA_VISIBLE_DEVICES": device.removeprefix("gpu:") if device != "cpu" else "",
           "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
           "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // len(slots)))}
    if device != "cpu":
        env[GPU_SHARE_ENV] = f"{1 / slots.count(device):.6g}"
        env["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"
    return env


def _start_worker(store: Store, run_id: str, device: str, lock_fd: int, slots: list[str]) -> subprocess.Popen:
    """A worker for one claimed run, holding the slot's lock (an inherited descriptor)."""
    env = worker_environment(device, slots)
    process = _spawn(_mtm("worker", run_id, "--home", str(store.home.resolve())), store.run_dir(run_id) / LOG,
                     env=env, pass_fds=(lock_fd,))
    store.update(run_id, **owner(process.pid))
    return process


# --- actions on one run ---------------------------------------------------------------------------

def launch_sweep(store: Store, config: Path, args: list[str] = ()) -> Path:
    """Start `mtm tune CONFIG` in the background; returns its log file."""
    log = store.home / "sweeps" / f"tune-{time.strftime('%Y%m%d-%H%M%S')}.log"
    _spawn(_mtm("tune", str(config), "--home", str(store.home.resolve()), *args), log)
    return log


def stop(store: Store, run_id: str) -> str:
    """Take a queued run out of the queue, record a run whose process is gone as interrupted, or
    ask a running one to stop after its current batch (its last whole epoch stays checkpointed).
    Returns what it did, in words."""
    if store.transition(run_id, Status.QUEUED, status=Status.INTERRUPTED, message=STOPPED_BEFORE_START):
        return "taken out of the queue"
    if store.reap([store.row(run_id)]):
        return "its process had ended already; recorded as interrupted"
    row = store.row(run_id)
    if row["status"] not in LIVE:
        raise MtmError(f"run {run_id} is not running (status {row['status']}); nothing to stop")
    if row.get("sweep"):   # its process is the sweep's driver: a trial stops with its sweep
        raise MtmError(f"run {run_id[:8]} is a trial of sweep {row['sweep']}; Ctrl-C its `mtm tune` to stop the "
                       f"sweep, and `mtm tune --resume {row['sweep']}` continues it")
    store.request_stop(run_id)
    return "stop requested"


def claim_for_resume(store: Store, run_id: str, **fields: Any) -> None:
    """Atomically make a stopped run this caller's (`fields`: its new status and owner), so that two
    resumes of one run never both train it; the loser gets one line saying who has it. A sweep's
    trial is resumed by its sweep, not on its own."""
    sweep = store.meta(run_id).get("sweep")
    if sweep:
        raise MtmError(f"run {run_id[:8]} is a trial of sweep {sweep}; `mtm tune --resume {sweep}` continues it "
                       f"within its sweep")
    if not store.transition(run_id, RESUMABLE, message="", **fields):
        row = store.row(run_id)
        if row["status"] == Status.RUNNING:
            raise MtmError(f"run {run_id} is running (pid {row.get('pid') or '?'} on {row.get('host')}); "
                           f"`mtm stop {run_id}` stops it")
        if row["status"] == Status.QUEUED:
            raise MtmError(f"run {run_id} is queued already; `mtm stop {run_id}` takes it out of the queue")
        raise MtmError(f"run {run_id} has finished all its epochs; nothing to resume")
    store.clear_stop(run_id)


def resume_detached(store: Store, run_id: str) -> Path:
    claim_for_resume(store, run_id, status=Status.QUEUED, queued=time.time(), pid=None)
    return enqueue(store, run_id)[0]


def delete(store: Store, run_id: str) -> None:
    row = store.row(run_id)
    if row["status"] in LIVE:
        raise MtmError(f"run {run_id} is {row['status']}; stop it first with `mtm stop {run_id}`")
    store.delete(run_id)
