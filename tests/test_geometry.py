import math

import pytest
import torch

from mtm_engine.measures.geometry import class_centres, class_embedding_gap, geometry


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
    from mtm_engine.measures.geometry import embedding_snapshot

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


# --- the snapshot's planes: the class centres' PCA, Fisher LDA, the points' PCA -------------------

def _nuisance_classes(n=300, seed=0):
    """Three classes in 10-D: their means differ along axes 2 and 3 only, (0, 0), (4, 0) and (0, 4), with
    standard deviation 0.5 there and on axes 4-9; axes 0 and 1 carry a nuisance of standard deviation
    10, the same for every class. The points' two largest variances (100 each) are the nuisance axes."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(3).repeat_interleave(n)
    e = 0.5 * torch.randn(3 * n, 10, generator=g)
    e[:, :2] = 10 * torch.randn(3 * n, 2, generator=g)
    e[y == 1, 2] += 4.0
    e[y == 2, 3] += 4.0
    return e, y


def _nearest_own_centre(points, centres, labels):
    """The share of 2-D points whose nearest 2-D centre is their own class's (by hand, numpy-free)."""
    hits = 0
    for (x, y), k in zip(points, labels):
        d = [(x - cx) ** 2 + (y - cy) ** 2 for cx, cy in centres]
        hits += d.index(min(d)) == k
    return hits / len(labels)


def test_class_planes_separate_classes_that_the_points_pca_mixes():
    from mtm_engine.measures.geometry import embedding_snapshot
    from mtm_engine.snapshots import nearest_centre_share, projections

    e, y = _nuisance_classes()
    # G as a training split gives it: the class means, here the true ones (not the test points' own)
    G = torch.zeros(3, 10)
    G[1, 2] = G[2, 3] = 4.0
    snap = embedding_snapshot(e, y, G, None)
    planes = projections(snap)
    assert list(planes) == ["centres", "lda", "pca"] and snap["default"] == "centres"
    share = {name: _nearest_own_centre(p["points"], p["centres"], snap["labels"]) for name, p in planes.items()}
    # In the nuisance plane every class has the same spread about the same place: about one in three.
    assert share["pca"] < 0.6
    # Means 4 apart against a spread of 0.5: 4 standard deviations to the midpoint, all but a few.
    assert share["centres"] > 0.97 and share["lda"] > 0.97
    for name, p in planes.items():   # the reader's figure is the same count
        assert nearest_centre_share(p, snap["labels"]) == pytest.approx(share[name])
    # The centres lie in the plane of axes 2 and 3: the two axes hold all of their variance.
    assert sum(planes["centres"]["explained"]) == pytest.approx(1.0, abs=1e-3)
    # The points' PCA: variance 100 + 100 of about 100 + 100 + 2 * 3.8 (the means) + 8 * 0.25
    assert sum(planes["pca"]["explained"]) == pytest.approx(200 / (200 + 2 * 3.8 + 8 * 0.25), abs=0.03)
    assert planes["pca"]["class_embeddings"] is None
    # LDA weighs the within-class spread: centres taken from these very points, whose means carry
    # noise of 10 / sqrt(300) along the nuisance axes, tilt the centres' plane but not the LDA plane.
    lda = projections(embedding_snapshot(e, y, class_centres(e, y, 3), None))["lda"]
    assert _nearest_own_centre(lda["points"], lda["centres"], y.tolist()) > 0.97


def _scatter_matrices(e, y, reg=1e-3):
    """Sw' = Sw + reg * trace(Sw) / d * I and Sb as the docstring defines them, in numpy float64."""
    import numpy as np

    x, labels = e.double().numpy(), y.numpy()
    m = x.mean(axis=0)
    Sw, Sb = np.zeros((x.shape[1],) * 2), np.zeros((x.shape[1],) * 2)
    for k in np.unique(labels):
        xk = x[labels == k]
        mk = xk.mean(axis=0)
        Sw += (xk - mk).T @ (xk - mk) / len(x)
        Sb += len(xk) / len(x) * np.outer(mk - m, mk - m)
    return Sw + reg * np.trace(Sw) / x.shape[1] * np.eye(x.shape[1]), Sb


