"""Parameter importance of a sweep (mtm_engine/importance.py) against hand computations."""

import math

import pytest

from mtm_engine.importance import average_ranks, eta_squared, importance, spearman

# Five scored trials and one without an accuracy (running, or failed).
#   lr    1e-4  1e-2  1e-3  1e-5  1e-1   ranks 2 4 3 1 5
#   dim    300   200   400   500   100   ranks 3 2 4 5 1
#   opt    sgd  adam  adam   sgd  adam
#   acc   0.80  0.95  0.90  0.70  0.85   ranks 2 5 4 1 3
TRIALS = [
    ({"train.lr": 1e-4, "model.dim": 300, "train.opt": "sgd", "train.seed": 0}, 0.80),
    ({"train.lr": 1e-2, "model.dim": 200, "train.opt": "adam", "train.seed": 0}, 0.95),
    ({"train.lr": 1e-3, "model.dim": 400, "train.opt": "adam", "train.seed": 0}, 0.90),
    ({"train.lr": 1e-5, "model.dim": 500, "train.opt": "sgd", "train.seed": 0}, 0.70),
    ({"train.lr": 1e-1, "model.dim": 100, "train.opt": "adam", "train.seed": 0}, 0.85),
    ({"train.lr": 5e-1, "model.dim": 900, "train.opt": "sgd", "train.seed": 0}, None),
]


def test_ranks_average_over_ties():
    # sorted: 1 (rank 1), 3 (rank 2), 5 and 5 share ranks 3 and 4 -> 3.5
    assert average_ranks([5, 1, 5, 3]) == [3.5, 1, 3.5, 2]
    assert average_ranks([7, 7, 7]) == [2, 2, 2]


def test_spearman_with_a_tie():
    # x ranks 1, 2.5, 2.5, 4 and y ranks 1, 2, 3, 4; both means 2.5
    # deviations x: -1.5 0 0 1.5; y: -1.5 -0.5 0.5 1.5
    # sxy = 2.25 + 2.25 = 4.5; sxx = 4.5; syy = 2.25 + 0.25 + 0.25 + 2.25 = 5 -> rho = 4.5 / sqrt(22.5) = 3 / sqrt(10)
    assert spearman([1, 2, 2, 3], [0.1, 0.2, 0.3, 0.4]) == pytest.approx(3 / math.sqrt(10))


def test_eta_squared_by_hand():
    # mean 0.84; sgd: 0.80, 0.70 (mean 0.75); adam: 0.95, 0.90, 0.85 (mean 0.90)
    # between = 2 (0.75 - 0.84)^2 + 3 (0.90 - 0.84)^2 = 0.0162 + 0.0108 = 0.027
    # total = 0.04^2 + 0.11^2 + 0.06^2 + 0.14^2 + 0.01^2 = 0.037 -> 27/37
    score, best = eta_squared(["sgd", "adam", "adam", "sgd", "adam"], [0.80, 0.95, 0.90, 0.70, 0.85])
    assert score == pytest.approx(27 / 37)
    assert best == "adam"


def test_importance_of_a_five_trial_sweep():
    result = importance(TRIALS)
    by_name = {imp.param: imp for imp in result}
    # lr: d = rank(lr) - rank(acc) = 0 -1 -1 0 2, sum d^2 = 6 -> rho = 1 - 6*6 / (5 * 24) = 0.7
    assert by_name["train.lr"].rho == pytest.approx(0.7)
    assert by_name["train.lr"].score == pytest.approx(0.7)
    # dim: d = 1 -3 0 4 -2, sum d^2 = 30 -> rho = 1 - 6*30 / 120 = -0.5; the score is its size
    assert by_name["model.dim"].rho == pytest.approx(-0.5)
    assert by_name["model.dim"].score == pytest.approx(0.5)
    # opt: eta squared 27/37 = 0.730 (above); seed: constant, so 0
    assert by_name["train.opt"].score == pytest.approx(27 / 37)
    assert by_name["train.opt"].best == "adam"
    assert by_name["train.seed"].score == 0
    # most important first, each with its method, on the five trials that have an accuracy
    assert [imp.param for imp in result] == ["train.opt", "train.lr", "model.dim", "train.seed"]
    assert [imp.method for imp in result] == ["eta2", "spearman", "spearman", "spearman"]
    assert {imp.n for imp in result} == {5}
    assert result[0].label == "η²" and result[1].label == "|ρ|"


def test_ranks_make_a_log_uniform_parameter_scale_free():
    logged = [({"train.lr": math.log10(v["train.lr"])}, acc) for v, acc in TRIALS]
    assert importance(logged)[0].score == pytest.approx(importance(TRIALS)[1].score)


def test_booleans_are_categories_and_the_unscored_are_left_out():
    # acc 0.9, 0.8 (True, mean 0.85) and 0.6, 0.5 (False, mean 0.55); overall mean 0.7
    # between = 2 (0.15^2) + 2 (0.15^2) = 0.09; total = 0.2^2 + 0.1^2 + 0.1^2 + 0.2^2 = 0.1 -> 0.9
    trials = [({"aug": True}, 0.9), ({"aug": True}, 0.8), ({"aug": False}, 0.6), ({"aug": False}, 0.5),
              ({"aug": False}, None), ({"aug": True}, float("nan"))]
    (imp,) = importance(trials)
    assert imp.method == "eta2" and imp.n == 4
    assert imp.score == pytest.approx(0.9)
    assert imp.best is True


def test_nothing_scored_yet_is_zero_not_an_error():
    result = importance([({"train.lr": 1e-3, "loss.name": "cosine"}, None)])
    assert [(imp.param, imp.score, imp.n) for imp in result] == [("loss.name", 0, 0), ("train.lr", 0, 0)]
    assert importance([]) == []
