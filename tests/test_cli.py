"""`mtm run` as a user runs it: a subprocess, from an empty folder."""

import json
import subprocess

from conftest import MTM, SMALL, SMALL_ARGS


def run_mtm(args, env, cwd):
    return subprocess.run(MTM + args, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_mtm_run_trains_the_quickstart_and_prints_json(mtm_env, tmp_path):
    out = run_mtm(["run", "--json", "--set", "train.epochs=4"], mtm_env, tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["status"] == "finished" and result["epochs"] == 4
    acc = result["test_accuracy"]
    assert set(acc) == {"cos", "cos_ce", "euc", "euc_ce"}
    assert min(acc.values()) > 0.5 and max(acc.values()) > 0.85      # chance is 0.1
    assert (tmp_path / "home" / "runs" / result["run_id"] / "checkpoint.pt").is_file()


def test_bad_config_is_one_line_without_a_traceback(mtm_env, tmp_path):
    out = run_mtm(["run", "--set", "loss.r=1.5"], mtm_env, tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "error: loss.r = 1.5: push_pull needs r < 1 (at r >= 1 the loss is unbounded below); try 0.95"]
    debug = run_mtm(["run", "--set", "loss.r=1.5", "--debug"], mtm_env, tmp_path)
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_missing_config_file(mtm_env, tmp_path):
    out = run_mtm(["run", "absent.toml"], mtm_env, tmp_path)
    assert out.returncode == 1 and out.stderr.startswith("error: config file absent.toml does not exist")


def test_seeds_run_one_after_another_and_report_mean_and_std(mtm_env, tmp_path):
    out = run_mtm(["run", "--json", "--seeds", "2", *SMALL_ARGS, "--set", "train.epochs=1"], mtm_env, tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(result["run_ids"]) == 2 and result["seeds"] == 2
    assert set(result["test_accuracy_mean"]) == {"cos", "cos_ce", "euc", "euc_ce"}
    listed = json.loads(run_mtm(["list", "--json"], mtm_env, tmp_path).stdout)
    assert sorted(r["seed"] for r in listed) == [0, 1]


def test_a_run_records_its_provenance(mtm_env, tmp_path):
    """Commit, dirty flag and the patch of a dirty tree (from a checkout), package and torch versions,
    and the device; an installed wheel has no git, and records none."""
    from importlib import metadata

    run_id = json.loads(run_mtm(["run", "--json", "--threads", "1", "--set", "train.epochs=1", "--set", "model.width=4"],
                                mtm_env, tmp_path).stdout)["run_id"]
    shown = json.loads(run_mtm(["show", run_id, "--json"], mtm_env, tmp_path).stdout)
    assert shown["versions"]["mtm"] == metadata.version("mtm-workbench") and shown["versions"]["torch"]
    assert shown["device"] == "cpu"
    # what the numbers depend on beyond spec and seed: the threads chosen, the CPU, the kernel libraries
    assert shown["machine"]["threads"] == 1 and shown["machine"]["cpu"] and "blas" in shown["machine"]
    detached = run_mtm(["run", "-d", "--threads", "1"], mtm_env, tmp_path)
    assert detached.returncode == 1 and "slot's share of the cores" in detached.stderr
    patch = tmp_path / "home" / "runs" / run_id / "source.patch"
    if shown["git"] is None:   # installed from the wheel
        assert shown["git_dirty"] is None and not patch.exists()
    else:
        assert len(shown["git"]) == 40 and shown["git_dirty"] == patch.exists()


def test_tags_notes_sort_limit_diff_logs_and_eval(mtm_env, tmp_path):
    small = ["--set", "train.epochs=2", *SMALL_ARGS]
    a = json.loads(run_mtm(["run", "--json", *small], mtm_env, tmp_path).stdout)["run_id"]
    b = json.loads(run_mtm(["run", "--json", *small, "--set", "train.lr=0.003"], mtm_env, tmp_path).stdout)["run_id"]
    assert run_mtm(["tag", a[:8], "baseline", "cpu"], mtm_env, tmp_path).returncode == 0
    assert run_mtm(["tag", a[:8], "cpu", "--untag"], mtm_env, tmp_path).returncode == 0
    assert run_mtm(["note", b[:8], "higher lr"], mtm_env, tmp_path).returncode == 0

    def ids(*args):
        return [r["id"] for r in json.loads(run_mtm(["list", "--json", *args], mtm_env, tmp_path).stdout)]

    assert ids("--tag", "baseline") == [a] and ids("--tag", "cpu") == []
    assert ids("--where", "note=higher lr") == [b] and ids("--where", "note~HIGHER") == [b]
    by_name = run_mtm(["show", "quickstart", "--json"], mtm_env, tmp_path)   # both are named so: the newest
    assert json.loads(by_name.stdout)["id"] == b and "2 runs are named 'quickstart': taking the newest" in by_name.stderr
    # mtm note said "shown by mtm show", and nothing showed it (issue 28, item 3)
    assert "note: higher lr" in run_mtm(["show", b[:8]], mtm_env, tmp_path).stdout
    assert "tags: baseline" in run_mtm(["show", a[:8]], mtm_env, tmp_path).stdout
    assert ids("--sort", "-created", "--limit", "1") == [b] and ids("--sort", "created") == [a, b]
    unknown = run_mtm(["list", "--where", "nosuchfield>1"], mtm_env, tmp_path)
    assert unknown.returncode == 1 and "unknown field 'nosuchfield'" in unknown.stderr
    nothing = run_mtm(["list", "--tag", "absent"], mtm_env, tmp_path)
    assert nothing.returncode == 0 and nothing.stdout.strip() == "no runs match"

    diff = json.loads(run_mtm(["diff", a[:8], b[:8], "--json"], mtm_env, tmp_path).stdout)
    assert diff["spec"] == {"train.lr": [0.002, 0.003]} and set(diff["best"][a]) == {"cos", "cos_ce", "euc", "euc_ce"}
    no_log = run_mtm(["logs", a[:8]], mtm_env, tmp_path)
    assert no_log.returncode == 1 and "it ran in the foreground" in no_log.stderr

    evaluated = json.loads(run_mtm(["eval", a[:8], "--checkpoint", "last", "--json"], mtm_env, tmp_path).stdout)
    assert evaluated["epoch"] == 2 and evaluated["recomputed"] == evaluated["recorded"]
    mirrored = json.loads(run_mtm(["eval", a[:8], "--checkpoint", "last", "--json", "--set", "eval.flip_tta=true"],
                                  mtm_env, tmp_path).stdout)
    assert mirrored["recomputed"]["test_cluster_size"] != mirrored["recorded"]["test_cluster_size"]
    retrain = run_mtm(["eval", a[:8], "--set", "train.lr=1"], mtm_env, tmp_path)
    assert retrain.returncode == 1 and "changes only how the weights are evaluated" in retrain.stderr


def test_list_at_80_columns_cuts_no_number_and_no_status(mtm_env, tmp_path):
    from mtm_engine.config import load_spec
    from mtm_engine.runner import create_run
    from mtm_engine.store import Store

    store = Store(tmp_path / "home")
    for name in ("a-rather-long-experiment-name", "x"):
        run_id = create_run(store, load_spec(overrides=[f"name={name}"]), status="finished")
        store.update(run_id, status="interrupted", best_val=1.0, test_acc=0.99443, epoch=15)
    out = run_mtm(["list"], {**mtm_env, "COLUMNS": "80"}, tmp_path).stdout.splitlines()
    assert out[0].split() == ["id", "name", "status", "dataset", "net", "loss", "d", "epoch", "val%", "test%", "age"]
    assert all(len(line) <= 80 and "100.00" in line and "99.44" in line and "interrupted" in line for line in out[1:])


def test_eval_refuses_a_best_checkpoint_older_than_the_recorded_best_epoch(mtm_env, tmp_path):
    """A kill between recording an epoch and keeping its weights left the older best.pt, which eval, certainty
    and few-shot then measured without a word (the row said best epoch 2; best.pt held epoch 1)."""
    import torch

    from mtm_engine.config import load_spec
    from mtm_engine.runner import create_run, execute
    from mtm_engine.store import Store

    store = Store(tmp_path / "home")
    run_id = create_run(store, load_spec(overrides=["train.epochs=2", *SMALL]))
    execute(store, run_id)
    best = store.run_dir(run_id) / "best.pt"
    kept = torch.load(best, weights_only=True)
    selected = store.row(run_id)["best_epoch"]
    torch.save({**kept, "epoch": 3 - selected}, best)   # the other epoch: as if this one's write never landed
    for extra in ([], ["--certainty"]):
        out = run_mtm(["eval", run_id[:8], *extra], mtm_env, tmp_path)
        assert out.returncode == 1 and f"holds epoch {3 - selected}, but the run's selected epoch is " \
                                       f"{selected}" in out.stderr and "--checkpoint last" in out.stderr
    assert run_mtm(["eval", run_id[:8], "--checkpoint", "last"], mtm_env, tmp_path).returncode == 0


def test_piped_output_keeps_whole_lines(mtm_env, tmp_path):
    """Issue 28, item 5: `mtm list | grep` missed names cut to "fashion-…" at 80 columns, and `mtm run > log`
    wrapped each epoch line. Piped, nothing is cut or wrapped."""
    from pathlib import Path

    from mtm_engine.config import load_spec
    from mtm_engine.runner import create_run
    from mtm_engine.store import Store

    mtm_env = {k: v for k, v in mtm_env.items() if k != "COLUMNS"}   # a shell exports none; pytest's workers may
    name = "fashion-mnist-proximity-with-a-name-longer-than-any-column"
    run_id = create_run(Store(Path(mtm_env["MTM_HOME"])), load_spec(overrides=[f"name={name}"]), status="finished")
    listed = run_mtm(["list"], mtm_env, tmp_path).stdout
    assert any(run_id[:8] in line and name in line for line in listed.splitlines()), listed
    log = run_mtm(["run", "--set", "train.epochs=1", *SMALL_ARGS], mtm_env, tmp_path).stdout
    epoch = next(line for line in log.splitlines() if line.lstrip().startswith("epoch 1/1"))
    assert "val cos" in epoch and epoch.rstrip().endswith("s") and "img/s" in epoch, log   # one line, unwrapped


def test_a_run_is_cloned_and_relaunched_from_another_failed_or_not(mtm_env, tmp_path):
    """Issue 28, item 8: `mtm run --from RUN --set ...` starts from another run's spec (here a failed one, found by
    its name), changed by --set."""
    from pathlib import Path

    from mtm_engine.config import load_spec
    from mtm_engine.runner import create_run
    from mtm_engine.store import Store

    store = Store(Path(mtm_env["MTM_HOME"]))
    failed = create_run(store, load_spec(overrides=["name=too-fast", "train.lr=0.003", "model.width=4", "model.dim=16",
                                                    "data.size=16"]), status="failed")
    out = run_mtm(["run", "--from", "too-fast", "--json", "--set", "train.epochs=1", "--set", "name=slower",
                   "--set", "train.lr=0.001"], mtm_env, tmp_path)
    assert out.returncode == 0, out.stderr
    clone = store.meta(json.loads(out.stdout)["run_id"])
    assert clone["name"] == "slower" and clone["spec"]["train"]["lr"] == 0.001 and clone["spec"]["train"]["epochs"] == 1
    assert clone["spec"]["model"] == store.meta(failed)["spec"]["model"]   # the rest as the run it came from
    both = run_mtm(["run", "experiments/x.toml", "--from", "too-fast"], mtm_env, tmp_path)
    assert both.returncode == 1 and "two starting points; give one" in both.stderr
