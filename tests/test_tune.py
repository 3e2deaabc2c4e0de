"""Sweeps on Ray Tune, for real: Ray starts, trials train, the driver records them in the store."""

import json
import signal
import subprocess
import time

import pytest
from conftest import MTM, listed

from mtm_engine.errors import MtmError

pytestmark = pytest.mark.ray

FAST = ["--set", "train.batch_size=128", "--set", "model.dim=32", "--set", "model.width=4", "--set", "data.size=16"]


def mtm(args, env, cwd, check=True, timeout=600):
    out = subprocess.run(MTM + args, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


def trials(env, cwd, sweep):
    return list(listed(env, cwd, sweep).values())


@pytest.mark.long   # a minute of four trials; `mtm tune` itself stays in the fast suite (the tests below)
def test_a_four_trial_sweep_records_every_trial(mtm_env, tmp_path):
    summary = json.loads(mtm(["tune", "--samples", "4", "--epochs", "2", "--refit", "--json", *FAST],
                             mtm_env, tmp_path).stdout)
    assert summary["trials"] == 4 and summary["status"] == {"finished": 4}
    refit = summary["refit"]   # the best config, re-trained on train+validation for its selected epochs
    assert refit["status"] == "finished" and set(refit["test_accuracy"]) == {"cos", "cos_ce", "euc", "euc_ce"}
    refit_run = json.loads(mtm(["show", refit["run_id"], "--json"], mtm_env, tmp_path).stdout)
    assert refit_run["spec"]["data"]["val_fraction"] == 0.0
    assert len(refit_run["records"]) == summary["best"]["best_epoch"]
    assert not any(k.startswith("val_") for k in refit_run["records"][0])
    rows = trials(mtm_env, tmp_path, summary["sweep_id"])
    assert len(rows) == 4 and all(r["epoch"] >= 1 and r["sweep"] == summary["sweep_id"] for r in rows)
    lrs = {json.loads(mtm(["show", r["id"], "--json"], mtm_env, tmp_path).stdout)["spec"]["train"]["lr"] for r in rows}
    assert len(lrs) == 4   # HyperOpt drew four learning rates
    alone = mtm(["resume", rows[0]["id"]], mtm_env, tmp_path, check=False)   # a trial resumes with its sweep
    assert alone.returncode == 1 and f"`mtm tune --resume {summary['sweep_id']}`" in alone.stderr
    best = summary["best"]
    assert best["best_val"] == max(r["best_val"] for r in rows) and "train.lr" in best["config"]
    table = mtm(["export", "--sweep", summary["sweep_id"]], mtm_env, tmp_path).stdout
    assert "| CNN-PP (" in table   # four configurations, told apart by the keys that differ


FAILING = """
name = "failing"
[model]
dim = 16
[loss]
name = "proximity"
r = 0.5
[tune]
search = "random"
scheduler = "none"
num_samples = 1
max_epochs = 1
[tune.space]
"data.dataset" = {grid = ["digits", "folder:/nonexistent-mtm-test"]}
"loss.name" = {grid = ["proximity", "push_pull"]}   # each value is valid with the base r = 0.5, but
"loss.r" = {grid = [2.0]}                             # push_pull with r = 2.0 is an invalid draw
"""


def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(mtm_env, tmp_path):
    (tmp_path / "failing.toml").write_text(FAILING)
    out = mtm(["tune", "failing.toml", "--json"], mtm_env, tmp_path)
    summary = json.loads(out.stdout)
    assert summary["status"] == {"finished": 1, "failed": 3}
    failed = [r for r in trials(mtm_env, tmp_path, summary["sweep_id"]) if r["status"] == "failed"]
    assert any(r["message"] == "data.dataset = 'folder:/nonexistent-mtm-test': folder /nonexistent-mtm-test does "
               "not exist" for r in failed)
    assert sum(r["message"].startswith("loss.r = 2.0: push_pull needs r < 1") for r in failed) == 2
    assert all(r.get("node_ip") for r in trials(mtm_env, tmp_path, summary["sweep_id"]))   # failed ones' too
    # Ray's tracebacks stay off the terminal (they went to it, 40 lines a failed trial): in each trial's log instead
    assert "Traceback" not in out.stderr, out.stderr
    for r in failed:
        log = mtm(["logs", r["id"]], mtm_env, tmp_path).stdout
        assert 'File "' in log and r["message"] in log   # Ray's error file: the trial's stack, then its error


def test_an_interrupted_sweep_resumes_without_duplicates(mtm_env, tmp_path):
    # Epochs enough that the first trial is still training when Ctrl-C comes (3 tiny epochs could all end within
    # the 0.5 s between two looks).
    args = ["tune", "--samples", "2", "--epochs", "20", "--set", "tune.max_concurrent=1", "--set", "tune.scheduler=none",
            *FAST]
    driver = subprocess.Popen(MTM + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=mtm_env,
                              cwd=tmp_path)
    deadline = time.time() + 300
    sweep = None
    while time.time() < deadline and sweep is None:
        sweeps = list((tmp_path / "home" / "sweeps").glob("*/sweep.json"))
        if sweeps and any(r["epoch"] >= 1 for r in trials(mtm_env, tmp_path, sweeps[0].parent.name)):
            sweep = sweeps[0].parent.name
        time.sleep(0.5)
    assert sweep, "no trial reported an epoch"
    driver.send_signal(signal.SIGINT)
    output, _ = driver.communicate(timeout=120)
    assert driver.returncode == 130 and f"interrupted; resume with `mtm tune --resume {sweep}`" in output
    before = trials(mtm_env, tmp_path, sweep)
    assert 1 <= len(before) <= 2 and not all(r["status"] == "finished" for r in before), output

    summary = json.loads(mtm(["tune", "--resume", sweep, "--json"], mtm_env, tmp_path).stdout)
    after = trials(mtm_env, tmp_path, sweep)
    assert len(after) == 2 and summary["trials"] == 2
    assert {r["status"] for r in after} == {"finished"}
    for r in after:
        epochs = [e["epoch"] for e in json.loads(mtm(["show", r["id"], "--json"], mtm_env, tmp_path).stdout)["records"]]
        assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) >= 1