@pytest.mark.parametrize("n, d", [(200, 6), (20, 50)])   # d > N: computed in the points' span
def test_fisher_axes_solve_the_generalised_eigenproblem(n, d):
    import numpy as np

    from mtm_engine.measures.geometry import fisher_axes

    g = torch.Generator().manual_seed(1)
    y = torch.arange(n) % 4
    e = torch.randn(n, d, generator=g) * torch.linspace(0.5, 2, d) + 3 * torch.randn(4, d, generator=g)[y]
    axes, lam = fisher_axes(e.double(), y)
    Sw, Sb = _scatter_matrices(e, y)
    a = axes.numpy()
    for i in range(2):   # Sb a = lambda Sw' a
        np.testing.assert_allclose(Sb @ a[:, i], lam[i].item() * Sw @ a[:, i], atol=1e-8 * np.abs(Sb).max())
    np.testing.assert_allclose(a.T @ Sw @ a, np.eye(2), atol=1e-8)        # one within-class s.d. a unit
    # the eigenvalues of Sw'^-1 Sb, by numpy's general solver: 3 nonzero (K - 1), the two largest kept
    expected = np.sort(np.linalg.eigvals(np.linalg.solve(Sw, Sb)).real)[::-1]
    np.testing.assert_allclose(lam.numpy()[:3], expected[:3], rtol=1e-6)
    assert lam.tolist()[3:] == [0.0]   # past rank K - 1 = 3: no axis


def test_two_classes_give_one_discriminant_axis_and_the_largest_variance_orthogonal_to_it():
    import numpy as np

    from mtm_engine.measures.geometry import embedding_snapshot, fisher_axes, projection_axes

    g = torch.Generator().manual_seed(2)
    y = torch.arange(400) % 2
    e = torch.randn(400, 5, generator=g, dtype=torch.float64) * torch.tensor([3.0, 1.0, 0.3, 0.2, 0.1]).double()
    e[y == 1] += torch.tensor([0.0, 2.0, 1.0, 0.0, 0.0]).double()
    Sw, Sb = _scatter_matrices(e, y)
    x = e.numpy() - e.numpy().mean(axis=0)
    m0, m1 = e[y == 0].mean(0).numpy(), e[y == 1].mean(0).numpy()

    def cos(u, v):
        return abs(u @ v) / np.linalg.norm(u) / np.linalg.norm(v)

    def top_orthogonal(first):   # the largest-variance direction orthogonal to `first`, by eigh
        P = np.eye(5) - np.outer(first, first) / (first @ first)
        return np.linalg.eigh(P @ (x.T @ x) @ P)[1][:, -1]

    axes, lam = fisher_axes(e, y)
    a1, a2 = axes[:, 0].numpy(), axes[:, 1].numpy()
    assert cos(a1, np.linalg.solve(Sw, m1 - m0)) == pytest.approx(1.0, abs=1e-9)   # the two-class LDA
    assert lam[1].item() == 0.0 and abs(a1 @ a2) < 1e-6
    assert cos(a2, top_orthogonal(a1)) == pytest.approx(1.0, abs=1e-4)
    assert a2 @ Sw @ a2 == pytest.approx(1.0)
    # the class centres' plane: the line through the two centres, then the same rule
    centre_axes = projection_axes(e, y, torch.stack([e[y == 0].mean(0), e[y == 1].mean(0)]))["centres"][0].numpy()
    assert cos(centre_axes[:, 0], m1 - m0) == pytest.approx(1.0, abs=1e-9)
    assert cos(centre_axes[:, 1], top_orthogonal(m1 - m0)) == pytest.approx(1.0, abs=1e-4)
    snap = embedding_snapshot(e, y, torch.stack([e[y == 0].mean(0), e[y == 1].mean(0)]), None)
    assert snap["projections"]["lda"]["explained"] == [1.0, 0.0]


def test_snapshot_shapes_and_json():
    import json

    from mtm_engine.measures.geometry import embedding_snapshot
    from mtm_engine.snapshots import projections

    e, y = _nuisance_classes(n=1000)                 # 3,000 points: 2,000 kept
    G = class_centres(e, y, 3)
    snap = json.loads(json.dumps(embedding_snapshot(e, y, G, G + 1.0)))
    assert len(snap["labels"]) == 2000 and set(snap["labels"]) == {0, 1, 2}
    for name, plane in projections(snap).items():
        assert len(plane["points"]) == 2000 and all(len(p) == 2 for p in plane["points"]), name
        assert len(plane["centres"]) == len(plane["class_embeddings"]) == 3 and len(plane["explained"]) == 2
        assert all(float(f"{v:.4g}") == v for p in plane["points"] for v in p)   # 4 significant digits
    assert len(json.dumps(snap)) < 150_000


