"""The store: concurrent writers, atomicity, corrupt files, stale runs, id prefixes, filters."""

import json
import multiprocessing as mp
import socket
import subprocess
import sys
import time

import pytest

from mtm_engine.errors import MtmError
from mtm_engine.store import Store, StoreError, parse_where


def _row(**over):
    row = {"name": "r", "status": "running", "dataset": "digits", "backbone": "convnet", "loss": "push_pull",
           "epochs": 30, "epoch": 0, "best_val": None, "test_acc": None, "host": socket.gethostname(), "pid": None}
    return {**row, **over}


def _writer(home, n, epochs):
    store = Store(home)
    own = f"own{n:04d}"
    store.create_run(own, {"spec": {}, "seed": n}, _row())
    for epoch in range(1, epochs + 1):
        store.append_epoch(own, {"epoch": epoch, "acc": epoch / 100}, {"epoch": epoch})
        store.append_epoch("shared00", {"epoch": n * 1000 + epoch, "by": n}, {})


def test_eight_concurrent_writers_lose_nothing(tmp_path):
    store = Store(tmp_path)
    store.create_run("shared00", {"spec": {}, "seed": 0}, _row())
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), n, 15)) for n in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    rows = store.rows()
    assert sorted(r["id"] for r in rows) == [*(f"own{n:04d}" for n in range(8)), "shared00"]
    for n in range(8):
        assert [r["epoch"] for r in store.records(f"own{n:04d}")] == list(range(1, 16))
        assert store.row(f"own{n:04d}")["epoch"] == 15
    shared = [r["epoch"] for r in store.records("shared00")]
    assert shared == sorted(n * 1000 + e for n in range(8) for e in range(1, 16))
    for path in tmp_path.rglob("*.json"):
        json.loads(path.read_text())   # every file is whole, valid JSON
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_repeated_epoch_replaces_its_record(tmp_path):
    store = Store(tmp_path)
    store.create_run("abcd1234", {"spec": {}, "seed": 0}, _row())
    store.append_epoch("abcd1234", {"epoch": 1, "acc": 0.1}, {})
    store.append_epoch("abcd1234", {"epoch": 1, "acc": 0.2}, {})
    assert store.records("abcd1234") == [{"epoch": 1, "acc": 0.2}]


@pytest.mark.parametrize("content, message", [
    ("{not json", "is corrupt (not valid JSON)"),
    ('{"runs": {}}', "is not an mtm index file"),
])
def test_a_corrupt_or_foreign_store_file_is_named_and_left_alone(tmp_path, content, message):
    store = Store(tmp_path)
    store.create_run("abcd1234", {"spec": {}, "seed": 0}, _row())
    shard = next((tmp_path / "index").glob("*.json"))
    shard.write_text(content)
    with pytest.raises(StoreError) as info:
        store.rows()
    assert str(shard) in str(info.value) and message in str(info.value)
    with pytest.raises(StoreError):
        store.update("abcd1234", status="finished")   # a status change writes the index shard
    assert shard.read_text() == content


def test_a_corrupt_run_file_is_named(tmp_path):
    store = Store(tmp_path)
    store.create_run("abcd1234", {"spec": {}, "seed": 0}, _row())
    run_file = tmp_path / "runs" / "abcd1234" / "run.json"
    run_file.write_text(run_file.read_text()[:-20])   # cut short, as by a full disk
    with pytest.raises(StoreError, match=f"store file {run_file} is corrupt"):
        store.append_epoch("abcd1234", {"epoch": 1}, {"epoch": 1})


def test_a_dead_running_run_shows_as_interrupted(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store = Store(tmp_path)
    store.create_run("deadpid0", {"spec": {}, "seed": 0}, _row(pid=dead.pid))
    store.create_run("alivepid", {"spec": {}, "seed": 0}, _row(pid=subprocess.os.getpid()))
    store.create_run("farstale", {"spec": {}, "seed": 0}, _row(host="elsewhere", pid=1))
    store.create_run("farfresh", {"spec": {}, "seed": 0}, _row(host="elsewhere", pid=1))
    store.update("farstale", heartbeat=time.time() - 3600)
    status = {r["id"]: r["status"] for r in store.rows()}
    assert status == {"deadpid0": "interrupted", "alivepid": "running", "farstale": "interrupted",
                      "farfresh": "running"}
    assert store.meta("deadpid0") and Store(tmp_path).row("deadpid0")["status"] == "interrupted"   # persisted


def test_prefixes_resolve_or_list_the_candidates(tmp_path):
    store = Store(tmp_path)
    for run_id in ("abc11111", "abc22222", "ffff0000"):
        store.create_run(run_id, {"spec": {}, "seed": 0}, _row(status="finished"))
    assert store.resolve("ff") == "ffff0000"
    with pytest.raises(StoreError, match="ambiguous: abc11111, abc22222"):
        store.resolve("abc")
    with pytest.raises(StoreError, match="no run 'zz'"):
        store.resolve("zz")


def test_where_filters_compare_numbers_and_text():
    assert parse_where("best_val>0.9")({"best_val": 0.95})
    assert not parse_where("best_val>0.9")({"best_val": None})
    assert parse_where("loss==push_pull")({"loss": "push_pull"})
    assert not parse_where("epoch<=3")({"epoch": 4})
    with pytest.raises(MtmError, match="expected FIELD OP VALUE"):
        parse_where("best_val")
