"""Each loss against a hand computation, its gradient direction, and the comparison loss against
a plain loop."""

import math

import pytest
import torch
import torch.nn.functional as F

from mtm_engine.catalogue import LOSSES, loss_arguments, loss_function
from mtm_engine.config import LossSpec
from mtm_engine.losses import comparison, cosine, cross_entropy, euclidean, proximity, proximity_authors, push_pull


def test_euclidean_is_the_summed_squared_distance_to_the_own_class_embedding():
    e = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    C = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    y = torch.tensor([0, 1])
    # |(1,2)|^2 = 5 and |(0,0) - (3,4)|^2 = 25
    assert euclidean(e, y, C).item() == pytest.approx(30.0)
    assert euclidean(e, y, C, reduction="mean").item() == pytest.approx(15.0)


def test_cosine_is_one_minus_the_cosine_to_the_own_class_embedding():
    e = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    C = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    y = torch.tensor([1, 1])
    # cos((1,0),(2,0)) = 1 -> 0;  cos((1,1),(2,0)) = 1/sqrt(2)
    assert cosine(e, y, C).item() == pytest.approx(1 - 1 / math.sqrt(2))
    # scaling e or C does not change a cosine loss
    assert cosine(5 * e, y, 3 * C).item() == pytest.approx(1 - 1 / math.sqrt(2))


@pytest.mark.parametrize("r", [0.0, 2.0, 1e3])
def test_proximity_adds_r_times_the_inverse_squared_distances_to_other_classes(r):
    e = torch.tensor([[1.0, 0.0]])
    C = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0])
    # |e - c0|^2 = 1; prox(c0) = 1/|c0-c1|^2 + 1/|c0-c2|^2 = 1/4 + 1/1
    assert proximity(e, y, C, r=r, eps=0.0).item() == pytest.approx(1 + r * 1.25)


@pytest.mark.parametrize("r", [0.0, 2.0, 1e3])
def test_the_authors_proximity_adds_r_times_one_over_the_distance_plus_one(r):
    e = torch.tensor([[1.0, 0.0], [2.0, 1.0]])
    C = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    y = torch.tensor([0, 1])
    # e0: |e0 - c0|^2 = 1; prox(c0) = 1/(|c0-c1| + 1) + 1/(|c0-c2| + 1) = 1/6 + 1/2
    # e1: |e1 - c1|^2 = 1 + 9 = 10; prox(c1) = 1/(5 + 1) + 1/(|(3, 3)| + 1) = 1/6 + 1/(3 sqrt(2) + 1)
    first, second = 1 + r * (1 / 6 + 1 / 2), 10 + r * (1 / 6 + 1 / (3 * math.sqrt(2) + 1))
    assert proximity_authors(e, y, C, r=r).item() == pytest.approx(first + second)
    assert proximity_authors(e, y, C, r=r, reduction="mean").item() == pytest.approx((first + second) / 2)


def test_the_two_proximity_forms_push_e_alike_and_c_differently():
    """Their gradients with respect to e are equal (the pull alone); with respect to C they differ: at unit
    distance Eq. 4's push d/dx 1/x^2 = -2 is 8x the authors' d/dx 1/(x + 1) = -1/4."""
    e, y = torch.tensor([[0.5, 0.0]]), torch.tensor([0])
    grads = []
    for loss in (proximity, proximity_authors):
        e_, C_ = e.clone().requires_grad_(), torch.tensor([[0.0, 0.0], [1.0, 0.0]], requires_grad=True)
        loss(e_, y, C_, r=1.0).backward()
        assert torch.isfinite(C_.grad).all()
        grads.append((e_.grad, C_.grad))
    assert torch.equal(grads[0][0], grads[1][0])
    # c1 is in the push term alone: d/dx of r * prox(c0) at x = |c0 - c1| = 1, along +x
    assert grads[0][1][1, 0].item() == pytest.approx(-2.0) and grads[1][1][1, 0].item() == pytest.approx(-0.25)


