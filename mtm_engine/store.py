"""The experiment store: TinyDB files under a home folder. The only module that imports tinydb.

Layout (HOME defaults to ./mtm-home):
    HOME/index/<shard>.json    one row per run: what `mtm list` shows. A shard per sweep
                               (sweep-<id>) or, for single runs, per creation day (day-YYYY-MM-DD)
    HOME/runs/<id>/run.json    the run: its full metadata and one record per epoch
    HOME/runs/<id>/            also its checkpoint, its log and its stop request

Appending an epoch (or a heartbeat) rewrites only the run's own file, so it costs the same however
many runs the store holds. The index rows are refreshed at status changes; listing reads the index
shards, plus the own files of the few runs that are live.

Several processes write at once (parallel runs, sweep trials), so every change is a
read-modify-write under an inter-process lock (fcntl) on that file, and every write is atomic
(temp file, fsync, rename): a reader never sees a half-written file, and a process killed
during a write leaves the last good state. A file that is corrupt, or not ours, raises
StoreError naming it; it is never overwritten or repaired.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from tinydb import Query, TinyDB
from tinydb.middlewares import CachingMiddleware
from tinydb.storages import Storage

from mtm_engine.atomic import atomic_write
from mtm_engine.errors import MtmError
from mtm_engine.events import Progress
from mtm_engine.processes import owner, same_process_alive
from mtm_engine.records import LIVE, MEASUREMENTS, PROGRESS, SNAPSHOTS, EpochRecord, RunMeta, RunRow, Status

FORMAT = 1
HEARTBEAT_S = 30.0             # a live run refreshes its heartbeat this often
STALE_AFTER_S = 5 * HEARTBEAT_S
RUN_FILE, LOG, STOP = "run.json", "log.txt", "stop"
DEAD_MESSAGE = "the run's process ended without finishing; mtm resume continues it"


class StoreError(MtmError):
    """A store file is corrupt or not ours, or a run id is unknown or ambiguous."""


# What to do about a store file that cannot be read, by its kind
REMEDY = {"index": "`mtm doctor` moves it into the home's quarantine and rebuilds the index from the runs' own files",
          "run": "`mtm doctor` moves the run's folder into the home's quarantine (or restore the file from a backup)",
          "sweep": "move it aside or restore it from a backup"}


class AtomicJSONStorage(Storage):
    """TinyDB storage that replaces its file atomically and refuses files that are not ours.

    Each file carries a `_mtm` table with {"format": 1, "kind": ...}; a file without it is
    somebody else's and is never written over.
    """

    def __init__(self, path: str, kind: str):
        self.path = Path(path)
        self.kind = kind

    def read(self) -> dict[str, Any] | None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            raise StoreError(f"{self.path} is a directory, not an mtm store file; move it out of the store") from None
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):   # RecursionError: [[[[... nested too deep
            raise StoreError(f"store file {self.path} is corrupt (not valid JSON); {REMEDY[self.kind]}; mtm will not "
                             f"overwrite it") from None
        marker = data.get("_mtm") if isinstance(data, dict) else None
        marker = marker.get("1") if isinstance(marker, dict) else None
        marker = marker if isinstance(marker, dict) else {}
        if marker.get("format") != FORMAT or marker.get("kind") != self.kind:
            raise StoreError(f"{self.path} is not an mtm {self.kind} file; move it aside, or choose "
                             f"another home with --home or MTM_HOME")
        problem = _shape_problem(self.kind, data)
        if problem:
            raise StoreError(f"store file {self.path} has the wrong shape ({problem}); {REMEDY[self.kind]}; mtm will "
                             f"not overwrite it")
        return data

    def write(self, data: dict[str, Any]) -> None:
        data["_mtm"] = {"1": {"format": FORMAT, "kind": self.kind}}
        with writing(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, json.dumps(data, separators=(",", ":")))

    def close(self) -> None:
        pass


ROW_KEYS = ("id", "name", "status", "dataset", "backbone", "loss", "epoch", "epochs", "created")   # what tables read
_NUMBER_KEYS = ("epoch", "epochs", "created")   # compared and summed by readers: a string there breaks them


def _row_problem(row: dict[str, Any]) -> str | None:
    missing = next((key for key in ROW_KEYS if key not in row), None)
    if missing:
        return f"lacks {missing!r}, one of {', '.join(ROW_KEYS)}"
    wrong = next((key for key in _NUMBER_KEYS if isinstance(row[key], bool) or not isinstance(row[key], (int, float))),
                 None)
    if wrong:
        return f"has {wrong!r} = {row[wrong]!r}, not a number"
    wrong = next((key for key in ("pid", "pid_start") if row.get(key) is not None
                  and (isinstance(row[key], bool) or not isinstance(row[key], int))), None)   # liveness reads them
    return f"has {wrong!r} = {row[wrong]!r}, not a process number" if wrong else None


def _shape_problem(kind: str, data: dict[str, Any]) -> str | None:
    """What is wrong with a store file's tables, or None. Only what readers index is checked."""
    def table(name: str) -> dict[str, Any]:
        value = data.get(name, {})
        return value if isinstance(value, dict) and all(isinstance(v, dict) for v in value.values()) else None

    if kind == "index":
        runs = table("runs")
        if runs is None:
            return "its runs table is not a table of rows"
        bad = next(((k, problem) for k, row in runs.items() if (problem := _row_problem(row))), None)
        return f"row {bad[0]} {bad[1]}" if bad else None
    if kind == "run" and data.get("row") is not None:   # a file being created has no tables yet
        meta, row, epochs = table("meta"), table("row"), table("epochs")
        if meta is None or row is None or epochs is None or len(row) != 1 or len(meta) != 1:
            return "it needs one meta row, one row and a table of epochs"
        problem = _row_problem(next(iter(row.values())))
        if problem:
            return f"its row {problem}"
        if not isinstance(next(iter(meta.values())).get("spec"), dict):
            return "its meta lacks the spec (a table of sections)"
        if not all(isinstance(r.get("epoch"), int) and not isinstance(r["epoch"], bool) for r in epochs.values()):
            return "an epoch record lacks its epoch (a whole number)"
    return None


