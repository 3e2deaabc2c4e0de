"""Few-shot episodes on held-out classes: the sampler, the accuracies by hand, the held-out split,
and `mtm eval --fewshot` with its refusals."""

import json

import pytest
import torch
from conftest import SMALL_ARGS

from mtm_engine.config import load_spec
from mtm_engine.data import load_dataset
from mtm_engine.measures.fewshot import Episode, episode_accuracy, generalised_accuracy, mean_ci, sample_episode


def test_episodes_draw_distinct_support_images_of_their_classes_and_repeat_with_the_seed():
    support_y = torch.arange(60) % 6          # classes 0..5, 10 images each
    query_y = torch.arange(30) % 6
    held = [3, 4, 5]
    a = sample_episode(support_y, query_y, held, ways=2, shots=4, queries=3, generator=torch.Generator().manual_seed(7))
    assert a.support.shape == (2, 4) and a.query.shape == (2, 3)
    assert set(a.classes.tolist()) <= set(held)
    for n, k in enumerate(a.classes.tolist()):
        assert (support_y[a.support[n]] == k).all() and (query_y[a.query[n]] == k).all()
        assert len(set(a.support[n].tolist())) == 4            # no image twice in a support set
    b = sample_episode(support_y, query_y, held, ways=2, shots=4, queries=3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a.support, b.support) and torch.equal(a.query, b.query)


def test_episode_and_generalised_accuracy_by_hand():
    support_e = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 4.0]])   # class 7: (2, 0); class 8: (0, 3)
    query_e = torch.tensor([[5.0, 0.1], [0.1, 1.0], [1.0, 0.9]])
    episode = Episode(torch.tensor([7, 8]), torch.tensor([[0, 1], [2, 3]]), torch.tensor([[0], [2]]))
    # query 0 (class 7) at (5, .1): nearest (2, 0), right; query 2 (class 8) at (1, .9): euclidean nearest (2, 0), wrong
    assert episode_accuracy(support_e, query_e, episode, "euc") == 0.5
    # old class 0 centre at (-3, 0); test images: one of class 0, one of 7, one of 8
    test_e, test_y = torch.tensor([[-2.0, 0.0], [2.5, 0.0], [-2.0, 1.5]]), torch.tensor([0, 7, 8])
    old, new = generalised_accuracy(torch.tensor([[-3.0, 0.0]]), support_e, episode, test_e, test_y, [0], "euc")
    # (-2, 1.5), of class 8: 1.80 from class 0's (-3, 0), 2.50 from class 8's (0, 3): wrong; the other two right
    assert old == 1.0 and new == 0.5
    mean, ci = mean_ci([0.5, 0.7])
    assert mean == pytest.approx(0.6) and ci == pytest.approx(1.96 * 0.1414213562 / 1.4142135624, rel=1e-6)


def test_held_out_classes_leave_every_split_and_the_rest_are_renumbered():
    full = load_dataset(load_spec().data)
    part = load_dataset(load_spec(overrides=["data.holdout_classes=[1, 3]"]).data)
    assert part.classes == ["0", "2", "4", "5", "6", "7", "8", "9"]
    for name in ("train", "val", "test"):
        whole, kept = getattr(full, name), getattr(part, name)
        keep = ~torch.isin(whole.y, torch.tensor([1, 3]))
        assert torch.equal(kept.x, whole.x[keep])   # the same images in the same order: the split is unchanged
        assert torch.equal(torch.tensor([int(part.classes[i]) for i in kept.y]), whole.y[keep])


def test_mtm_eval_fewshot_measures_trained_and_random_features_and_refuses_bad_input(mtm_env, tmp_path):
    from test_cli import run_mtm

    held = ["--set", "data.holdout_classes=[5,6,7,8,9]", "--set", "train.epochs=2", *SMALL_ARGS]
    run_id = json.loads(run_mtm(["run", "--json", *held], mtm_env, tmp_path).stdout)["run_id"][:8]
    out = run_mtm(["eval", run_id, "--fewshot", "1", "--fewshot", "5", "--episodes", "20", "--json"], mtm_env, tmp_path)
    result = json.loads(out.stdout)
    assert result["held_out"] == [5, 6, 7, 8, 9] and result["ways"] == 5 and result["episodes"] == 20
    for features in ("trained", "random", "pixels"):
        for k in ("1", "5"):
            row = result["features"][features][k]
            assert 0.2 <= row["accuracy"] <= 1 and row["ci95"] > 0   # 5 ways: chance is 0.2
    assert result["features"]["trained"]["5"]["generalised_old"] > result["features"]["random"]["5"]["generalised_old"]
    # kept in the run's folder; a later K joins the earlier ones; the run's report shows them all
    later = json.loads(run_mtm(["eval", run_id, "--fewshot", "2", "--episodes", "20", "--json"], mtm_env, tmp_path).stdout)
    assert list(later["features"]["trained"]) == ["1", "2", "5"]
    assert later["features"]["trained"]["5"] == result["features"]["trained"]["5"]
    other = run_mtm(["eval", run_id, "--fewshot", "1", "--episodes", "5"], mtm_env, tmp_path)   # never silently
    assert other.returncode == 1 and "keeps a few-shot measurement with episodes 20" in other.stderr
    assert "--force" in other.stderr
    report = run_mtm(["export", run_id], mtm_env, tmp_path).stdout
    five = result["features"]["pixels"]["5"]
    assert "## Few-shot" in report and f"| pixels | 5 | {100 * five['accuracy']:.2f} ± {100 * five['ci95']:.2f} |" in report

    too_many = run_mtm(["eval", run_id, "--fewshot", "200", "--episodes", "20"], mtm_env, tmp_path)
    assert too_many.returncode == 1 and "has only" in too_many.stderr and "choose K <=" in too_many.stderr
    missing = run_mtm(["run", "--set", "data.holdout_classes=[12]"], mtm_env, tmp_path)
    assert missing.returncode == 1 and "class 12 does not exist; digits has classes 0..9" in missing.stderr
    every = json.loads(run_mtm(["run", "--json", *SMALL_ARGS, "--set", "train.epochs=1"], mtm_env, tmp_path).stdout)["run_id"][:8]
    refused = run_mtm(["eval", every, "--fewshot", "1"], mtm_env, tmp_path)
    assert refused.returncode == 1 and "data.holdout_classes" in refused.stderr
