"""Result tables against hand-written Markdown, from a small fixture store."""

import csv
import json
import subprocess

from conftest import MTM

from mtm_engine.config import load_spec
from mtm_engine.export import build_tables, to_markdown
from mtm_engine.runner import create_run
from mtm_engine.store import Store


def record(epoch, val, test, classifiers=("cos", "cos_ce", "euc", "euc_ce"), seconds=30.0):
    r = {"epoch": epoch, "epoch_time_s": seconds}
    for i, c in enumerate(classifiers):
        r[f"val_acc_{c}"] = val - i / 1000
        r[f"test_acc_{c}"] = test - i / 1000
    return r


def fixture_store(home):
    store = Store(home)
    mnist = ["data.dataset=mnist", "model.backbone=resnet18"]
    # RN18-PP, two seeds. Seed 0: validation peaks at epoch 1, test at epoch 2.
    runs = [
        (mnist + ["train.seed=0", "name=pp-mnist"], [record(1, 0.990, 0.9900), record(2, 0.980, 0.9950)]),
        (mnist + ["train.seed=1", "name=pp-mnist"], [record(1, 0.970, 0.9800), record(2, 0.985, 0.9850)]),
        (mnist + ["model.head=pure", "loss.name=cross_entropy", "name=pure-mnist"],
         [record(1, 0.95, 0.9600, ("cos", "euc", "pure"), 45.0), record(2, 0.96, 0.9700, ("cos", "euc", "pure"), 45.0)]),
    ]
    for overrides, records in runs:
        spec = load_spec(overrides=overrides)
        run_id = create_run(store, spec, status="finished")
        for r in records:
            store.append_epoch(run_id, r, {"epoch": r["epoch"]})
    return store


EXPECTED_VAL = """\
**MNIST**: test accuracy (%) at the epoch with the best validation accuracy; mean ± std over seeds

| MNIST | cos | cos_ce | euc | euc_ce | pure | min/run |
|---|---|---|---|---|---|---|
| RN18-PP · pp-mnist | 98.75 ± 0.35 | 98.65 ± 0.35 | 98.55 ± 0.35 | 98.45 ± 0.35 | - | 1.0 |
| RN18-P · pure-mnist | 97.00 | - | 96.90 | - | 96.80 | 1.5 |

Chosen on validation (among the rows with 2 seeds, the loss with class embeddings and the classifier with the best mean validation accuracy, 98.75): **RN18-PP · pp-mnist `cos`**, test 98.75 ± 0.35
"""


def test_markdown_follows_the_paper_layout(tmp_path):
    store = fixture_store(tmp_path)
    runs = [(store.meta(r["id"])["spec"], store.records(r["id"])) for r in store.rows()]
    assert to_markdown(build_tables(runs, "val")) == EXPECTED_VAL
    # seed 0 selects epoch 2 by test accuracy (99.50), seed 1 epoch 2 (98.50): mean 99.00
    max_test = to_markdown(build_tables(runs, "max-test"), "max-test")
    assert "OPTIMISTIC" in max_test and "| RN18-PP · pp-mnist | 99.00 ± 0.71 |" in max_test