def test_an_address_where_nothing_listens_is_one_line_and_leaves_no_sweep(mtm_env, tmp_path):
    out = mtm(["tune", "--address", "127.0.0.1:9", "--samples", "1", "--epochs", "1"], mtm_env, tmp_path,
              check=False, timeout=120)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("error: cannot join the Ray cluster at 127.0.0.1:9: nothing "
                                                          "answers there")
    assert not (tmp_path / "home" / "sweeps").exists()


def test_gpus_per_trial_auto_follows_the_backbone_and_the_cluster():
    from mtm_engine.preflight import gpus_for

    assert gpus_for("auto", "resnet18", 0) == 0           # a machine without GPUs: never ask for one
    assert gpus_for("auto", "convnet", 8) == 0.25         # small backbones share a GPU four ways
    assert gpus_for("auto", "resnet18", 1) == 0.25
    assert gpus_for("auto", "resnet50", 2) == 1.0         # large ones take a whole GPU
    assert gpus_for("auto", "resnet152", 2) == 1.0
    assert gpus_for(0.5, "convnet", 0) == 0.5              # a number is taken as it is (refused later if too many)


def test_more_gpus_per_trial_than_the_cluster_has_is_one_line_and_no_sweep(mtm_env, tmp_path):
    out = mtm(["tune", "--samples", "1", "--epochs", "1", "--set", "tune.gpus_per_trial=0.5"], mtm_env, tmp_path,
              check=False, timeout=300)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and lines[-1].startswith("error: tune.gpus_per_trial = 0.5, but the largest node of the "
                                                        "Ray cluster has 0 GPUs"), out.stderr
    assert not (tmp_path / "home" / "sweeps").exists()


def test_a_trial_larger_than_every_node_is_refused_though_the_cluster_total_fits():
    """Issue 27, item 17: two nodes of 2 GPUs have 4 in all, but a trial runs on one node: 3 GPUs a trial stayed
    pending for ever. A dead node counts for nothing."""
    from mtm_engine.preflight import check_trials_fit

    nodes = [{"Alive": True, "Resources": {"CPU": 16.0, "GPU": 2.0}}, {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 2.0}},
             {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}]
    check_trials_fit(2, 16, nodes)   # fits the first node
    with pytest.raises(MtmError, match=r"^tune.gpus_per_trial = 3, but the largest node of the Ray cluster has 2 GPUs "
                                       r"\(4 in all, on 2 nodes\): a trial runs on one node"):
        check_trials_fit(3, 1, nodes)
    with pytest.raises(MtmError, match=r"^tune.cpus_per_trial = 20, but the largest node .* has 16 CPUs"):
        check_trials_fit(0, 20, nodes)


@pytest.mark.parametrize("mode, expected", [(0o644, 0o600), (0o600, 0o600)])
def test_a_ray_token_readable_by_others_is_made_the_owners_alone(tmp_path, mode, expected):
    from mtm_engine.preflight import tighten_token

    token = tmp_path / "auth_token"
    token.write_text("secret")
    token.chmod(mode)
    said = []
    tighten_token(token, said.append)
    assert token.stat().st_mode & 0o777 == expected
    assert said == ([f"{token} was readable by others (644): made it the owner's alone (600)"] if mode != expected else [])
    tighten_token(tmp_path / "absent", said.append)   # no token file: nothing to say


