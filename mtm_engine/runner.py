"""A run's life in the store: create it, execute it (foreground or in a detached worker), record
each epoch exactly once, and leave an honest status whatever happens (finished, diverged,
interrupted, failed)."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import threading
import time
from typing import Any

from mtm_engine.atomic import atomic_write
from mtm_engine.config import Spec, spec_from_dict, with_absolute_paths
from mtm_engine.errors import out_of_memory
from mtm_engine.events import BatchProgress, EpochEnded, Event, RunResult, RunStarted, Sink, progress_of
from mtm_engine.processes import owner
from mtm_engine.provenance import SOURCE_PATCH, package_versions, physical_device, source_state
from mtm_engine.records import Status, acc_key, config_id, gpu_share
from mtm_engine.results import select_epoch
from mtm_engine.store import HEARTBEAT_S, Store, writing


def summary_fields(spec: Spec, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The index row's figures: epochs done, the epoch eval.selection picks for the primary classifier (the first of
    spec.classifiers: best validation accuracy, or under the authors' protocol best test accuracy), and its
    validation and test accuracies."""
    primary = spec.classifiers[0]
    best = select_epoch(records, primary, spec.eval.selection)
    return {
        "selection": spec.eval.selection,
        "epoch": max((r["epoch"] for r in records), default=0),
        "best_epoch": best["epoch"] if best else None,
        "best_val": best.get(acc_key("val", primary)) if best else None,
        "test_acc": best[acc_key("test", primary)] if best else None,
    }


def create_run(store: Store, spec: Spec, *, status: Status = Status.QUEUED, sweep: str | None = None,
               extra: dict[str, Any] | None = None, run_id: str | None = None) -> str:
    """Record a new run; returns its id (a new random one unless given)."""
    run_id = run_id or secrets.token_hex(16)   # 128 bits: no collision in any store (32 bits: 0.16% at 3,750 runs)
    spec = with_absolute_paths(spec)   # relative paths meant the folder it was launched from, recorded with it
    source, diff = source_state()
    meta = {"name": spec.name, "spec": spec.to_dict(), "seed": spec.train.seed, "versions": package_versions(),
            "launched_from": os.getcwd(), **source, "sweep": sweep, **(extra or {})}
    row = {"name": spec.name, "status": status, "dataset": spec.data.dataset, "backbone": spec.model.backbone,
           "loss": spec.loss.name, "head": spec.model.head, "dim": spec.model.dim if spec.model.head == "mtm" else None,
           "lr": spec.train.lr, "r": spec.loss.r, "seed": spec.train.seed, "epochs": spec.train.epochs,
           "primary": spec.classifiers[0], "sweep": sweep, "host": socket.gethostname(), "pid": None,
           # a foreground run is this process's from the start: killed before torch is even imported, it
           # is seen as interrupted at once (by its pid), not after the heartbeat's 150 s
           **(owner() if status == Status.RUNNING else {}),
           "device": None, "message": "", "config": config_id(meta["spec"]), **summary_fields(spec, [])}
    store.create_run(run_id, meta, row)
    if diff:   # the code that ran is the commit plus this patch
        with writing(store.run_dir(run_id) / SOURCE_PATCH):
            atomic_write(store.run_dir(run_id) / SOURCE_PATCH, diff)
    return run_id


PROGRESS_S = 2.0   # how often the epoch in flight is written for the TUI and `mtm list`


class StoreSink:
    """Records the engine's events in the store, then passes them on to `display`."""

    def __init__(self, store: Store, run_id: str, spec: Spec, display: Sink | None = None):
        self.store, self.run_id, self.spec, self.display = store, run_id, spec, display
        self.records: list[dict[str, Any]] = []
        self.progress_written = 0.0

    def emit(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            # Records past the checkpoint belong to an epoch that is about to run again.
            self.store.drop_epochs_after(self.run_id, event.start_epoch - 1)
            self.records = self.store.records(self.run_id)
            self.store.update(self.run_id, device=physical_device(event.device), machine=event.machine,
                              **summary_fields(self.spec, self.records), **({"message": event.note} if event.note else {}))
        elif isinstance(event, BatchProgress) and time.time() - self.progress_written >= PROGRESS_S:
            self.progress_written = time.time()
            self.store.write_progress(self.run_id, progress_of(event, self.progress_written))
        elif isinstance(event, EpochEnded):
            self.records.append(event.record)
            self.store.append_epoch(self.run_id, event.record, summary_fields(self.spec, self.records))
        if self.display is not None:
            self.display.emit(event)


class _Heartbeat(threading.Thread):
    def __init__(self, store: Store, run_id: str):
        super().__init__(daemon=True)
        self.store, self.run_id, self.done = store, run_id, threading.Event()

    def run(self) -> None:
        while not self.done.wait(HEARTBEAT_S):
            self.store.heartbeat(self.run_id)


STOPPED_BEFORE_START = "stopped before it started; resume starts it (R in mtm-tui, or mtm resume)"


def execute(store: Store, run_id: str, display: Sink | None = None, *, resume: bool = False) -> RunResult:
    """Run (or resume) a stored run in this process, keeping its status true to what happens.

    SIGTERM and a stop request (`mtm stop`) end it gracefully: the last whole epoch stays
    checkpointed and recorded, and the status becomes `interrupted`.
    """
    spec = spec_from_dict(store.meta(run_id)["spec"])
    if store.stop_requested(run_id):   # `mtm stop` between the pool's claim and this process's start
        store.update(run_id, status=Status.INTERRUPTED, pid=None, message=STOPPED_BEFORE_START)
        return RunResult(Status.INTERRUPTED, store.records(run_id), message=STOPPED_BEFORE_START)
    store.update(run_id, status=Status.RUNNING, **owner(), message="", started=time.time())
    terminated = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: terminated.set())
    heartbeat = _Heartbeat(store, run_id)
    heartbeat.start()
    try:
        from mtm_engine.train import fit  # here, where Ctrl-C is caught: importing the runner needs no torch

        result = fit(spec, store.run_dir(run_id), StoreSink(store, run_id, spec, display), resume=resume,
                     history=store.records(run_id) if resume else [],
                     should_stop=lambda: terminated.is_set() or store.stop_requested(run_id))
    except KeyboardInterrupt:
        store.update(run_id, status=Status.INTERRUPTED, pid=None, ended=time.time(),
                     message="interrupted (Ctrl-C); mtm resume continues from the last checkpoint")
        raise
    except BaseException as exc:
        oom = out_of_memory(exc, gpu_share())
        store.update(run_id, status=Status.FAILED, pid=None, ended=time.time(),
                     message=str(oom) if oom else f"{type(exc).__name__}: {exc}".splitlines()[0])
        if oom:
            raise oom from exc
        raise
    finally:
        heartbeat.done.set()
    store.update(run_id, status=result.status, pid=None, message=result.message, ended=time.time())
    return result
