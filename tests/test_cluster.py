"""Sweeps on a real Ray cluster of two nodes on this machine: a head (`ray start --head`) and a
second node (`ray start --address`), each with its own temp dir and one CPU. Only the Ray
processes these tests start are stopped (by their temp dir and their children), never with a
machine-wide `ray stop`."""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import MTM

from mtm_engine.records import BEST, CHECKPOINT, SNAPSHOTS
from mtm_engine.store import Store

pytestmark = [pytest.mark.ray, pytest.mark.long]
RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_of(folder: str) -> set[int]:
    """The processes whose command line names `folder` (gcs, raylet, agents), and all their children."""
    parents: dict[int, int] = {}
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if folder in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.add(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    found.discard(os.getpid())
    while True:   # workers are the raylet's children: their own command lines are "ray::IDLE"
        more = {pid for pid, parent in parents.items() if parent in found} - found
        if not more:
            return found
        found |= more


def _kill(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Cluster:
    def __init__(self):
        # Short paths: Ray's unix sockets live under the temp dir (at most 107 characters).
        self.root = tempfile.mkdtemp(prefix="mtmray", dir="/tmp")
        self.head_dir, self.node_dir = f"{self.root}/h", f"{self.root}/n"
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        common = ["--num-cpus=1", "--num-gpus=0", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
        # Ray's token auth, as a cluster's owner would keep it: the head makes the token (~/.ray/auth_token),
        # and the second node and the driver need RAY_AUTH_MODE=token to send it.
        self.env = {**os.environ, "RAY_AUTH_MODE": "token"}
        try:
            subprocess.run([RAY, "start", "--head", f"--port={self.port}", f"--temp-dir={self.head_dir}",
                            "--include-dashboard=false", *common], check=True, capture_output=True, timeout=120,
                           env=self.env)
            subprocess.run([RAY, "start", f"--address={self.address}", f"--temp-dir={self.node_dir}", *common],
                           check=True, capture_output=True, timeout=120, env=self.env)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        _kill(_processes_of(self.node_dir))
        _kill(_processes_of(self.head_dir))


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    yield c
    c.stop()


def tune(args, env, cwd, timeout=400):
    env = {**env, "RAY_AUTH_MODE": "token"}   # the cluster's auth (the token is in ~/.ray/auth_token)
    return subprocess.run(MTM + ["tune", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def test_a_sweep_runs_on_both_nodes_keeps_every_trial_whole_and_a_failing_trial_fails_alone(cluster, mtm_env,
                                                                                            tmp_path):
    """Four trials: two on the embedded digits, run one on each node; two on MNIST from a data root
    without it (a node without the dataset), which fail with the data error while the others go on.
    Ray's files go to tune.storage (a folder beside the home), the trials' files into the store."""
    empty = tmp_path / "no-data"
    empty.mkdir()
    config = tmp_path / "sweep.toml"
    config.write_text(f"""
name = "cluster"
[data]
root = "{empty}"
download = false
[model]
width = 4
[train]
epochs = 2
[tune]
num_samples = 2
max_epochs = 2
search = "random"
scheduler = "none"
[tune.space]
"data.dataset" = {{grid = ["digits", "mnist"]}}
""")
    shared = tmp_path / "shared"
    out = tune([str(config), "--address", cluster.address, "--storage", str(shared), "--json"], mtm_env, tmp_path)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    sweep = summary["sweep_id"]
    store = Store(tmp_path / "home")
    trials = [r for r in store.rows() if r.get("sweep") == sweep]
    assert len(trials) == 4
    finished = [r for r in trials if r["status"] == "finished"]
    failed = [r for r in trials if r["status"] == "failed"]
    assert len(finished) == 2 and len(failed) == 2
    assert {r["dataset"] for r in finished} == {"digits"} and {r["dataset"] for r in failed} == {"mnist"}
    for r in failed:   # the trial's own one-line error
        assert "mnist" in r["message"] and "download" in r["message"], r["message"]
    assert len({r["node"] for r in finished}) == 2, [r.get("node") for r in finished]   # both nodes trained
    for r in finished:   # first-class runs: records, weights and snapshots in HOME/runs/<id>
        assert [e["epoch"] for e in store.records(r["id"])] == [1, 2]
        assert r["device"] == "cpu" and r["pid"] is None   # the driver let go of it when it finished
        for name in (CHECKPOINT, BEST, *SNAPSHOTS.values()):
            assert (store.run_dir(r["id"]) / name).is_file(), name
        evaluated = subprocess.run(MTM + ["eval", r["id"], "--json"], capture_output=True, text=True, env=mtm_env,
                                   cwd=tmp_path, timeout=300)
        assert evaluated.returncode == 0, evaluated.stderr
    assert (shared / sweep / "ray").is_dir()                       # Ray's state went to the storage given
    assert not (tmp_path / "home" / "sweeps" / sweep / "ray").exists()


def test_storage_that_cannot_be_written_is_one_line_and_leaves_no_sweep(cluster, mtm_env, tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    out = tune(["--address", cluster.address, "--storage", str(tmp_path / "a-file" / "sweeps"), "--samples", "1",
                "--epochs", "1"], mtm_env, tmp_path, timeout=120)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1 and "is not a folder" in lines[0], out.stderr
    assert not (tmp_path / "home" / "sweeps").exists()


def test_a_lost_node_fails_its_trial_and_resume_completes_every_epoch_once(mtm_env, tmp_path):
    """kill -9 of the second node's raylet mid-sweep: its trial is recorded failed with its error;
    `mtm tune --resume` (on the head that is left) continues it from its last checkpoint."""
    c = Cluster()
    try:
        epochs = 12
        config = tmp_path / "sweep.toml"
        config.write_text(f"""
name = "lost-node"
[model]
width = 4
[train]
epochs = {epochs}
[tune]
num_samples = 2
max_epochs = {epochs}
search = "random"
scheduler = "none"
plateau_results = {epochs + 1}
""")
        driver = subprocess.Popen(MTM + ["tune", str(config), "--address", c.address, "--json"], env=c.env | mtm_env,
                                  cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        store = Store(tmp_path / "home")
        deadline = time.time() + 240
        while time.time() < deadline:   # both trials are training, each past its first epoch
            rows = [r for r in store.rows() if r.get("sweep")] if (tmp_path / "home").exists() else []
            if len(rows) == 2 and all(r["epoch"] >= 2 for r in rows):
                break
            time.sleep(0.5)
        else:
            raise AssertionError("the two trials never got going")
        # The driver owns its trials: their rows name its process, so a reader sees them live (never interrupted).
        assert all(r["pid"] == driver.pid and r["status"] == "running" for r in rows), rows
        raylets = {pid for pid in _processes_of(c.node_dir)
                   if b"raylet" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]}
        assert raylets
        _kill(raylets)
        out, err = driver.communicate(timeout=300)
        # Ray's core prints the lost raylet's last log lines on the driver's stdout; the summary is the JSON line.
        sweep = json.loads(next(line for line in reversed(out.splitlines()) if line.startswith("{")))["sweep_id"]
        rows = {r["id"]: r for r in store.rows() if r.get("sweep") == sweep}
        lost = [r for r in rows.values() if r["status"] == "failed"]
        assert len(lost) == 1 and lost[0]["message"], rows
        resumed = tune(["--resume", sweep, "--address", c.address, "--json"], mtm_env, tmp_path)
        assert resumed.returncode == 0, resumed.stderr
        for run_id in rows:
            assert store.row(run_id)["status"] == "finished"
            assert [e["epoch"] for e in store.records(run_id)] == list(range(1, epochs + 1))
    finally:
        c.stop()


@pytest.mark.parametrize("auth", [{"RAY_AUTH_MODE": "disabled"}, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64}],
                         ids=["missing-token", "wrong-token"])
def test_a_missing_or_wrong_token_is_one_line_and_leaves_no_sweep(cluster, mtm_env, tmp_path, auth):
    out = subprocess.run(MTM + ["tune", "--address", cluster.address, "--samples", "1", "--epochs", "1"],
                         capture_output=True, text=True, env={**mtm_env, **auth}, cwd=tmp_path, timeout=200)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1, out.stderr
    assert "refused this driver's auth token (InvalidAuthToken)" in lines[0] and "RAY_AUTH_MODE=token" in lines[0]
    assert not (tmp_path / "home" / "sweeps").exists()


def test_storage_a_node_does_not_share_is_refused_in_one_line_naming_the_node(cluster, mtm_env, tmp_path):
    """Issue 27, item 14: a node whose tune.storage is its own disk (here: a third node in a mount namespace of its
    own, with a tmpfs over the folder) failed each trial placed on it at its first checkpoint, with a 60-line Ray
    traceback on the driver's terminal. Every node now writes a probe there first, and the driver looks for it."""
    shared = tmp_path / "shared"
    shared.mkdir()
    node_dir = f"{cluster.root}/x"
    start = (f"mount -t tmpfs tmpfs {shared} && exec {RAY} start --address={cluster.address} --temp-dir={node_dir} "
             f"--num-cpus=1 --num-gpus=0 --node-ip-address=127.0.0.1 --disable-usage-stats")
    subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", start], check=True, capture_output=True,
                   timeout=120, env=cluster.env)
    try:
        out = tune(["--address", cluster.address, "--storage", str(shared), "--samples", "1", "--epochs", "1"],
                   mtm_env, tmp_path, timeout=300)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 1 and len(lines) == 1, out.stderr
        assert lines[0].startswith(f"error: tune.storage {shared} is not shared with node "), lines[0]
        assert not (tmp_path / "home" / "sweeps").exists() and list(shared.iterdir()) == []   # probes removed
    finally:
        _kill(_processes_of(node_dir))
