"""Hyperparameter search on Ray Tune (HyperOpt search, ASHA scheduler, plateau stopping), the
paper's Section IV-D. The only module that imports ray.

Every trial is a run in the store, tagged with its sweep id. Trials are recorded from the driver
by a `tune.Callback` (so trials on other nodes of a cluster are recorded too); a trial reports
one result per epoch, with the run's checkpoint, so ASHA can stop it and `Tuner.restore` can
continue it. The driver copies each reported checkpoint (with the best epoch's weights and the
embedding snapshots) into the trial's run folder, and owns the trial's liveness: the row names
the driver's process, which heartbeats its running trials, so a long epoch on another node never
looks like a dead run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import ray
from ray import tune
from ray.tune.result import AUTO_RESULT_KEYS

from mtm_engine.atomic import atomic_write
from mtm_engine.config import Spec, comparable_spec, selection_split, spec_from_dict, with_absolute_paths
from mtm_engine.errors import ConfigError, MtmError
from mtm_engine.events import CheckpointSaved, EpochEnded, RunStarted
from mtm_engine.preflight import (
    check_restorable,
    check_resumable_here,
    check_trials_fit,
    gpus_for,
    storage_path,
    tighten_token,
)
from mtm_engine.processes import owner
from mtm_engine.provenance import physical_device
from mtm_engine.records import BEST, CHECKPOINT, SNAPSHOTS, Status, acc_key
from mtm_engine.runner import create_run, summary_fields
from mtm_engine.store import HEARTBEAT_S, LOG, Store
from mtm_engine.sweep_spec import TuneSpec

RAY_KEYS = set(AUTO_RESULT_KEYS) | {"done", "trial_id", "experiment_tag", "should_checkpoint"}
TRIAL_KEYS = ("device", "node")   # reported by each trial beside its epoch record: where it trains
RUN_FILES = (CHECKPOINT, BEST, *SNAPSHOTS.values())   # what a checkpoint carries into the trial's run folder


def _write_probe(folder: str, name: str) -> str:
    """On one node: write a probe file into the sweep's storage folder; returns the node's host name."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    atomic_write(Path(folder) / name, socket.gethostname())
    return socket.gethostname()


def check_storage_shared(storage: str, nodes: list[dict[str, Any]]) -> None:
    """Before a sweep starts on a cluster, each live node writes a probe file into `storage` (tune.storage/<sweep
    id>) and the driver looks
    for it: a node that cannot write there, or whose files the driver cannot see (its own disk, not the shared
    one), would fail every trial placed on it at its first checkpoint, with a 60-line Ray traceback. Refused in
    one line naming the node."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0)(_write_probe)
    folder = Path(storage)
    live = [node for node in nodes if node.get("Alive")]
    names = {node["NodeID"]: f".probe-{node['NodeID'][:12]}-{secrets.token_hex(4)}" for node in live}
    try:
        for node in live:
            where = f"node {node.get('NodeManagerAddress', '?')} ({node['NodeID'][:12]})"
            try:
                ray.get(probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
                        .remote(str(folder), names[node["NodeID"]]), timeout=120)
            except ray.exceptions.RayTaskError as exc:   # the probe ran there and failed: PermissionError, a full disk
                reason = str(getattr(exc, "cause", None) or exc).strip().splitlines()[-1][:200]
                raise MtmError(f"tune.storage {folder.parent}: {where} cannot write there ({reason}); give a folder that "
                               f"every node can write (shared storage), or a URI like s3://bucket/path") from None
            except Exception:   # the node is gone, or takes no task now (a lost node not yet declared dead): Ray
                continue        # places no trial there either
            if not (folder / names[node["NodeID"]]).exists():
                raise MtmError(f"tune.storage {folder.parent} is not shared with {where}: a file it wrote there is not seen "
                               f"here, so its trials' checkpoints would be lost; mount the same folder on every "
                               f"node (NFS), or give a URI like s3://bucket/path")
    finally:
        for name in names.values():
            (folder / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.rmdir()   # only if the probes made it and nothing else is there


# sweep id -> where the driver prints trial events. Module state, not callback state: a restored
# sweep unpickles its callback, and the printer belongs to the driver process that restores it.
_PRINTERS: dict[str, Callable[[str], None]] = {}


def _merged(base: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The base spec with a trial's sampled values (dotted keys) put in."""
    raw = json.loads(json.dumps(base))
    for key, value in config.items():
        section, _, name = key.partition(".")
        raw[section][name] = value
    return raw


