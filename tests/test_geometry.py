import math

import pytest
import torch

from mtm_engine.geometry import class_centres, class_embedding_gap, geometry


def cluster_size(e, y):
    return geometry(e, y)["cluster_size"]


def centre_distance(e, y):
    return geometry(e, y)["centre_distance"]


def centre_separation(e, y):
    return geometry(e, y)["centre_separation"]


def median_cosine(e, y):
    return geometry(e, y)["median_cosine"]

# Class 0 at (1, 0) +- (1, 0); class 1 at (0, 5) +- (0, 2): centres g0 = (1, 0), g1 = (0, 5).
E = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 3.0], [0.0, 7.0], [0.0, 5.0]])
Y = torch.tensor([0, 0, 1, 1, 1])


def test_class_centres_are_the_class_means():
    assert class_centres(E, Y, 2).tolist() == [[1.0, 0.0], [0.0, 5.0]]


def test_cluster_size_is_the_median_distance_to_the_own_centre():
    # distances: 1, 1, 2, 2, 0 -> median 1
    assert cluster_size(E, Y) == pytest.approx(1.0)


def test_centre_distance_is_the_mean_distance_of_centres_to_the_global_centre():
    # avg(G) = (0.5, 2.5); both centres are sqrt(0.25 + 6.25) away
    assert centre_distance(E, Y) == pytest.approx(math.sqrt(6.5))


def test_centre_separation_is_the_mean_pairwise_centre_distance():
    assert centre_separation(E, Y) == pytest.approx(math.sqrt(26))
    three = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    # pairs: 3, 4, 5 -> mean 4
    assert centre_separation(three, torch.tensor([0, 1, 2])) == pytest.approx(4.0)


def test_median_cosine_to_the_own_centre():
    # cos to own centre: (0,0) -> 0, the others are parallel to theirs -> 1; median of [0,1,1,1,1]
    assert median_cosine(E, Y) == pytest.approx(1.0)
    opposite = torch.tensor([[1.0, 0.0], [-1.0, 0.1], [3.0, 0.0]])
    # g0 = (1, 0.0333): cosines ~1, ~-1, ~1 -> median ~1; with (-1,0)s dominant it turns negative
    assert median_cosine(opposite, torch.tensor([0, 0, 0])) > 0.99


def test_geometry_skips_absent_classes():
    y = torch.tensor([0, 0, 2, 2, 2])   # class 1 absent
    g = geometry(E, y)
    assert g["centre_separation"] == pytest.approx(math.sqrt(26))
    assert g["cluster_size"] == pytest.approx(1.0)


def test_class_embedding_gap_is_the_mean_distance_between_c_and_g():
    C = torch.tensor([[1.0, 1.0], [0.0, 5.0], [9.0, 9.0]])
    G = torch.tensor([[1.0, 0.0], [0.0, 5.0], [float("nan"), float("nan")]])
    assert class_embedding_gap(C, G) == pytest.approx(0.5)


def test_embedding_snapshot_projects_points_centres_and_class_embeddings_with_pca():
    from mtm_engine.geometry import embedding_snapshot

    # Points spread along (1, 1, 0) only: the first axis explains everything.
    t = torch.linspace(-1, 1, 50).unsqueeze(1)
    e = t * torch.tensor([[1.0, 1.0, 0.0]])
    y = (t.squeeze(1) > 0).long()
    G = torch.stack([e[y == 0].mean(0), e[y == 1].mean(0)])
    snap = embedding_snapshot(e, y, G, G.clone(), max_points=30)
    assert len(snap["points"]) == len(snap["labels"]) == 30
    assert snap["explained_variance"][0] == pytest.approx(1.0, abs=1e-5)
    # distances along the axis are kept: |g0 - g1| in 3-D equals the 2-D distance
    (a, b), (c, d) = snap["centres"]
    assert math.hypot(a - c, b - d) == pytest.approx((G[0] - G[1]).norm().item(), rel=1e-4)
    assert sum(snap["class_embeddings"], []) == pytest.approx(sum(snap["centres"], []))
