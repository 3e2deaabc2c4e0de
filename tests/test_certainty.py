"""Certainty scores and their measures, against hand computations and brute force."""

import math

import pytest
import torch
from conftest import SMALL_ARGS

from mtm_engine.measures.certainty import (
    ClassGaussians,
    accuracy_at_coverage,
    aurc,
    auroc,
    distance_scores,
    expected_calibration_error,
    fit_temperature,
    fpr_at_tpr,
    histogram,
    risk_coverage,
    risk_coverage_points,
    softmax_scores,
)


def test_auroc_equals_a_brute_force_count_of_pairs_with_ties():
    g = torch.Generator().manual_seed(0)
    score = torch.randint(0, 6, (60,), generator=g).float()     # many ties
    positive = torch.rand(60, generator=g) < 0.4
    pos, neg = score[positive], score[~positive]
    wins = sum(float(p > n) + 0.5 * float(p == n) for p in pos for n in neg)
    assert auroc(score, positive) == pytest.approx(wins / (len(pos) * len(neg)))
    assert auroc(torch.tensor([3.0, 2.0, 1.0]), torch.tensor([True, True, False])) == 1.0
    assert math.isnan(auroc(torch.tensor([1.0, 2.0]), torch.tensor([True, True])))


def test_fpr_at_95_tpr_by_hand():
    # 20 positives 1..20: the threshold keeping 19 of them (95%) is 2; negatives >= 2: 1.5 and 3 of 4
    score = torch.cat([torch.arange(1.0, 21.0), torch.tensor([0.5, 1.5, 2.5, 3.0])])
    positive = torch.arange(24) < 20
    assert fpr_at_tpr(score, positive) == pytest.approx(2 / 4)


def test_risk_coverage_aurc_and_accuracy_at_coverage_by_hand():
    score = torch.tensor([0.9, 0.8, 0.7, 0.6])
    correct = torch.tensor([True, False, True, True])
    coverage, risk = risk_coverage(score, correct)
    assert coverage.tolist() == [0.25, 0.5, 0.75, 1.0]
    assert risk.tolist() == pytest.approx([0.0, 1 / 2, 1 / 3, 1 / 4])
    assert aurc(score, correct) == pytest.approx((0 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    assert accuracy_at_coverage(score, correct, 0.5) == 0.5          # the two most certain: one right
    assert accuracy_at_coverage(score, correct, 0.25) == 1.0


def test_curve_points_and_shared_histogram_bins_by_hand():
    score = torch.tensor([0.9, 0.8, 0.7, 0.6])
    correct = torch.tensor([True, False, True, True])
    points = risk_coverage_points(score, correct, points=2)   # coverages 1/2 and 1: the 2 and 4 most certain
    assert points == {"coverage": [0.5, 1.0], "risk": [0.5, 0.25]}
    counts = histogram({"in": torch.tensor([0.0, 1.0, 1.0]), "out": torch.tensor([2.0])}, bins=2)
    assert counts == {"edges": [0.0, 1.0, 2.0], "in": [1.0, 2.0], "out": [0.0, 1.0]}
    # 1,000 scores in [0, 1) and one far outlier: the bins span the scores, and the outlier lands in the first bin
    tail = histogram({"in": torch.cat([torch.arange(1000.0) / 1000, torch.tensor([-1e6])])}, bins=4)
    assert tail["edges"][0] > -1 and tail["edges"][-1] < 1 and sum(tail["in"]) == 1001 and tail["in"][0] >= 1


def test_ece_by_hand():
    # confidences 0.9 (right), 0.9 (wrong), 0.6 (right), 2 bins: (0, .5] empty... use 10 bins
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6]])
    y = torch.tensor([0, 1, 1])
    # bin (0.8, 0.9]: 2 images, accuracy 0.5, confidence 0.9 -> 2/3 * 0.4; bin (0.5, 0.6]: 1 image, 1 vs 0.6 -> 1/3 * 0.4
    assert expected_calibration_error(probs, y, bins=10) == pytest.approx(2 / 3 * 0.4 + 1 / 3 * 0.4)


def test_temperature_fitted_on_samples_of_a_known_temperature():
    g = torch.Generator().manual_seed(0)
    z = 3 * torch.randn(20000, 5, generator=g)
    y = torch.multinomial((z / 2.0).softmax(dim=1), 1, generator=g).squeeze(1)   # drawn at T = 2
    assert fit_temperature(z, y) == pytest.approx(2.0, rel=0.05)