def _trial_spec(base: dict[str, Any], config: dict[str, Any]) -> Spec:
    return spec_from_dict(_merged(base, config))


def param_space(t: TuneSpec) -> dict[str, Any]:
    kinds: dict[str, Callable[[list], Any]] = {
        "loguniform": lambda v: tune.loguniform(v[0], v[1]),
        "uniform": lambda v: tune.uniform(v[0], v[1]),
        "integer": lambda v: tune.randint(v[0], v[1] + 1),   # our bounds are inclusive
        "choice": tune.choice,
        "grid": tune.grid_search,
    }
    return {key: kinds[kind](values) for key, rule in t.space.items() for kind, values in rule.items()}


# --- the trial (runs on a Ray worker, possibly on another node) --------------------------------------

class _ReportSink:
    """Reports each epoch to Tune once its checkpoint is on disk, with where the trial trains."""

    def __init__(self):
        self.record: dict[str, Any] | None = None
        self.where = {"device": "", "node": ray.get_runtime_context().get_node_id()[:12]}

    def emit(self, event: Any) -> None:
        if isinstance(event, RunStarted):
            self.where["device"] = physical_device(event.device)
        elif isinstance(event, EpochEnded):
            self.record = event.record
        elif isinstance(event, CheckpointSaved) and self.record is not None:
            tune.report({**self.record, **self.where}, checkpoint=tune.Checkpoint.from_directory(str(event.path.parent)))


def _trial(config: dict[str, Any], base: dict[str, Any], cpus: float) -> None:
    import torch

    from mtm_engine.train import fit

    torch.set_num_threads(max(1, int(cpus)))
    if base["train"]["device"] == "auto" and not ray.get_gpu_ids():
        # Ray gave this trial no GPU: it must not take one anyway (all such trials would land on cuda:0).
        base = {**base, "train": {**base["train"], "device": "cpu"}}
    spec = _trial_spec(base, config)
    run_dir = Path(tune.get_context().get_trial_dir()) / "mtm"
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:   # a restored trial continues from its last reported epoch, its best kept
        with checkpoint.as_directory() as folder:
            for name in RUN_FILES:
                if (Path(folder) / name).exists():
                    shutil.copy(Path(folder) / name, run_dir / name)
    fit(spec, run_dir, _ReportSink(), resume=checkpoint is not None, background_checkpoints=False)


# --- the driver's record of every trial ------------------------------------------------------------