def test_the_headline_cell_is_chosen_on_validation_never_on_test():
    """E: validation 95 (cos), test 97; PP: validation 96, test 90 (cos); a pure head and a single seed with
    higher validation are not candidates. By hand: PP `cos` (validation 96.00), test 90.00."""
    def runs(overrides, val, test, seeds=2, head=()):
        return [(load_spec(overrides=[*overrides, f"train.seed={s}", *head]).to_dict(),
                 [record(1, val, test, ("cos", "euc", "pure") if head else ("cos", "cos_ce", "euc", "euc_ce"))])
                for s in range(seeds)]
    tables = build_tables(
        runs(["loss.name=euclidean"], 0.95, 0.97) + runs(["loss.name=push_pull"], 0.96, 0.90)
        + runs(["loss.name=cross_entropy"], 0.99, 0.99, head=["model.head=pure"])
        + runs(["loss.name=cosine"], 0.995, 0.80, seeds=1), "val")
    row, column = tables[0].chosen_on_validation()
    assert (row.label, column) == ("CNN-PP", "cos") and row.cells["cos"] == [90.0, 90.0]
    assert build_tables(runs(["loss.name=euclidean"], 0.95, 0.97), "final")[0].chosen_on_validation() is None
    # a pure baseline with more seeds than any MTM row does not hide the choice
    more = build_tables(runs(["loss.name=euclidean"], 0.95, 0.97)
                        + runs(["loss.name=cross_entropy"], 0.99, 0.99, seeds=3, head=["model.head=pure"]), "val")
    assert more[0].chosen_on_validation()[0].label == "CNN-E"


