"""The queue of detached runs and its slots, with real runs in real processes."""

import contextlib
import json
import os
import signal
from pathlib import Path

import pytest
from conftest import SMALL_ARGS, listed, mtm, wait_for

SMALL = ["--set", "train.epochs=1", *SMALL_ARGS]   # a run is mostly its start


@pytest.mark.long   # five runs through two slots; the fast suite keeps the slot tests below (a killed worker's slot)
def test_five_runs_on_two_slots_never_overlap_more_than_two_and_all_finish(mtm_env, tmp_path):
    started = json.loads(mtm(["run", "-d", "--json", "--seeds", "5", "--slots", "2", *SMALL], mtm_env, tmp_path).stdout)
    run_ids = started["run_ids"]
    assert len(run_ids) == 5
    places = [listed(mtm_env, tmp_path)[i].get("queue_place") for i in run_ids]
    assert [p for p in places if p] == sorted(p for p in places if p)   # first queued, first placed

    rows = wait_for(lambda: all((r := listed(mtm_env, tmp_path))[i]["status"] == "finished" for i in run_ids) and r,
                    timeout=240)
    assert {rows[i]["slot"] for i in run_ids} <= {0, 1}
    assert all(rows[i]["epoch"] == 1 for i in run_ids)
    # At every run's start, at most one other run was between its own start and end.
    spans = [(rows[i]["started"], rows[i]["ended"]) for i in run_ids]
    for start, _ in spans:
        assert sum(s <= start < e for s, e in spans) <= 2


def test_a_killed_worker_frees_its_slot_for_the_next_queued_run(mtm_env, tmp_path):
    def detach(epochs):
        return json.loads(mtm(["run", "-d", "--json", "--slots", "2", *SMALL_ARGS, "--set", f"train.epochs={epochs}"],
                              mtm_env, tmp_path).stdout)["run_id"]

    long_a, long_b, short = detach(1000), detach(1000), detach(1)   # small epochs: about 0.2 s each
    rows = wait_for(lambda: all((r := listed(mtm_env, tmp_path))[i]["status"] == "running" and r[i]["pid"]
                                for i in (long_a, long_b)) and r)
    assert rows[short]["status"] == "queued" and rows[short]["queue_place"] == 1
    os.kill(rows[long_b]["pid"], signal.SIGKILL)
    rows = wait_for(lambda: (r := listed(mtm_env, tmp_path))[short]["status"] == "finished" and r, timeout=120)
    assert rows[long_b]["status"] == "interrupted"
    assert rows[long_a]["status"] == "running"   # the short run took the freed slot, not the live one's
    assert rows[short]["slot"] == rows[long_b]["slot"]
    mtm(["stop", long_a, "--wait", "60"], mtm_env, tmp_path)


def test_each_gpu_slot_pins_its_run_with_cuda_visible_devices(mtm_env, tmp_path):
    """On a CPU machine two pretend GPUs still show the pinning: each run's process sees only its
    slot's GPU (torch finds no CUDA here, so the runs train on the CPU)."""
    env = {**mtm_env, "CUDA_VISIBLE_DEVICES": "0,1"}
    run_ids = json.loads(mtm(["run", "-d", "--json", "--seeds", "2", "--gpus", "0,1", *SMALL], env, tmp_path).stdout)["run_ids"]
    rows = wait_for(lambda: all((r := listed(env, tmp_path))[i]["status"] == "finished" for i in run_ids) and r)
    assert sorted(rows[i]["slot_device"] for i in run_ids) == ["gpu:0", "gpu:1"]
    for run_id in run_ids:
        log = (tmp_path / "home" / "runs" / run_id / "log.txt").read_text()
        assert f"CUDA_VISIBLE_DEVICES='{rows[run_id]['slot_device'][4:]}'" in log


@pytest.mark.parametrize("args, says", [
    (["-d", "--gpus", "7"], "--gpus 7: no GPU 7 here; visible GPUs: none"),
    (["-d", "--per-gpu", "0"], "--per-gpu 0: give at least 1 slot per GPU"),
    (["-d", "--slots", "2", "--gpus", "0"], "--slots gives CPU slots; it cannot be combined with --gpus"),
    (["-d", "--per-gpu", "2"], "--per-gpu 2: no GPU is visible here; use --slots N"),
    (["--slots", "2"], "add --detach"),
])
def test_bad_slot_options_are_one_line_and_write_nothing(mtm_env, tmp_path, args, says):
    env = {k: v for k, v in mtm_env.items() if k != "CUDA_VISIBLE_DEVICES"}
    env["PATH"] = "/usr/bin:/bin"   # no nvidia-smi: no GPU is visible
    out = mtm(["run", *args], env, tmp_path, check=False)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0]
    assert not (tmp_path / "home" / "runs").exists() and not (tmp_path / "home" / "queue").exists()



def test_sigterm_stops_one_run_gracefully_and_its_sibling_seeds_stay_queued(mtm_env, tmp_path):
    started = json.loads(mtm(["run", "-d", "--json", "--seeds", "2", "--slots", "1", *SMALL_ARGS, "--set", "train.epochs=1000"],
                             mtm_env, tmp_path).stdout)
    first, second = started["run_ids"]
    pid = wait_for(lambda: (r := listed(mtm_env, tmp_path)[first])["epoch"] >= 1 and r["pid"])
    assert listed(mtm_env, tmp_path)[second]["status"] == "queued"
    os.kill(pid, signal.SIGTERM)
    row = wait_for(lambda: (r := listed(mtm_env, tmp_path)[first])["status"] == "interrupted" and r)
    assert row["epoch"] >= 1 and "stopped" in row["message"]   # graceful: its whole epochs stay recorded
    assert listed(mtm_env, tmp_path)[second]["status"] in ("queued", "running")   # a run of its own: not lost
    mtm(["stop", second, "--wait", "60"], mtm_env, tmp_path)


