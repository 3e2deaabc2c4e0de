import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The real MNIST / Fashion-MNIST next to the project; absent in a user's fresh clone."""
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATA} (only on the project's machines)")
    return SHARED_DATA


@pytest.fixture
def mtm_env(tmp_path) -> dict[str, str]:
    """Environment for running `mtm` in a subprocess with its own home."""
    env = dict(os.environ, MTM_HOME=str(tmp_path / "home"), PYTHONUNBUFFERED="1")
    env.pop("MTM_DEBUG", None)
    return env


MTM = [sys.executable, "-m", "mtm_tui.cli"]


def pytest_collection_modifyitems(items):
    """Ray tests run one after another on one xdist worker (two local Ray clusters on 2 cores starve each other),
    and first, with the TUI's tests next: the Ray tests' minutes of training then overlap the TUI tests' waiting
    for the screen on the other worker, instead of either ending the suite alone. Otherwise in file order."""
    for item in items:
        if item.get_closest_marker("ray"):
            item.add_marker(pytest.mark.xdist_group("ray"))
    items.sort(key=lambda item: (item.get_closest_marker("ray") is None, not item.module.__name__.startswith("test_tui")))


# A small network on smaller images: an epoch of the embedded digits in about 0.2 s instead of 1.2 s, for tests of
# what happens around training (queue, stop, resume, eval), not of what it learns.
SMALL = ["model.width=4", "model.dim=16", "data.size=16"]
SMALL_ARGS = [arg for key in SMALL for arg in ("--set", key)]


# --- helpers shared by the test modules ------------------------------------------------------------

def mtm(args, env, cwd, check=True):
    out = subprocess.run(MTM + args, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def listed(env, cwd, sweep=None):
    """What `mtm list --json` shows (dead runs reaped, a killed pool restarted), read in this process: polling
    with a new `mtm` process each time would take a core from the runs being watched."""
    from mtm_engine.store import Store
    from mtm_tui.commands.base import matching_runs

    return {r["id"]: r for r in matching_runs(Store(Path(env["MTM_HOME"])), None, None, None, [], sweep)}


def wait_for(predicate, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError("timed out")


# --- the TUI's: a fixture store, a fixed clock, and waiting on the screen -----------------------------

NOW = 1_795_000_000.0   # the fixture store's clock: ages render the same on every run


async def until(pilot, predicate, timeout=90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await pilot.pause(0.2)
    raise AssertionError("timed out waiting for the UI")


def fake_records(epochs, classifiers=("cos", "cos_ce", "euc", "euc_ce"), start=0.6):
    out = []
    for e in range(1, epochs + 1):
        acc = start + (0.98 - start) * (1 - 0.6 ** e)
        r = {"epoch": e, "train_loss": 10 / e}
        for i, c in enumerate(classifiers):
            r[f"val_acc_{c}"], r[f"test_acc_{c}"] = acc - i / 200, acc - i / 150
        for split in ("val", "test"):
            r.update({f"{split}_cluster_size": 5 * 0.8 ** e, f"{split}_centre_distance": 12 * 0.9 ** e,
                      f"{split}_centre_separation": 20 * 0.9 ** e, f"{split}_median_cosine": 0.5 + e / 40,
                      f"{split}_ce_gap": 1 / e})
        r.update(ce_separation=22 * 0.9 ** e, epoch_time_s=1.5, images_per_s=2000.0, train_time_s=1.0,
                 eval_time_s=0.5)
        out.append(r)
    return out


def fake_snapshot(n=60):
    import math

    labels = [i % 3 for i in range(n)]
    points = [[3 * math.cos(2 * math.pi * k / 3) + 0.3 * math.sin(i), 3 * math.sin(2 * math.pi * k / 3) + 0.3 * math.cos(i)]
              for i, k in enumerate(labels)]
    centres = [[3 * math.cos(2 * math.pi * k / 3), 3 * math.sin(2 * math.pi * k / 3)] for k in range(3)]
    return {"epoch": 5, "points": points, "labels": labels, "centres": centres,
            "class_embeddings": [[x * 1.1, y * 1.1] for x, y in centres], "explained_variance": [0.6, 0.3]}


@pytest.fixture
def fixture_home(tmp_path, monkeypatch):
    """Three finished runs with fixed ids, times, records and an embedding snapshot."""
    from mtm_engine.config import load_spec
    from mtm_engine.runner import create_run
    from mtm_engine.store import Store

    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    store = Store(home)
    runs = [("aaaa1111", ["name=pp-digits"], fake_records(8)),
            ("bbbb2222", ["name=euclid", "loss.name=euclidean", "train.lr=0.0005"], fake_records(6, start=0.5)),
            ("cccc3333", ["name=pure", "model.head=pure", "loss.name=cross_entropy"],
             fake_records(5, ("cos", "euc", "pure"), start=0.4))]
    for n, (run_id, overrides, records) in enumerate(runs):
        spec = load_spec(overrides=overrides)
        create_run(store, spec, status="running", run_id=run_id, extra={"git": None})
        for r in records:
            store.append_epoch(run_id, r, {"epoch": r["epoch"], "best_val": r["val_acc_cos"],
                                           "test_acc": r["test_acc_cos"], "best_epoch": r["epoch"]})
        store.update(run_id, status="finished", created=NOW - 3600 * (n + 1), device="cpu", host="fixture")
        (store.run_dir(run_id) / "embedding-last.json").write_text(json.dumps(fake_snapshot()))
    return home


def fixture_app(home):
    from mtm_tui.app import MtmApp

    # relative to the current folder (tmp_path in the snapshot tests), so that the header reads the same anywhere
    return MtmApp(Path(os.path.relpath(home)), clock=lambda: NOW, host="fixture")


async def settle(pilot, seconds=1.5):
    """Let the screen show its first poll (however loaded the machine), then its timers and animations run."""
    await until(pilot, lambda: getattr(pilot.app.screen, "polled", True), timeout=30)
    await pilot.pause(seconds)
    await pilot.wait_for_scheduled_animations()