@pytest.mark.long   # a Ray of its own with a logical GPU, four trials: Ray's packing, checked in CI's long part
def test_fractional_gpus_pack_four_trials_onto_one_gpu(tmp_path):
    """Ray's GPU packing, on the CPU: a node with one logical GPU and tune.gpus_per_trial = 0.25 runs 4 trials at
    once (on the GPU machine, runs sharing a GPU are measured through the queue instead: Ray is not there)."""
    import ray

    from mtm_engine.preflight import check_resumable_here
    from mtm_engine.store import Store
    from mtm_engine.sweep_spec import load_sweep
    from mtm_engine.tune import run_sweep

    spec, settings = load_sweep(None, ["tune.num_samples=4", "tune.max_epochs=2", "tune.gpus_per_trial=0.25",
                                       "tune.cpus_per_trial=0.5", "tune.search=random", "tune.scheduler=none",
                                       "train.batch_size=128", "model.dim=16", "model.width=4"])
    ray.init(num_cpus=2, num_gpus=1, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
    try:
        summary = run_sweep(spec, settings, tmp_path / "home")
    finally:
        ray.shutdown()
    assert summary["status"] == {"finished": 4}
    rows = [r for r in Store(tmp_path / "home").rows() if r["sweep"] == summary["sweep_id"]]
    spans = [(r["started"], r["ended"]) for r in rows]
    assert len(spans) == 4 and max(sum(s <= t < e for s, e in spans) for t, _ in spans) == 4   # all 4 at once
    # issue 27, item 15: resumed where Ray has no GPU, its trials would have trained on CPUs without a word
    saved = Store(tmp_path / "home").sweep(summary["sweep_id"])
    assert saved["gpus_per_trial"] == 0.25 and saved["address"] is None
    with pytest.raises(MtmError, match=rf"^sweep {summary['sweep_id']} trained its trials on GPUs \(0.25 a trial\), "
                                       r"and this Ray cluster has none; resume it where it ran"):
        check_resumable_here(summary["sweep_id"], saved, 0)
    check_resumable_here(summary["sweep_id"], saved, 1)   # a GPU there: resumed


def test_a_sweep_that_trained_on_gpus_is_not_resumed_where_there_are_none():
    from mtm_engine.preflight import check_resumable_here

    saved = {"gpus_per_trial": 1.0, "address": "10.0.0.5:6379"}
    with pytest.raises(MtmError, match=r"^sweep ab12 trained its trials on GPUs \(1 a trial, on the cluster at "
                                       r"10.0.0.5:6379\), and this Ray cluster has none; resume it where it ran: "
                                       r"`mtm tune --resume ab12 --address 10.0.0.5:6379`$"):
        check_resumable_here("ab12", saved, 0)
    check_resumable_here("ab12", {"gpus_per_trial": 0, "address": None}, 0)   # a CPU sweep resumes on CPUs


def test_the_resume_hint_of_a_sweep_on_a_cluster_names_its_address():
    """Taken literally, the hint without --address started a local Ray and trained the rest on the driver's machine."""
    from mtm_tui.commands.sweeps import resume_command

    assert resume_command("abc", "10.0.0.5:6379") == "mtm tune --resume abc --address 10.0.0.5:6379"
    assert resume_command("abc", None) == "mtm tune --resume abc"


def test_resume_restores_only_a_sweep_no_one_else_can_write(tmp_path):
    """Issue 27, item 2: --resume unpickles the sweep's files (tuner.pkl, ...), so a planted one ran its code. A
    folder or file of the sweep's storage that another user owns or may write, or a link, is refused in one line."""
    import os

    from mtm_engine.preflight import check_restorable

    experiment = tmp_path / "sweep" / "ray"
    (experiment / "trial_0").mkdir(parents=True)
    for name in ("tuner.pkl", "trial_0/params.pkl"):
        (experiment / name).write_bytes(b"state")
        (experiment / name).chmod(0o644)
    check_restorable(str(experiment), None)   # ours alone: restored
    for damage, says in [
        (lambda: (experiment / "tuner.pkl").chmod(0o666), r"holds .*tuner.pkl writable by others \(666\)"),
        (lambda: (experiment / "trial_0").chmod(0o777), r"holds .*trial_0 writable by others \(777\)"),
        (lambda: os.chown(experiment / "trial_0" / "params.pkl", 4321, 4321), r"params.pkl owned by uid 4321"),
        (lambda: (experiment / "searcher.pkl").symlink_to(tmp_path / "elsewhere.pkl"), r"searcher.pkl a symbolic link"),
    ]:
        damage()
        with pytest.raises(MtmError, match=r"^sweep storage .*" + says + r": --resume unpickles its files, which runs "
                                           r"any code planted there"):
            check_restorable(str(experiment), None)
        for path in (experiment, *experiment.rglob("*")):   # mended for the next case
            if path.is_symlink():
                path.unlink()
            else:
                os.chown(path, os.getuid(), os.getgid())
                path.chmod(0o755 if path.is_dir() else 0o644)
    said = []
    check_restorable("s3://bucket/sweeps/abc/ray", said.append)
    assert said and "cannot check who can write there" in said[0]