def test_the_pool_ends_when_the_only_queued_run_has_a_damaged_run_json(tmp_path, capsys):
    """It logged a line a second for ever (its set of unreadable runs started empty at every pass), and every
    `mtm list` restarted it."""
    import threading

    from mtm_engine.config import load_spec
    from mtm_engine.runner import create_run
    from mtm_engine.store import Store
    from mtm_tui.services.jobs import drain

    store = Store(tmp_path)
    run_id = create_run(store, load_spec(), status="queued")
    (store.run_dir(run_id) / "run.json").write_text("{")
    pool = threading.Thread(target=drain, args=(store,), daemon=True)
    pool.start()
    pool.join(timeout=30)
    assert not pool.is_alive()
    assert capsys.readouterr().out.count(f"skipped run {run_id}") == 1


def _pool_pids(home) -> list[int]:
    """The pids of this home's pool processes (`mtm pool --home HOME`), from /proc."""
    pids = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if b"pool" in argv and str(Path(home).resolve()).encode() in argv:
                pids.append(int(proc.name))
    return pids


def test_a_killed_pool_is_replaced_by_the_last_worker_and_by_logs_follow(mtm_env, tmp_path):
    """Issue 27, item 8: queued runs stalled after the pool was killed, until someone ran `mtm list`, and
    `mtm logs -f` of a queued run never returned. Here nothing lists: the store is read in this process."""
    from mtm_engine.store import Store

    home = Path(mtm_env["MTM_HOME"])
    store = Store(home)
    status = lambda run_id: {r["id"]: r for r in store.rows()}[run_id]   # noqa: E731  (pure: restarts nothing)

    def detach(epochs):
        return json.loads(mtm(["run", "-d", "--json", "--slots", "1", *SMALL_ARGS, "--set", f"train.epochs={epochs}"],
                              mtm_env, tmp_path).stdout)["run_id"]

    first, second, third = detach(6), detach(1000), detach(1)
    wait_for(lambda: status(first)["status"] == "running" and status(first)["pid"] and _pool_pids(home))
    for pid in _pool_pids(home):
        os.kill(pid, signal.SIGKILL)
    assert status(first)["status"] == "running"   # killed while the first trained: its worker must replace it
    # the first run's worker, at its end, starts a pool for the queue it leaves
    worker = wait_for(lambda: (r := status(second))["status"] == "running" and r["pid"], timeout=120)
    assert status(first)["status"] == "finished" and status(third)["status"] == "queued"

    # now no pool and no worker: the pool killed again, the second run's worker too
    wait_for(lambda: _pool_pids(home))
    for pid in _pool_pids(home) + [worker]:
        os.kill(pid, signal.SIGKILL)
    followed = mtm(["logs", "-f", third], mtm_env, tmp_path)
    assert followed.returncode == 0, followed.stderr
    assert f"run {third[:8]} is queued: waiting for a slot" in followed.stderr
    assert "finished" in followed.stdout and status(third)["status"] == "finished"
    assert status(second)["status"] == "interrupted"


@pytest.mark.parametrize("damage", [lambda path: path.mkdir(), lambda path: path.write_text('{"slots": "gpu:7"}'),
                                    lambda path: path.write_text('{"slots": ["cpu", "tpu:0"]}')])
def test_a_damaged_slot_list_is_one_line_and_queues_nothing(mtm_env, tmp_path, damage):
    """A folder planted as queue/slots.json failed `mtm run -d` after queueing its run, and every pool started for
    it died: the run stayed queued for ever (issue 27's attacks). A string was split into slots g, p, u, :, 7."""
    queue = tmp_path / "home" / "queue"
    queue.mkdir(parents=True)
    damage(queue / "slots.json")
    out = mtm(["run", "-d", *SMALL], mtm_env, tmp_path, check=False)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1 and "is not a slot list" in lines[0], out.stderr
    assert not (tmp_path / "home" / "runs").exists()


def test_relative_paths_mean_the_folder_a_run_was_launched_from(mtm_env, tmp_path):
    """Issue 28, item 1: the pool started from folder A ran a run launched from folder B with B's relative
    `folder:imgs` looked up in A. Paths are made absolute when a run is created, with the folder recorded."""
    from PIL import Image

    from mtm_engine.store import Store

    a, b = tmp_path / "A", tmp_path / "B"
    for k in range(2):
        (b / "imgs" / f"class{k}").mkdir(parents=True)
        for i in range(10):
            Image.new("L", (8, 8), color=40 + 180 * k + i).save(b / "imgs" / f"class{k}" / f"{i}.png")
    a.mkdir()
    long = json.loads(mtm(["run", "-d", "--json", "--slots", "2", *SMALL_ARGS, "--set", "train.epochs=1000"],
                          mtm_env, a).stdout)["run_id"]   # the pool now runs in A
    wait_for(lambda: listed(mtm_env, a)[long]["status"] == "running")
    short = json.loads(mtm(["run", "-d", "--json", *SMALL, "--set", "data.dataset=folder:imgs"], mtm_env,
                           b).stdout)["run_id"]
    row = wait_for(lambda: (r := listed(mtm_env, b)[short])["status"] not in ("queued", "running") and r, timeout=120)
    assert row["status"] == "finished", row["message"]
    meta = Store(Path(mtm_env["MTM_HOME"])).meta(short)
    assert meta["spec"]["data"]["dataset"] == f"folder:{b / 'imgs'}" and meta["launched_from"] == str(b)
    assert meta["spec"]["data"]["root"] == str(b / "data")
    mtm(["stop", long, "--wait", "60"], mtm_env, a)