def test_the_first_layout_reads_as_its_pca_plane():
    from mtm_engine.snapshots import default_projection, describe, nearest_centre_share, next_projection, projections

    old = {"epoch": 3, "labels": [0, 0, 1], "points": [[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]],
           "centres": [[0.0, 0.0], [4.0, 0.0]], "class_embeddings": None, "explained_variance": [0.75, 0.25]}
    planes = projections(old)
    assert list(planes) == ["pca"] and planes["pca"]["explained"] == [0.75, 0.25]
    assert planes["pca"]["points"] == old["points"] and planes["pca"]["class_embeddings"] is None
    assert default_projection(old) == "pca" and next_projection(old, "pca") == "pca"
    # (3, 0) is 1 from the centre of class 1 and 3 from class 0's: all three lie nearest their own
    assert nearest_centre_share(planes["pca"], old["labels"]) == 1.0
    assert nearest_centre_share(planes["pca"], [0, 1, 1]) == pytest.approx(2 / 3)   # (1, 0) is nearer g0
    assert describe("pca", planes["pca"], old["labels"]) == \
        "PCA of the points: 75% + 25% of the points' variance; 100% nearest their own centre"
    assert projections(None) == {} and default_projection(None) is None and next_projection({}, None) is None


def test_the_authors_geometry_matches_a_hand_computation():
    """Against the TRAINING centres, upper medians, ρ of the training centres, separation summed over k < l / K."""
    from mtm_engine.config import load_spec
    from mtm_engine.evaluate import Embedded, measure

    spec = load_spec(overrides=["eval.authors_geometry=true"])
    # training centres: g0 = (0, 1), g1 = (4, 0), g2 = (0, 3); their mean (4/3, 4/3)
    train_e = torch.tensor([[-1.0, 1.0], [1.0, 1.0], [4.0, 0.0], [0.0, 3.0]])
    train_y = torch.tensor([0, 0, 1, 2])
    G = class_centres(train_e, train_y, 3)
    # the split (class 2 absent): class 0 at (1, 0) and (0, 2), class 1 at (4, 1) and (6, 0)
    e = torch.tensor([[1.0, 0.0], [0.0, 2.0], [4.0, 1.0], [6.0, 0.0]])
    y = torch.tensor([0, 0, 1, 1])
    embedded = Embedded("val", e, y, 3, train_e, train_y, G, None, spec)
    record, once = measure(embedded, per_split=True), measure(embedded, per_split=False)
    # distances to the training centres: sqrt(2), 1, 1, 2 -> sorted 1, 1, sqrt(2), 2: the upper median, index 4 // 2
    assert record["val_authors_cluster_size"] == pytest.approx(math.sqrt(2))
    # cosines to the training centres: 0, 1, 4 / sqrt(17), 1 -> sorted 0, 0.970, 1, 1 -> 1 (the lower would be 0.970)
    assert record["val_authors_median_cosine"] == pytest.approx(1.0)
    # the split's own centres (0.5, 1) and (5, 0.5): one pair, sqrt(4.5^2 + 0.5^2), over K = 2
    assert record["val_authors_centre_separation"] == pytest.approx(math.hypot(4.5, 0.5) / 2)
    # ρ' of the training centres: the mean of |g_k - (4/3, 4/3)|
    rho = (math.hypot(4 / 3, 1 / 3) + math.hypot(8 / 3, 4 / 3) + math.hypot(4 / 3, 5 / 3)) / 3
    assert once["authors_centre_distance"] == pytest.approx(rho)
    # ours beside them: the distances to the split's own centres, all hypot(0.5, 1)
    assert record["val_cluster_size"] == pytest.approx(math.hypot(0.5, 1))
    plain = Embedded("val", e, y, 3, train_e, train_y, G, None, load_spec())
    assert not any("authors" in key for key in {**measure(plain, True), **measure(plain, False)})