def test_proximity_eps_keeps_coinciding_classes_finite():
    C = torch.zeros(3, 4)
    value = proximity(torch.ones(1, 4), torch.tensor([0]), C, r=1.0, eps=1e-8)
    assert value.item() == pytest.approx(4 + 2 / 1e-8)


@pytest.mark.parametrize("r, expected", [(0.0, 1.0), (0.5, 0.0), (0.95, 1 - 0.95 * 2)])
def test_push_pull_subtracts_r_times_the_squared_distance_to_the_mean_class_embedding(r, expected):
    e = torch.tensor([[0.0, 1.0]])
    C = torch.tensor([[0.0, 0.0], [2.0, 0.0]])   # avg(C) = (1, 0)
    y = torch.tensor([0])
    # pull |e - c0|^2 = 1; push |e - avg(C)|^2 = 2
    assert push_pull(e, y, C, r=r).item() == pytest.approx(expected)


def test_comparison_matches_a_hand_computation():
    e = torch.tensor([[0.0, 0.0]])
    C = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    y = torch.tensor([0])
    # own = 1; k=1: 1/(1+4) = 0.2; k=2: 1/(1+9) = 0.1
    assert comparison(e, y, C, eps=0.0).item() == pytest.approx(0.3)


def test_comparison_matches_a_plain_loop():
    g = torch.Generator().manual_seed(0)
    e, C = torch.randn(7, 5, generator=g), torch.randn(4, 5, generator=g)
    y = torch.randint(0, 4, (7,), generator=g)
    expected = 0.0
    for i in range(len(e)):
        own = ((e[i] - C[y[i]]) ** 2).sum()
        for k in range(len(C)):
            if k != y[i]:
                expected += own / (own + ((e[i] - C[k]) ** 2).sum() + 1e-8)
    assert comparison(e, y, C).item() == pytest.approx(float(expected), rel=1e-5)


def test_cross_entropy_sums_over_the_batch():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    y = torch.tensor([0, 1])
    expected = -math.log(math.exp(2) / (math.exp(2) + 1)) + math.log(2)
    assert cross_entropy(logits, y).item() == pytest.approx(expected)
    assert cross_entropy(logits, y, reduction="mean").item() == pytest.approx(expected / 2)


def _step(loss_fn, e, y, C, lr=0.01, **kw):
    e, C = e.clone().requires_grad_(), C.clone().requires_grad_()
    loss_fn(e, y, C, **kw).backward()
    with torch.no_grad():
        return e - lr * e.grad, C - lr * C.grad


def test_euclidean_gradient_pulls_the_class_embedding_towards_the_output():
    e, C, y = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 0.0], [0.0, 5.0]]), torch.tensor([0])
    new_e, new_C = _step(euclidean, e, y, C)
    assert (new_C[0] - e[0]).norm() < (C[0] - e[0]).norm()        # c_e moves towards e
    assert (new_e[0] - C[0]).norm() < (e[0] - C[0]).norm()        # and e towards c_e
    assert torch.equal(new_C[1], C[1])                            # other classes untouched


def test_push_pull_gradient_pushes_the_output_away_from_the_mean_class_embedding():
    C, y = torch.tensor([[0.0, 0.0], [2.0, 0.0]]), torch.tensor([0])
    e = C[:1].clone()                     # on its class embedding: the pull has no gradient
    new_e, _ = _step(push_pull, e, y, C, r=0.95)
    avg = C.mean(dim=0)
    assert (new_e[0] - avg).norm() > (e[0] - avg).norm()


def test_proximity_gradient_pushes_class_embeddings_apart():
    C, y = torch.tensor([[0.0, 0.0], [1.0, 0.0]]), torch.tensor([0])
    _, new_C = _step(proximity, C[:1].clone(), y, C, r=1.0, lr=0.01)
    assert (new_C[0] - new_C[1]).norm() > (C[0] - C[1]).norm()


