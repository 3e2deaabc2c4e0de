"""Retrieval metrics (pytorch-metric-learning's AccuracyCalculator, cosine kNN, scikit-learn k-means)
against a hand computation."""

import math

import pytest
import torch

from mtm_engine.metric_learning import retrieval


def _at(*degrees):
    return torch.tensor([[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in degrees])


def test_precision_r_precision_and_map_at_r_by_hand():
    # references: class 0 at 0, 10, 20 degrees; class 1 at 35, 80, 90. R = 3 for either class.
    reference, reference_y = _at(0, 10, 20, 35, 80, 90), torch.tensor([0, 0, 0, 1, 1, 1])
    # query of class 0 at 30 degrees: nearest first 35 (1), 20 (0), 10 (0): P@1 0, R-precision 2/3,
    # MAP@R = (0 + 1/2 + 2/3) / 3 = 7/18. Query of class 1 at 85 degrees: 80, 90, 35, all class 1: 1, 1, 1.
    found = retrieval(_at(30, 85), torch.tensor([0, 1]), reference, reference_y)
    assert found["precision_at_1"] == pytest.approx(0.5)
    assert found["r_precision"] == pytest.approx((2 / 3 + 1) / 2)
    assert found["map_at_r"] == pytest.approx((7 / 18 + 1) / 2)
    assert found["nmi"] == pytest.approx(1.0)   # two queries, two clusters, two labels
