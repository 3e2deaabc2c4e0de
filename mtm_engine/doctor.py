"""`mtm doctor`: mend a store from its run folders' own files (the truth), after a crash, a kill or a hand's
mistake left an index or a run folder damaged. Nothing is deleted: what cannot be read is moved aside."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from mtm_engine.atomic import writer_of
from mtm_engine.processes import pid_alive
from mtm_engine.records import LIVE
from mtm_engine.store import AtomicJSONStorage, Store, StoreError, locked, writing


@dataclass
class Checkup:
    """What doctor found (and mended, unless asked only to look)."""
    quarantined: list[tuple[Path, Path]] = field(default_factory=list)   # (unreadable file or run folder, moved to)
    ghosts: list[str] = field(default_factory=list)                      # index rows removed: no run folder
    reindexed: list[str] = field(default_factory=list)                   # runs whose index row was missing or stale
    temporary: list[Path] = field(default_factory=list)                  # half-written files of killed writers

    @property
    def healthy(self) -> bool:
        return not (self.quarantined or self.ghosts or self.reindexed or self.temporary)


def doctor(store: Store, fix: bool = True) -> Checkup:
    """Mend what a damaged index or run folder leaves, from the run folders' own files (the truth):
    unreadable index shards and run files are moved into HOME/quarantine/<time>/ (nothing is deleted),
    ghost rows (no run folder) are removed, every readable run's row is written to its index shard where it
    is missing or out of date, and the half-written temporary files of writers that were killed are removed.
    With fix=False, only says what it would do."""
    checkup = Checkup()
    quarantine = store.home / "quarantine" / time.strftime("%Y%m%dT%H%M%S")

    def move(path: Path) -> None:
        target = quarantine / path.relative_to(store.home)
        checkup.quarantined.append((path, target))
        if fix:
            with writing(target):
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)

    for path in sorted((store.home / "index").glob("*.json")):
        try:
            AtomicJSONStorage(str(path), "index").read()
        except StoreError:
            move(path)
    indexed = {}
    for path in sorted((store.home / "index").glob("*.json")):
        with contextlib.suppress(StoreError):   # quarantined above (fix=False leaves it there)
            indexed.update((row["id"], row) for row in (AtomicJSONStorage(str(path), "index").read() or {})
                           .get("runs", {}).values())
    for link in sorted(p for p in (store.home / "runs").glob("*") if p.is_symlink()):
        move(link)   # another run's folder under a second name: listed twice, exported as two seeds
    for run_id in sorted(store.run_ids()):
        path = store.run_file(run_id)
        with locked(path):   # not while the run is created or changed
            try:
                data = AtomicJSONStorage(str(path), "run").read()
            except StoreError:
                move(store.run_dir(run_id))
                continue
            if data is None or data.get("row") is None:   # no run file (yet): nothing to index
                continue
            row = data["row"]["1"]
            if row["id"] != run_id:   # a run's file copied into another folder: a second copy of that run
                move(store.run_dir(run_id))
                continue   # a live run's index row lags its epochs by design: only its absence counts
            if run_id not in indexed or (row["status"] not in LIVE and indexed[run_id] != row):
                checkup.reindexed.append(run_id)
                if fix:
                    store.write_index_row(row)
    for path in sorted(store.home.glob("*/**/.*.tmp")):   # atomic_write's: a writer killed mid-write
        pid = writer_of(path)
        if pid is not None and not pid_alive(pid):
            checkup.temporary.append(path)
            if fix:
                path.unlink(missing_ok=True)
    on_disk = store.run_ids() - {path.name for path, _ in checkup.quarantined if path.parent.name == "runs"}
    for row in indexed.values():
        if row["id"] not in on_disk:
            checkup.ghosts.append(row["id"])
            if fix:
                store.remove_index_row(row)
    return checkup