class StoreCallback(tune.Callback):
    """Records trials in the store from the driver: created at start, one record per result,
    finished or failed (with its error) at the end."""

    def __init__(self, home: str, sweep_id: str, base: dict[str, Any]):
        self.home, self.sweep_id, self.base = home, sweep_id, base
        self.records: dict[str, list[dict[str, Any]]] = {}   # run id -> records seen (a cache of the store)

    beat = 0.0   # when the running trials' heartbeat was last written (a class default: a callback restored
                 # from an older sweep is unpickled without __init__)

    def _tell(self, text: str) -> None:
        say = _PRINTERS.get(self.sweep_id)
        if say is not None:
            say(text)

    def run_id(self, trial) -> str:
        """Stable per trial, so a restored sweep finds its trials' runs instead of duplicating them."""
        return hashlib.sha1(f"{self.sweep_id}/{trial.trial_id}".encode()).hexdigest()[:32]

    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        store, run_id = Store(self.home), self.run_id(trial)
        try:
            spec = _trial_spec(self.base, trial.config)
        except ConfigError:   # an invalid draw: the trial fails with this error (on_trial_error), the sweep goes on
            spec = spec_from_dict(self.base)
        if not store.exists(run_id):
            create_run(store, spec, status=Status.RUNNING, sweep=self.sweep_id, run_id=run_id,
                       extra={"trial_id": trial.trial_id, "trial_config": trial.config})
        # The driver owns the trial: its process, here, is what liveness checks (not the worker's, elsewhere).
        store.update(run_id, status=Status.RUNNING, message="", heartbeat=time.time(), started=time.time(), **owner())
        self.records[run_id] = store.records(run_id)
        values = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.config.items())
        self._tell(f"trial {run_id} started: {values}")

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict[str, Any], **info: Any) -> None:
        store, run_id = Store(self.home), self.run_id(trial)
        record = {k: v for k, v in result.items() if k not in RAY_KEYS and k not in TRIAL_KEYS}
        records = [r for r in self.records.setdefault(run_id, store.records(run_id)) if r["epoch"] != record["epoch"]]
        records.append(record)
        self.records[run_id] = records
        spec = _trial_spec(self.base, trial.config)
        store.append_epoch(run_id, record, {**summary_fields(spec, records), "device": result.get("device"),
                                            "node": result.get("node"), "worker_host": result.get("hostname"),
                                            "node_ip": result.get("node_ip")})
        metric = acc_key(spec.selects_on, spec.classifiers[0])
        self._tell(f"trial {run_id} epoch {record['epoch']}/{spec.train.epochs} {metric} {record.get(metric, 0):.4f}")

    def on_checkpoint(self, iteration: int, trials: list, trial, checkpoint, **info: Any) -> None:
        """Bring the reported checkpoint (from the sweep's storage, wherever the trial ran) into the
        trial's run folder: resume, `mtm eval`, the embedding view and `mtm plot` read it there."""
        run_dir = Store(self.home).run_dir(self.run_id(trial))
        try:   # never raise into Ray: it would then not record this checkpoint, and resume would go back
            run_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=run_dir, prefix=".checkpoint-") as folder:   # same disk: atomic
                checkpoint.to_directory(folder)
                for name in RUN_FILES:
                    if (Path(folder) / name).exists():
                        os.replace(Path(folder) / name, run_dir / name)
        except Exception as exc:   # a full or unwritable home: the sweep goes on; its storage keeps the checkpoint
            self._tell(f"trial {self.run_id(trial)}: its checkpoint was not copied into {run_dir} ({exc})")

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        """The driver's heartbeat for its running trials (readers on other hosts go by it)."""
        if time.time() - self.beat < HEARTBEAT_S:
            return
        self.beat = time.time()
        store = Store(self.home)
        for trial in trials:
            if trial.status == "RUNNING" and store.exists(self.run_id(trial)):
                store.heartbeat(self.run_id(trial))

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        store, run_id = Store(self.home), self.run_id(trial)
        spec = _trial_spec(self.base, trial.config)
        done = len(self.records.get(run_id, []))
        message = "" if done >= spec.train.epochs else f"stopped early by the scheduler after epoch {done}"
        store.update(run_id, status=Status.FINISHED, pid=None, message=message, ended=time.time())
        self._tell(f"trial {run_id} finished" + (f" ({message})" if message else ""))

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        store, run_id = Store(self.home), self.run_id(trial)
        error = ""
        with contextlib.suppress(OSError, TypeError):   # the whole error into the trial's log (`mtm logs TRIAL`)
            error = Path(trial.error_file).read_text(errors="replace")
            with open(store.run_dir(run_id) / LOG, "a") as log:
                log.write(error)
        # Where it ran, also where it never reported (a failure before its first epoch): Ray's error names the
        # worker, "ray::ImplicitFunc.train() (pid=4393, ip=10.0.0.7, ...)".
        placed = re.search(r"\(pid=\d+, ip=([^,)\s]+)", error)
        store.update(run_id, status=Status.FAILED, pid=None, message=_error_line(trial), ended=time.time(),
                     node_ip=trial.node_ip or (placed.group(1) if placed else None))
        self._tell(f"trial {run_id} failed: {_error_line(trial)}")