@contextlib.contextmanager
def writing(path: Path, elsewhere: str = "a writable home with --home or MTM_HOME") -> Iterator[None]:
    """A write to `path` that fails (full disk, read-only or missing folder) becomes one StoreError
    line (`atomic_write` has removed its temporary file). `elsewhere`: what to choose instead (a file the
    user named is not in the home)."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, FileNotFoundError) and not path.parent.exists():
            raise StoreError(f"cannot write {path}: the folder {path.parent} does not exist; create it, or choose "
                             f"another path") from None
        if isinstance(exc, IsADirectoryError):
            raise StoreError(f"cannot write {path}: it is a folder; give a file's path, or choose "
                             f"{elsewhere}") from None
        remedy = "free some space, or choose" if exc.errno == errno.ENOSPC else "choose"
        raise StoreError(f"cannot write {path}: {exc.strerror or exc}; {remedy} {elsewhere}") from None


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock for changing `path` (a sibling .lock file)."""
    lock = path.with_name(f".{path.name}.lock")
    with writing(lock):
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(lock, "a")
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _open(path: Path, kind: str) -> TinyDB:
    """Open a store file for a change (under its lock). The caching middleware makes the change
    one read and one atomic write, at close, however many TinyDB operations it takes."""
    return TinyDB(str(path), storage=CachingMiddleware(AtomicJSONStorage), kind=kind)


