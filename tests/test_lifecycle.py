"""A run's life from the command line: detach, list, kill -9, resume, stop, rm."""

import json
import os
import signal
import socket
import subprocess

import pytest
from conftest import MTM, SMALL_ARGS, listed, mtm, wait_for

EPOCHS = 12   # small epochs (SMALL, about 0.3 s each): the detached run is still mid-way when it is killed


def test_a_killed_run_resumes_with_each_epoch_recorded_once(mtm_env, tmp_path):
    reference = json.loads(mtm(["run", "--json", *SMALL_ARGS, "--set", f"train.epochs={EPOCHS}"], mtm_env, tmp_path).stdout)

    started = json.loads(mtm(["run", "--detach", "--json", *SMALL_ARGS, "--set", f"train.epochs={EPOCHS}"], mtm_env, tmp_path).stdout)
    run_id = started["run_id"]
    row = wait_for(lambda: (r := listed(mtm_env, tmp_path)[run_id])["epoch"] >= 2 and r)
    assert row["status"] == "running" and row["pid"]
    os.kill(row["pid"], signal.SIGKILL)
    wait_for(lambda: listed(mtm_env, tmp_path)[run_id]["status"] == "interrupted")

    resumed = json.loads(mtm(["resume", run_id[:5], "--json"], mtm_env, tmp_path).stdout)
    assert resumed["status"] == "finished"
    shown = json.loads(mtm(["show", run_id, "--json"], mtm_env, tmp_path).stdout)
    assert shown["status"] == "finished"
    assert [r["epoch"] for r in shown["records"]] == list(range(1, EPOCHS + 1))
    assert resumed["test_accuracy"] == pytest.approx(reference["test_accuracy"], abs=1e-6)
    assert resumed["final_test_accuracy"] == pytest.approx(reference["final_test_accuracy"], abs=1e-6)


def test_stop_is_graceful_and_resume_detached_finishes(mtm_env, tmp_path):
    run_id = json.loads(mtm(["run", "-d", "--json", *SMALL_ARGS, "--set", "train.epochs=1000"], mtm_env, tmp_path).stdout)["run_id"]
    wait_for(lambda: listed(mtm_env, tmp_path)[run_id]["epoch"] >= 1)
    out = mtm(["stop", run_id, "--wait", "60"], mtm_env, tmp_path)
    assert "stopped (interrupted)" in out.stdout
    row = listed(mtm_env, tmp_path)[run_id]
    assert row["status"] == "interrupted" and 1 <= row["epoch"] < 1000
    again = mtm(["stop", run_id], mtm_env, tmp_path, check=False)
    assert again.returncode == 1 and "is not running" in again.stderr

    mtm(["resume", run_id, "--detach"], mtm_env, tmp_path)
    wait_for(lambda: listed(mtm_env, tmp_path)[run_id]["epoch"] > row["epoch"])
    mtm(["stop", run_id, "--wait", "60"], mtm_env, tmp_path)
    records = json.loads(mtm(["show", run_id, "--json"], mtm_env, tmp_path).stdout)["records"]
    epochs = [r["epoch"] for r in records]
    assert epochs == list(range(1, len(epochs) + 1))


def test_rm_asks_unless_yes_and_unknown_ids_are_one_line(mtm_env, tmp_path):
    run_id = json.loads(mtm(["run", "--json", *SMALL_ARGS, "--set", "train.epochs=1"], mtm_env, tmp_path).stdout)["run_id"]
    refused = mtm(["rm", run_id], mtm_env, tmp_path, check=False)
    assert refused.returncode == 1 and run_id in listed(mtm_env, tmp_path)
    mtm(["rm", run_id, "--yes"], mtm_env, tmp_path)
    assert run_id not in listed(mtm_env, tmp_path)
    unknown = mtm(["show", "nope"], mtm_env, tmp_path, check=False)
    assert unknown.returncode == 1
    assert unknown.stderr.strip().splitlines() == [
        f"error: no run 'nope' (by id or name) in {tmp_path / 'home'}; `mtm list` shows the runs"]


def test_a_queued_run_can_be_stopped_before_it_starts(mtm_env, tmp_path):
    started = json.loads(mtm(["run", "-d", "--json", "--seeds", "2", *SMALL_ARGS, "--set", "train.epochs=1000"], mtm_env, tmp_path).stdout)
    first, second = started["run_ids"]
    mtm(["stop", second], mtm_env, tmp_path)             # queued behind the first (one CPU slot): out of the queue
    row = listed(mtm_env, tmp_path)[second]
    assert row["status"] == "interrupted" and "before it started" in row["message"] and "queue_place" not in row
    wait_for(lambda: listed(mtm_env, tmp_path)[first]["epoch"] >= 1)
    mtm(["stop", first, "--wait", "60"], mtm_env, tmp_path)
    assert listed(mtm_env, tmp_path)[second]["epoch"] == 0   # it never ran
    mtm(["resume", second, "--detach"], mtm_env, tmp_path)   # resuming forgets the old stop request
    wait_for(lambda: listed(mtm_env, tmp_path)[second]["epoch"] >= 1)
    mtm(["stop", second, "--wait", "60"], mtm_env, tmp_path)