def test_distance_and_softmax_scores_by_hand():
    e = torch.tensor([[1.0, 0.0]])
    refs = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 3.0]])
    s = distance_scores(e, refs)
    # distances 1, 3, sqrt(10): nearest 1, second 3; cosines: (0 vector -> 0), 1, 0
    assert s["distance"].item() == pytest.approx(-1.0) and s["margin"].item() == pytest.approx(2.0)
    assert s["cosine"].item() == pytest.approx(1.0)
    logits = torch.tensor([[0.0, math.log(3.0)]])
    p = softmax_scores(logits)
    assert p["msp"].item() == pytest.approx(0.75) and p["energy"].item() == pytest.approx(math.log(4.0))


def test_class_gaussians_match_torch_distributions():
    g = torch.Generator().manual_seed(1)
    e = torch.randn(200, 3, generator=g) + torch.tensor([[0.0, 0.0, 0.0]])
    y = torch.arange(200) % 2
    e[y == 1] += 4.0
    fitted = ClassGaussians(e, y, 2)
    x = torch.randn(7, 3, generator=g)
    by_hand = []
    for k in range(2):
        ek = e[y == k].double()
        mvn = torch.distributions.MultivariateNormal(ek.mean(0), torch.cov(ek.T))
        by_hand.append(mvn.log_prob(x.double()))
    assert torch.allclose(fitted.score(x).double(), torch.stack(by_hand).logsumexp(0), atol=1e-4)


def test_class_gaussians_score_in_chunks_of_bounded_memory(monkeypatch):
    """All N images at once is a [K, N, d] float64 array: 32 GB for CIFAR-100 at d = 2000."""
    from mtm_engine.measures import certainty

    g = torch.Generator().manual_seed(2)
    e, y, x = torch.randn(300, 4, generator=g), torch.arange(300) % 3, torch.randn(50, 4, generator=g)
    fitted = ClassGaussians(e, y, 3)
    whole = fitted.score(x)
    widths = []
    real = torch.linalg.solve_triangular
    monkeypatch.setattr(torch.linalg, "solve_triangular", lambda A, B, **k: widths.append(B.shape[-1]) or real(A, B, **k))
    monkeypatch.setattr(certainty, "SCORE_CHUNK_BYTES", 2 * 3 * 4 * 8 * 16)   # 16 images a chunk
    assert torch.allclose(fitted.score(x), whole) and widths == [16, 16, 16, 2]


def test_mtm_eval_certainty_measures_every_score_and_refuses_bad_input(mtm_env, tmp_path):
    """The real command on a 4-epoch digits run of the small network: an image folder of colour images as the out-of-
    distribution set (another channel count: refused), a live run (refused), --ood alone (refused)."""
    import json

    from PIL import Image
    from test_cli import run_mtm

    from mtm_engine.config import load_spec
    from mtm_engine.runner import create_run
    from mtm_engine.store import Store

    out = run_mtm(["run", "--json", "--set", "train.epochs=4", *SMALL_ARGS], mtm_env, tmp_path)
    run_id = json.loads(out.stdout)["run_id"][:8]
    measured = json.loads(run_mtm(["eval", run_id, "--certainty", "--json"], mtm_env, tmp_path).stdout)
    assert set(measured["scores"]) == {f"{s} {r}" for s in ("distance", "margin", "cosine") for r in "GC"} | {"gaussian"}
    assert measured["classifier"] == "cos" and measured["accuracy"] > 0.8 and measured["temperature"] > 0
    row = measured["scores"]["distance G"]
    assert 0.5 < row["misclassification_auroc"] <= 1 and row["accuracy_at_80"] >= measured["accuracy"]
    assert "ood_auroc" not in row and 0 <= measured["ece"] < 1
    report = run_mtm(["export", run_id], mtm_env, tmp_path).stdout   # the kept measurement, in the run's report
    assert "## Certainty" in report and f"| distance G | {row['misclassification_auroc']:.4f} |" in report

    for k in range(2):   # colour images: 3 channels against the run's 1
        (tmp_path / "rgb" / str(k)).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (40 * i, 90 * k, 7)).save(tmp_path / "rgb" / str(k) / f"{i}.png")
    colour = run_mtm(["eval", run_id, "--certainty", "--ood", f"folder:{tmp_path / 'rgb'}"], mtm_env, tmp_path)
    assert colour.returncode == 1 and "3 channel(s), the run's digits 1" in colour.stderr
    assert len(colour.stderr.strip().splitlines()) == 1

    alone = run_mtm(["eval", run_id, "--ood", "mnist"], mtm_env, tmp_path)
    assert alone.returncode == 1 and "add --certainty" in alone.stderr
    live = create_run(Store(tmp_path / "home"), load_spec(), status="running")
    training = run_mtm(["eval", live[:8], "--certainty"], mtm_env, tmp_path)
    assert training.returncode == 1 and "is running" in training.stderr