class Store:
    """The run file is the truth about a run; its index row is a copy refreshed at every status
    change (create, start, end), so that epochs and heartbeats write the run file alone."""

    def __init__(self, home: str | Path):
        self.home = Path(home).expanduser()
        if self.home.exists() and not self.home.is_dir():
            raise StoreError(f"{self.home} is a file, not an mtm home folder; choose another home with --home or "
                             f"MTM_HOME")

    # --- paths ----------------------------------------------------------------------------------

    def run_dir(self, run_id: str) -> Path:
        return self.home / "runs" / run_id

    def exists(self, run_id: str) -> bool:
        return self.run_file(run_id).exists()

    def run_file(self, run_id: str) -> Path:
        return self.run_dir(run_id) / RUN_FILE

    def _index_file(self, shard: str) -> Path:
        return self.home / "index" / f"{shard}.json"

    # --- writing --------------------------------------------------------------------------------

    def create_run(self, run_id: str, meta: dict[str, Any], row: dict[str, Any]) -> None:
        """Record a new run: `meta` (spec, versions, ...) and `row` (what `mtm list` shows)."""
        now = time.time()
        shard = f"sweep-{row['sweep']}" if row.get("sweep") else time.strftime("day-%Y-%m-%d", time.localtime(now))
        row = {**row, "id": run_id, "shard": shard, "created": now, "updated": now, "heartbeat": now, "queued": now}
        path = self.run_file(run_id)
        with locked(path):
            if path.exists():
                raise StoreError(f"run {run_id} exists already")
            with _open(path, "run") as db:
                db.table("meta").insert({**meta, "id": run_id})
                db.table("row").insert(row)
                db.table("epochs")   # an empty table: the file is complete from the start
        self.write_index_row(row)

    def _change_run(self, run_id: str, change: Callable[[Any], None] = lambda db: None, *, index: bool = False,
                    accept: Callable[[dict[str, Any]], bool] | None = None, **fields: Any) -> bool:
        """Under the run file's lock: apply `change` to the open file and merge `fields` into the
        run's row; with `index`, then copy the row to its index shard, still under the run's lock, so
        that two changes of one run reach the index in the order they reached the run file. With
        `accept`, change nothing unless it holds for the row as stored (a compare-and-set; a run
        deleted meanwhile is not accepted). Returns whether it changed the run."""
        path = self.run_file(run_id)
        if not path.exists() and accept is None:
            raise StoreError(f"no run {run_id!r} in {self.home}; `mtm list` shows the runs")
        with locked(path):
            if accept is not None:
                try:
                    if not accept(self._read_run(run_id)["row"]["1"]):
                        return False
                except StoreError:
                    return False
            with _open(path, "run") as db:
                change(db)
                table = db.table("row")
                table.update(fields)
                row = dict(table.all()[0])
            if index:
                self.write_index_row(row)   # lock order: a run's file, then an index shard; never the reverse
        return True

    def update(self, run_id: str, **fields: Any) -> None:
        """A status change (status, pid, message, device, ...): the run file, then its index row."""
        self._change_run(run_id, index=True, updated=time.time(), **fields)

    def tag(self, run_id: str, tags: list[str], untag: bool = False) -> list[str]:
        """Add (or remove) tags; returns the run's tags after the change."""
        after: list[str] = []

        def change(db: Any) -> None:   # read and written under the run's lock: concurrent tags all land
            table = db.table("row")
            have = list(table.all()[0].get("tags") or [])
            after[:] = ([t for t in have if t not in tags] if untag
                        else have + [t for t in dict.fromkeys(tags) if t not in have])
            table.update({"tags": after})

        self._change_run(run_id, change, index=True, updated=time.time())
        return after

    def transition(self, run_id: str, expected: str | tuple[str, ...], **fields: Any) -> bool:
        """Change the run's row only if its status (a dead live run counts as interrupted) is one of
        `expected`: a compare-and-set under the run's lock, so a queued run is claimed by one slot or
        taken out of the queue, never both, and a run is resumed by one process only."""
        expected = (expected,) if isinstance(expected, str) else expected
        now = time.time()
        return self._change_run(run_id, index=True, accept=lambda row: self._shown(row)["status"] in expected,
                                updated=now, heartbeat=now, **fields)

    def heartbeat(self, run_id: str) -> None:
        self._change_run(run_id, heartbeat=time.time())

    def append_epoch(self, run_id: str, record: dict[str, Any], row_fields: dict[str, Any]) -> None:
        """Store one epoch's record exactly once (a repeated epoch replaces its record) and the
        row's new figures (epoch, best), in one write of the run's own file."""
        self._change_run(run_id, lambda db: db.table("epochs").upsert(record, Query().epoch == record["epoch"]),
                         heartbeat=time.time(), **row_fields)

    def drop_epochs_after(self, run_id: str, epoch: int) -> None:
        """Forget records past `epoch` (those of a checkpoint that never landed)."""
        self._change_run(run_id, lambda db: db.table("epochs").remove(Query().epoch > epoch))

    def write_index_row(self, row: dict[str, Any]) -> None:
        path = self._index_file(row["shard"])
        with locked(path), _open(path, "index") as db:
            db.table("runs").upsert(row, Query().id == row["id"])

    def delete(self, run_id: str) -> None:
        row = self.row(run_id)
        path = self._index_file(row["shard"])
        with locked(path), _open(path, "index") as db:
            db.table("runs").remove(Query().id == run_id)
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)

    # --- reading --------------------------------------------------------------------------------

    def rows(self) -> list[RunRow]:
        """Every run's row, oldest first. Live runs are read from their own files (fresh epochs);
        those whose process died are shown as interrupted. Reading writes nothing: see `reap`.

        The run folders are the truth: an index row whose folder is gone (a ghost) is left out, and a run
        missing from the index (its shard moved aside) is read from its own file. `doctor` mends both."""
        on_disk = self.run_ids()
        indexed = self._index_rows()
        rows = [self._fresh(row) if row["status"] in LIVE else row for row in indexed if row["id"] in on_disk]
        for run_id in on_disk - {row["id"] for row in indexed}:
            with contextlib.suppress(StoreError):   # being created, or unreadable (doctor quarantines it)
                row = self._read_run(run_id)["row"]["1"]
                if row["id"] == run_id:   # else a copy of another run's file (doctor quarantines it)
                    rows.append(self._shown(row))
        return sorted(rows, key=lambda r: r["created"])

    def run_ids(self) -> set[str]:
        """The run folders' names (one directory listing)."""
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):   # a link is not a run (doctor moves it)
            return {entry.name for entry in os.scandir(self.home / "runs") if entry.is_dir(follow_symlinks=False)}
        return set()

    def ghosts(self) -> list[dict[str, Any]]:
        """Index rows whose run folder is gone."""
        on_disk = self.run_ids()
        return [row for row in self._index_rows() if row["id"] not in on_disk]

    def remove_index_row(self, row: dict[str, Any]) -> None:
        path = self._index_file(row["shard"])
        with locked(path), _open(path, "index") as db:
            db.table("runs").remove(Query().id == row["id"])

    def _index_rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        folder = self.home / "index"
        if folder.is_dir():
            for path in sorted(folder.glob("*.json")):
                data = AtomicJSONStorage(str(path), "index").read() or {}
                rows.extend(data.get("runs", {}).values())
        return rows

    def _fresh(self, row: dict[str, Any]) -> dict[str, Any]:
        with contextlib.suppress(StoreError):   # a run deleted while we read keeps its index copy
            row = self._read_run(row["id"])["row"]["1"]
        return self._shown(row)

    def is_dead(self, row: dict[str, Any]) -> bool:
        """A running run whose process is gone: on this host, its pid has ended or now belongs to
        another process (another start time). Another host's process cannot be checked from here: a silent
        heartbeat may be a paused driver or a slow disk, so such a run is never judged dead here (`_shown`
        says how long it has been silent); its own host's commands judge it."""
        if row["status"] != Status.RUNNING:   # a queued run is an entry in the queue, not a process
            return False
        if row.get("host") and row["host"] != socket.gethostname():
            return False
        if row.get("pid"):
            alive = same_process_alive(row)
            if alive is not None:
                return not alive
            # A live pid without a start time to compare (none recorded, or none readable here) may be another
            # process that reuses the pid: the heartbeat decides, as for another host's run.
        return time.time() - row.get("heartbeat", row["created"]) > STALE_AFTER_S

    def _shown(self, row: dict[str, Any]) -> dict[str, Any]:
        """The row as it truly stands: a dead live run is shown interrupted, flagged `dead` until
        `reap` records it so."""
        if not self.is_dead(row):
            silent = time.time() - row.get("heartbeat", row["created"])
            if row["status"] == Status.RUNNING and silent > STALE_AFTER_S:   # another host's run (is_dead)
                return {**row, "message": f"no heartbeat for {silent:.0f} s from {row.get('host')}; only that host "
                                          f"can tell whether its process ended"}
            return row
        return {**row, "status": Status.INTERRUPTED, "message": DEAD_MESSAGE, "dead": True}

    def reap(self, rows: list[dict[str, Any]]) -> list[str]:
        """Record the runs among `rows` (as read) whose process died as interrupted; returns their ids.
        The only read that writes: the commands that list runs (list, export, plot), `mtm stop` and
        the TUI's poll call it, and go on where the home is read-only."""
        now = time.time()
        return [row["id"] for row in rows if row.get("dead") and self._change_run(
            row["id"], index=True, accept=self.is_dead, status=Status.INTERRUPTED, pid=None, message=DEAD_MESSAGE,
            updated=now)]

    def resolve(self, prefix: str, say: Callable[[str], None] | None = None) -> str:
        """A full run id from an unambiguous prefix of it, or else from a run's name: the run of that name, or the
        newest of several (which `say` is told, with the others' ids)."""
        runs = self.home / "runs"
        ids = [p.name for p in runs.iterdir() if p.name.startswith(prefix) and not p.is_symlink()
               and (p / RUN_FILE).exists()] if prefix and runs.is_dir() else []
        if len(ids) > 1:
            raise StoreError(f"run id {prefix!r} is ambiguous: {', '.join(sorted(ids))}; give more characters")
        if ids:
            return ids[0]
        named = sorted((r for r in self.rows() if prefix and r["name"] == prefix), key=lambda r: r["created"])
        if not named:
            raise StoreError(f"no run {prefix!r} (by id or name) in {self.home}; `mtm list` shows the runs")
        if len(named) > 1 and say is not None:
            say(f"{len(named)} runs are named {prefix!r}: taking the newest, {named[-1]['id'][:8]} (the others: "
                f"{', '.join(r['id'][:8] for r in named[:-1])}; give an id to take another)")
        return named[-1]["id"]

    def row(self, run_id: str) -> RunRow:
        """One run's current row, from its own file."""
        return self._shown(self._read_run(run_id)["row"]["1"])

    def meta(self, run_id: str) -> RunMeta:
        return self._read_run(run_id)["meta"]["1"]

    def records(self, run_id: str) -> list[EpochRecord]:
        """The run's epoch records, in epoch order."""
        return sorted(self._read_run(run_id).get("epochs", {}).values(), key=lambda r: r["epoch"])

    def run(self, run_id: str) -> tuple[RunMeta, RunRow, list[EpochRecord]]:
        """(meta, row, records) from one read of the run's file."""
        data = self._read_run(run_id)
        records = sorted(data.get("epochs", {}).values(), key=lambda r: r["epoch"])
        return data["meta"]["1"], self._shown(data["row"]["1"]), records

    def _read_run(self, run_id: str) -> dict[str, Any]:
        data = AtomicJSONStorage(str(self.run_file(run_id)), "run").read()
        if data is None:
            raise StoreError(f"no run {run_id!r} in {self.home}; `mtm list` shows the runs")
        return data

    def snapshot(self, run_id: str, which: str = "last") -> dict[str, Any] | None:
        """The run's embedding snapshot ("last" or "best" epoch), or None before its first epoch."""
        path = self.run_dir(run_id) / SNAPSHOTS[which]
        return _read_json(path, f"embedding snapshot {path} is corrupt; the run rewrites it at its next epoch",
                          ("points", "labels"))

    def write_measurement(self, run_id: str, kind: str, result: dict[str, Any]) -> Path:
        """Keep an `mtm eval` measurement (records.MEASUREMENTS: certainty, fewshot) beside the run's
        checkpoints, atomically."""
        path = self.run_dir(run_id) / MEASUREMENTS[kind]
        try:
            atomic_write(path, json.dumps(result))
        except OSError as exc:
            raise StoreError(f"cannot write {path} ({exc.strerror or exc}); free space or fix the permissions "
                             f"of {path.parent}") from None
        return path

    def measurement(self, run_id: str, kind: str) -> dict[str, Any] | None:
        """The run's kept measurement of this kind, or None if `mtm eval --<kind>` never measured it."""
        path = self.run_dir(run_id) / MEASUREMENTS[kind]
        return _read_json(path, f"{path} is corrupt; measure again with mtm eval {run_id[:8]} --{kind}",
                          MEASUREMENT_KEYS[kind])

    def write_progress(self, run_id: str, progress: Progress) -> None:
        """The epoch in flight. Best effort: a full disk must not end a run over a progress line
        (the epoch's own record, written next, says so if the disk stays full)."""
        with contextlib.suppress(OSError):
            atomic_write(self.run_dir(run_id) / PROGRESS, json.dumps(progress))

    def progress(self, run_id: str) -> Progress | None:
        """The epoch in flight as its run last wrote it, or None (none yet, or unreadable)."""
        try:
            return json.loads((self.run_dir(run_id) / PROGRESS).read_text())
        except (OSError, ValueError):
            return None

    # --- sweeps ------------------------------------------------------------------------------------

    def _sweep_file(self, sweep_id: str) -> Path:
        return self.home / "sweeps" / sweep_id / "sweep.json"

    def save_sweep(self, sweep_id: str, data: dict[str, Any]) -> None:
        """A sweep's definition (base spec, [tune] settings), kept for `mtm tune --resume`."""
        path = self._sweep_file(sweep_id)
        with locked(path), _open(path, "sweep") as db:
            db.table("sweep").truncate()
            db.table("sweep").insert(data)

    def sweep(self, sweep_id: str) -> dict[str, Any]:
        data = AtomicJSONStorage(str(self._sweep_file(sweep_id)), "sweep").read()
        if data is None:
            known = sorted(p.name for p in (self.home / "sweeps").glob("*") if (p / "sweep.json").exists())
            raise StoreError(f"no sweep {sweep_id!r} in {self.home}; known sweeps: {', '.join(known) or 'none'}")
        return data["sweep"]["1"]

    @contextlib.contextmanager
    def sweep_driver(self, sweep_id: str) -> Iterator[None]:
        """Held by the one `mtm tune` process that drives a sweep, for as long as it does: a second driver of
        the same sweep (two `--resume`s) is refused, as a second owner of a run is. A flock, so it ends with
        the process however it ends; the file says who holds it."""
        path = self.home / "sweeps" / sweep_id / "driver.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            try:
                holder = json.loads(fh.read())
            except ValueError:
                holder = {}
            fh.close()
            raise MtmError(f"sweep {sweep_id} is running (pid {holder.get('pid', '?')} on {holder.get('host', '?')}); "
                           f"Ctrl-C in its terminal stops it, and `mtm tune --resume {sweep_id}` goes on later") from None
        with fh:
            fh.seek(0)
            fh.truncate()
            fh.write(json.dumps(owner()))
            fh.flush()
            yield

    # --- stop requests ----------------------------------------------------------------------------

    def request_stop(self, run_id: str) -> None:
        (self.run_dir(run_id) / STOP).touch()

    def stop_requested(self, run_id: str) -> bool:
        return (self.run_dir(run_id) / STOP).exists()

    def clear_stop(self, run_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.run_dir(run_id) / STOP).unlink()


MEASUREMENT_KEYS = {"certainty": ("scores",), "fewshot": ("features",)}   # what readers index, by kind


def _read_json(path: Path, corrupt: str, keys: tuple[str, ...]) -> dict[str, Any] | None:
    """A JSON file beside a run's checkpoints: None if absent; one that is not JSON, or not a table with `keys`
    (what its readers index), is the StoreError `corrupt`."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError):   # a folder planted there, not JSON, nested too deep
        raise StoreError(corrupt) from None
    if not isinstance(data, dict) or not all(key in data for key in keys):
        raise StoreError(corrupt)
    return data