def test_ctrl_c_of_mtm_run_says_how_to_resume_and_how_to_start_the_seeds_after_it(mtm_env, tmp_path):
    # far more epochs than polling can take to see the first one (each `mtm list` starts a Python): never ends first
    # Ctrl-C at a terminal: SIGINT in its default disposition, even where the suite itself was started in the
    # background of a script (`pytest &`), whose children inherit SIGINT ignored, as POSIX shells set it up.
    process = subprocess.Popen(MTM + ["run", "--seeds", "3", *SMALL_ARGS, "--set", "train.epochs=100000"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=mtm_env, cwd=tmp_path,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    run_id = wait_for(lambda: next(iter(listed(mtm_env, tmp_path)), None))
    wait_for(lambda: listed(mtm_env, tmp_path)[run_id]["epoch"] >= 1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert stderr.strip().splitlines()[-2:] == [
        f"interrupted; resume with `mtm resume {run_id[:8]}`",
        f"seeds 1, 2 never started; start them with `mtm run {' '.join(SMALL_ARGS)} --set train.epochs=100000 "
        f"--set train.seed=1 --seeds 2`"]
    assert listed(mtm_env, tmp_path)[run_id]["status"] == "interrupted" and len(listed(mtm_env, tmp_path)) == 1


def test_a_foreground_run_killed_in_its_first_second_is_interrupted_at_once_and_resumes(mtm_env, tmp_path):
    """It was created with no pid (its owner was recorded after torch's import), so it stayed `running` for the
    heartbeat's 150 s, and `mtm resume` was refused."""
    process = subprocess.Popen(MTM + ["run", *SMALL_ARGS, "--set", "train.epochs=1"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=mtm_env, cwd=tmp_path)
    runs = tmp_path / "home" / "runs"
    wait_for(lambda: runs.is_dir() and any(runs.iterdir()), timeout=60)
    process.kill()   # most likely still importing torch; in any case before its first epoch ends
    process.wait(timeout=30)
    (run_id,) = listed(mtm_env, tmp_path)
    assert listed(mtm_env, tmp_path)[run_id]["status"] == "interrupted"
    resumed = json.loads(mtm(["resume", run_id[:8], "--json"], mtm_env, tmp_path).stdout)
    assert resumed["status"] == "finished"


def test_two_resumes_of_one_run_never_both_train(mtm_env, tmp_path):
    run_id = json.loads(mtm(["run", "-d", "--json", *SMALL_ARGS, "--set", "train.epochs=1000"], mtm_env, tmp_path).stdout)["run_id"]
    wait_for(lambda: listed(mtm_env, tmp_path)[run_id]["epoch"] >= 1)
    mtm(["stop", run_id, "--wait", "60"], mtm_env, tmp_path)
    first = subprocess.Popen(MTM + ["resume", run_id], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env=mtm_env, cwd=tmp_path)
    wait_for(lambda: listed(mtm_env, tmp_path)[run_id]["status"] == "running")
    second = mtm(["resume", run_id], mtm_env, tmp_path, check=False)
    assert second.returncode == 1
    assert second.stderr.strip().splitlines() == [
        f"error: run {run_id} is running (pid {first.pid} on {socket.gethostname()}); "
        f"`mtm stop {run_id}` stops it"]
    mtm(["stop", run_id, "--wait", "60"], mtm_env, tmp_path)
    first.wait(timeout=60)


def test_stop_of_a_run_whose_process_is_gone_records_it_interrupted(mtm_env, tmp_path):
    run_id = json.loads(mtm(["run", "-d", "--json", *SMALL_ARGS, "--set", "train.epochs=1000"], mtm_env, tmp_path).stdout)["run_id"]
    pid = wait_for(lambda: (r := listed(mtm_env, tmp_path)[run_id])["status"] == "running" and r["pid"])
    os.kill(pid, signal.SIGKILL)
    out = mtm(["stop", run_id], mtm_env, tmp_path)
    assert "its process had ended already; recorded as interrupted: stopped (interrupted)" in out.stdout
    assert json.loads(mtm(["show", run_id, "--json"], mtm_env, tmp_path).stdout)["status"] == "interrupted"