def _error_line(trial) -> str:
    """The last line of the trial's error (its exception), or a pointer to the error file."""
    path = trial.error_file
    if path and Path(path).exists():
        lines = [line for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
        if lines:   # "mtm_engine.errors.DataError: data.dataset = ...": our errors are their message alone
            return re.sub(r"^mtm_engine\.errors\.\w+: ", "", lines[-1].strip())[:500]
    return f"the trial raised an error; see {path or 'the Ray logs'}"


# --- the sweep ------------------------------------------------------------------------------------

def _probe(address: str) -> None:
    """Fail at once, in one line, where nothing listens at HOST:PORT (Ray itself retries for minutes)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return   # "auto", or a ray:// URL: Ray's own lookup
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as exc:
        raise MtmError(f"cannot join the Ray cluster at {address}: nothing answers there ({exc.strerror or exc}); "
                       f"start the head with `ray start --head --port={port}`, or give its address") from None


@contextlib.contextmanager
def _stderr_to(file) -> Any:
    """Point this process's file descriptor 2 (where native code writes) at `file` for a while."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(file.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _start_ray(address: str | None, dashboard: bool, say: Callable[[str], None] | None) -> None:
    """Join the cluster at `address` with the auth it asks for (RAY_AUTH_MODE and the token in the
    environment, as the cluster's owner set them), or start a local node on 127.0.0.1. Ray's auth is
    left as Ray sets it (token auth: Ray writes the token to ~/.ray/auth_token for a local node)."""
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")          # with verbose=0: Tune prints nothing; we do
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = dict(include_dashboard=dashboard, log_to_driver=False, configure_logging=True,
                                  logging_level=logging.ERROR)
    if address:
        _probe(address)
        # Ray's C++ client prints a warning a second while it retries (a refused token, say): keep them
        # off the terminal, and out of them the reason for the one line said instead.
        with tempfile.TemporaryFile() as native, _stderr_to(native):
            try:
                ray.init(address=address, **kwargs)
                failure = None
            except Exception as exc:   # ConnectionError, auth errors, timeouts: all mean "not joined"
                failure = exc
            native.seek(0)
            said = native.read().decode(errors="replace")
        if failure is not None:
            text = str(failure).strip()
            reason = text.splitlines()[0][:200] if text else type(failure).__name__
            if "InvalidAuthToken" in said + text:
                reason = "the cluster refused this driver's auth token (InvalidAuthToken)"
            raise MtmError(f"cannot join the Ray cluster at {address} ({reason}); check the address with `ray status` "
                           f"on the head node; a cluster with token auth (Ray's default for `ray start --head`) needs "
                           f"RAY_AUTH_MODE=token here and its token in ~/.ray/auth_token or RAY_AUTH_TOKEN") from None
        return
    ray.init(_node_ip_address="127.0.0.1", dashboard_host="127.0.0.1", **kwargs)


def run_sweep(spec: Spec, t: TuneSpec, home: Path, *, sweep_id: str | None = None, resume: bool = False,
              address: str | None = None, dashboard: bool = False,
              say: Callable[[str], None] | None = None,
              started: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run (or, with resume, restore) a sweep; returns its summary with the best trial. `started`
    hears (sweep id, its [tune] settings) once Ray is up and the sweep is saved."""
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.hyperopt import HyperOptSearch
    from ray.tune.stopper import TrialPlateauStopper

    store = Store(home)
    if resume:
        saved = store.sweep(sweep_id)
        spec, t = spec_from_dict(saved["spec"]), TuneSpec(**saved["tune"])
    else:
        sweep_id = sweep_id or secrets.token_hex(4)
    base = with_absolute_paths(spec).to_dict()   # trials run in their own folders, maybe on other nodes
    base["train"]["epochs"] = t.max_epochs
    metric, mode = acc_key(spec.selects_on, t.metric), "max"
    # First the storage, then Ray: a folder that cannot be written or a cluster that cannot be joined
    # leaves no sweep behind.
    storage = saved["storage"] if resume and "storage" in saved else storage_path(t.storage, store.home, sweep_id)
    # What this driver and its local Ray write is its user's alone to change (check_restorable trusts nothing
    # else), also where the login's umask lets the group write (Debian's user private groups: 002).
    os.umask(os.umask(0) | 0o022)
    _start_ray(address, dashboard, say)
    tighten_token(Path.home() / ".ray" / "auth_token", say)
    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    if resume:
        check_resumable_here(sweep_id, saved, cluster_gpus)
    gpus = gpus_for(t.gpus_per_trial, spec.model.backbone, cluster_gpus)
    check_trials_fit(gpus, t.cpus_per_trial, ray.nodes())
    if address and "://" not in storage:   # a cluster: every node must write where the driver reads
        check_storage_shared(storage, ray.nodes())
    if say is not None and t.gpus_per_trial == "auto" and gpus:
        say(f"tune.gpus_per_trial = auto: {gpus:g} GPU a trial ({spec.model.backbone})")
    if not resume:
        store.save_sweep(sweep_id, {"id": sweep_id, "name": spec.name, "spec": base, "tune": t.to_dict(),
                                    "created": time.time(), "storage": storage, "ray_path": f"{storage}/ray",
                                    "address": address, "gpus_per_trial": gpus})
    if started is not None:
        started(sweep_id, {**t.to_dict(), "maximising": metric})   # the record key maximised: val_acc_cos
    trainable = tune.with_resources(tune.with_parameters(_trial, base=base, cpus=t.cpus_per_trial),
                                    {"cpu": t.cpus_per_trial, "gpu": gpus})
    if say is not None:
        _PRINTERS[sweep_id] = say
    experiment = f"{storage}/ray"
    if resume:
        if not tune.Tuner.can_restore(experiment):
            raise MtmError(f"sweep {sweep_id} has no Ray state in {experiment} to restore; start it again")
        check_restorable(experiment, say)
        # Errored trials (a lost node, say) continue from their last checkpoint, each epoch once.
        tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_unfinished=True,
                                   resume_errored=True, restart_errored=False)
    else:
        searcher = None
        if t.search == "hyperopt":
            searcher = HyperOptSearch(metric=metric, mode=mode, random_state_seed=t.seed)
            if t.max_concurrent:
                searcher = ConcurrencyLimiter(searcher, max_concurrent=t.max_concurrent)
        scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=t.max_epochs,
                                   grace_period=min(t.grace_period, t.max_epochs)) if t.scheduler == "asha" else None)
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(t),
            tune_config=tune.TuneConfig(metric=metric, mode=mode, num_samples=t.num_samples, search_alg=searcher,
                                        scheduler=scheduler,
                                        max_concurrent_trials=t.max_concurrent or None),
            run_config=tune.RunConfig(
                name="ray", storage_path=storage, verbose=0,
                callbacks=[StoreCallback(str(store.home.resolve()), sweep_id, base)],
                stop=TrialPlateauStopper(metric=metric, mode=mode, std=t.plateau_std,
                                         num_results=t.plateau_results, grace_period=t.plateau_results),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
    with _tune_log_to(store.home / "sweeps" / sweep_id / "driver.log"):
        tuner.fit()
    return sweep_summary(store, sweep_id)


@contextlib.contextmanager
def _tune_log_to(path: Path) -> Any:
    """Ray Tune's own log lines (a failed trial's 40-line traceback among them) into the sweep's driver.log, not
    onto the terminal: the driver says each failure in one line, and the trial's log keeps its traceback."""
    path.parent.mkdir(parents=True, exist_ok=True)
    logger, handler = logging.getLogger("ray.tune"), logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
        handler.close()


def sweep_summary(store: Store, sweep_id: str) -> dict[str, Any]:
    """The sweep's trials by status, and the best by the accuracy the sweep maximised: its metric's on validation,
    or on test under eval.selection = "max-test" (the authors' protocol)."""
    saved = store.sweep(sweep_id)
    rows = [r for r in store.rows() if r.get("sweep") == sweep_id]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    split = selection_split(comparable_spec(saved["spec"])["eval"]["selection"])
    score = "best_val" if split == "val" else "test_acc"   # the row's figure of that split at its selected epoch
    scored = [r for r in rows if r.get(score) is not None]
    best = max(scored, key=lambda r: r[score]) if scored else None
    summary: dict[str, Any] = {"sweep_id": sweep_id, "name": saved["name"], "trials": len(rows), "status": counts,
                               "metric": acc_key(split, saved["tune"]["metric"]), "best": None}
    if best is not None:
        meta = store.meta(best["id"])
        summary["best"] = {"run_id": best["id"], "config": meta.get("trial_config", {}), "best_val": best["best_val"],
                           "test_acc": best["test_acc"], "best_epoch": best["best_epoch"], "score": best[score]}
    return summary