def test_mtm_export_compares_with_the_paper(tmp_path, mtm_env):
    fixture_store(tmp_path / "home")
    out = subprocess.run(MTM + ["export", "--compare-paper"], capture_output=True, text=True, env=mtm_env,
                         cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    # Table 6: RN18-PP on MNIST is 99.55 (cos); RN18-P pure is 99.50
    assert "| RN18-PP · pp-mnist | 98.75 ± 0.35 (99.55) |" in out.stdout
    assert "96.80 (99.50) | 1.5 |" in out.stdout
    as_csv = subprocess.run(MTM + ["export", "--format", "csv", "--out", "t.csv"], capture_output=True, text=True,
                            env=mtm_env, cwd=tmp_path, timeout=120)
    assert as_csv.returncode == 0 and (tmp_path / "t.csv").read_text().startswith("dataset,model,seeds,cos_mean")
    # the CSV keeps each row's runs (ids and names) and minutes a run: 2 epochs of 30 s, and of 45 s
    rows = {r["model"]: r for r in csv.DictReader((tmp_path / "t.csv").open())}
    ids = {r["id"]: r["name"] for r in json.loads(subprocess.run(MTM + ["list", "--json"], capture_output=True,
                                                                  text=True, env=mtm_env, cwd=tmp_path).stdout)}
    assert (rows["RN18-PP"]["min_per_run"], rows["RN18-P"]["min_per_run"]) == ("1.00", "1.50")
    assert (rows["RN18-PP"]["names"], rows["RN18-P"]["names"]) == ("pp-mnist", "pure-mnist")
    assert sorted(rows["RN18-PP"]["run_ids"].split() + rows["RN18-P"]["run_ids"].split()) == sorted(ids)
    assert {ids[i] for i in rows["RN18-PP"]["run_ids"].split()} == {"pp-mnist"}
    one = json.loads(subprocess.run(MTM + ["list", "--json"], capture_output=True, text=True, env=mtm_env,
                                    cwd=tmp_path).stdout)[0]["id"]
    report = subprocess.run(MTM + ["export", one, "--format", "markdown"], capture_output=True, text=True,
                            env=mtm_env, cwd=tmp_path)
    assert report.returncode == 0 and report.stdout.startswith(f"# Run {one}") and "## Per epoch" in report.stdout


def test_a_run_stored_before_a_key_existed_groups_with_runs_that_have_its_default():
    """Specs are stored as they were: a key added later (data.holdout_classes, eval.retrieval) is absent from
    older runs. They are the same configuration as new runs at that key's default, and different from one
    that changed it."""
    from mtm_engine.config import load_spec
    from mtm_engine.records import config_id, differing_keys

    new = load_spec(overrides=["train.seed=1"]).to_dict()
    old = load_spec().to_dict()
    del old["data"]["holdout_classes"], old["eval"]["retrieval"]
    assert config_id(old) == config_id(new) and differing_keys([old, new]) == ["train.seed"]
    other = load_spec(overrides=["data.holdout_classes=[9]"]).to_dict()
    assert config_id(other) != config_id(old) and differing_keys([old, other]) == ["data.holdout_classes"]
    comparison = load_spec(overrides=["loss.name=comparison"]).to_dict()   # no r: a stored 0.95 changes nothing
    assert config_id({**comparison, "loss": {**comparison["loss"], "r": 0.95}}) == config_id(comparison)


def test_measures_put_each_configuration_s_figures_side_by_side():
    """mtm export --measures: mean ± std over seeds of the figures at the validation-selected epoch and of
    the kept measurements, by hand; a measurement missing for a seed is left out of its cell, not zero."""
    import torch

    from mtm_engine.export import measures_markdown
    from mtm_engine.measures.certainty import softmax_scores

    msp = next(iter(softmax_scores(torch.zeros(1, 2))))   # the name analysis.certainty gives the pure head's MSP

    mtm = load_spec(overrides=["data.dataset=mnist"]).to_dict()
    pure = load_spec(overrides=["data.dataset=mnist", "model.head=pure", "loss.name=cross_entropy"]).to_dict()

    def records(val, test, sigma):   # epoch 2 is chosen on validation: its figures count, not epoch 1's
        return [{"epoch": 1, "val_acc_cos": 0.5, "test_acc_cos": 0.5, "val_acc_pure": 0.5, "test_acc_pure": 0.5,
                 "test_cluster_size": 9.0, "test_map_at_r": 0.1},
                {"epoch": 2, "val_acc_cos": val, "test_acc_cos": test, "val_acc_pure": val, "test_acc_pure": test,
                 "test_cluster_size": sigma, "test_map_at_r": 0.8}]

    def certainty(own, auroc, gaussian_ood):
        return {"ece": 0.02, "scores": {own: {"misclassification_auroc": auroc, "aurc": 0.01, "ood_auroc": 0.9},
                                        "gaussian": {"ood_auroc": gaussian_ood}}}

    held = load_spec(overrides=["data.dataset=mnist", "data.holdout_classes=[8,9]"]).to_dict()
    fewshot = {"ways": 2, "held_out": [8, 9], "episodes": 600, "features": {
        "trained": {"1": {"accuracy": 0.7}, "5": {"accuracy": 0.8, "generalised_old": 0.95, "generalised_new": 0.5}},
        "pixels": {"5": {"accuracy": 0.75}}}}
    text = measures_markdown([
        (mtm, records(0.9, 0.91, 1.0), {"certainty": certainty("distance C", 0.8, 0.96), "fewshot": None}),
        ({**mtm, "train": {**mtm["train"], "seed": 1}}, records(0.9, 0.93, 3.0),
         {"certainty": certainty("distance C", 0.9, 0.98)}),
        (pure, records(0.9, 0.95, 2.0), {"certainty": certainty(msp, 0.85, 0.99)}),
        (held, records(0.9, 0.99, 1.0), {"fewshot": fewshot}),
    ])
    lines = text.splitlines()
    # acc 92.00 ± 1.41 (91, 93); MAP@R 0.800 at epoch 2; σ 2.00 ± 1.41; error AUROC 0.85 ± 0.0707; Gaussian 0.97 ± 0.0141
    assert ("| CNN-PP | 2 | 92.00 ± 1.41 | - | 0.800 ± 0.000 | - | 2.00 ± 1.41 | - | 0.850 ± 0.071 | 0.0100 ± 0.0000 "
            "| 0.900 ± 0.000 | 0.970 ± 0.014 | 0.020 ± 0.000 |") in lines
    assert "| CNN-P | 1 | 95.00 | - | 0.800 | - | 2.00 | - | 0.850 | 0.0100 | 0.900 | 0.990 | 0.020 |" in lines
    assert not any(line.startswith("| CNN-PP (") for line in lines)   # the held-out run is not in the first table
    assert "| CNN-PP | 70.00 | 80.00 | - | - | 75.00 | 95.00 | 50.00 |" in lines