def test_every_mtm_loss_takes_its_own_parameters_as_the_loop_passes_them():
    e, C, y = torch.randn(4, 3), torch.randn(2, 3), torch.tensor([0, 1, 1, 0])
    for name, entry in LOSSES.items():
        if entry.head == "mtm":
            arguments = loss_arguments(LossSpec(name=name, r=0.5))
            assert set(arguments) == {"reduction", *entry.params}, name   # r only where the loss has one
            assert torch.isfinite(loss_function(name)(e, y, C, **arguments)), name


def test_normalized_softmax_and_arcface_match_hand_computations():
    """pytorch-metric-learning's losses with C as their proxies, against the formulas:
    NormalizedSoftmax: cross-entropy of cos(e, c_k) / 0.05; ArcFace: cross-entropy of 64 cos(theta_k + m [k = y])
    with m = 28.6 degrees, theta_k the angle between e and c_k (both target angles below 180 - m degrees, where
    the library switches to a linear extension). Mean over the batch, times B for "sum"."""
    e, C, y = torch.tensor([[1.0, 0.2], [0.3, -1.0]]), torch.tensor([[2.0, 0.0], [0.0, -1.0], [-1.0, 1.0]]), torch.tensor([0, 1])
    cos = F.normalize(e, dim=1) @ F.normalize(C, dim=1).T                  # [2, 3]
    by_hand = F.cross_entropy(cos / 0.05, y)
    assert loss_function("normalized_softmax")(e, y, C, reduction="mean").item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert loss_function("normalized_softmax")(e, y, C).item() == pytest.approx(2 * by_hand.item(), rel=1e-5)
    theta = torch.acos(cos.clamp(-1, 1))
    margin = torch.zeros_like(cos).scatter(1, y[:, None], math.radians(28.6))
    arc = F.cross_entropy(64 * torch.cos(theta + margin), y)
    assert loss_function("arcface")(e, y, C, reduction="mean").item() == pytest.approx(arc.item(), rel=1e-4)


@pytest.mark.parametrize("name", ["proxy_anchor", "proxy_nca", "normalized_softmax", "arcface"])
def test_proxy_losses_train_the_class_embeddings_they_are_given(name):
    """The loss's proxies are C itself: its gradient reaches C, and a step lowers the loss."""
    g = torch.Generator().manual_seed(0)
    e = torch.randn(8, 4, generator=g)
    y = torch.arange(8) % 3
    C = torch.randn(3, 4, generator=g, requires_grad=True)
    before = loss_function(name)(e, y, C)
    before.backward()
    assert C.grad is not None and C.grad.abs().sum() > 0
    with torch.no_grad():
        C -= 0.01 * C.grad / C.grad.norm()
    assert loss_function(name)(e, y, C).item() < before.item()


@pytest.mark.parametrize("name", ["proxy_anchor", "arcface"])   # a proxies attribute; a weight matrix C^T
def test_a_proxy_loss_builds_the_librarys_loss_once_and_follows_c(name, monkeypatch):
    """Built once per (K, d), not per batch; each batch's C is the one used (a Parameter or a tensor)."""
    import pytorch_metric_learning.losses as library

    built = []
    cls = getattr(library, loss_function(name).library_name)
    monkeypatch.setattr(library, cls.__name__, lambda *a, **k: built.append(1) or cls(*a, **k))
    loss_function(name).built.clear()
    g = torch.Generator().manual_seed(0)
    e, y = torch.randn(6, 4, generator=g), torch.arange(6) % 3
    C1, C2 = torch.nn.Parameter(torch.randn(3, 4, generator=g)), torch.randn(3, 4, generator=g)
    first, second = loss_function(name)(e, y, C1), loss_function(name)(e, y, C2)
    assert built == [1]
    loss_function(name).built.clear()
    fresh = loss_function(name)(e, y, C2)   # a loss built for C2 alone
    assert second.item() == pytest.approx(fresh.item()) and first.item() != pytest.approx(second.item())


def test_a_proxy_loss_without_its_library_is_one_line(monkeypatch):
    import importlib.util

    from mtm_engine.config import load_spec
    from mtm_engine.errors import ConfigError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pytorch_metric_learning" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'mtm-workbench\[metric\]'"):
        load_spec(overrides=["loss.name=arcface"])
