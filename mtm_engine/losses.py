"""The paper's geometric losses (Eq. 1-8), and cross-entropy for pure heads; catalogue.LOSSES names them
(with metric_learning's four proxy losses) and says which parameters each one takes.

Every MTM loss is called as `fn(e, y, C, *, reduction, **its own parameters)` (r, eps: the catalogue
says which) with
  e: [B, d] output embeddings, y: [B] class indices (long), C: [K, d] class embeddings,
and returns the batch loss: the SUM over the batch of the per-instance loss (the paper's
convention, Section III-C), or the mean with reduction="mean".
Cross-entropy takes logits [B, K] in place of e and ignores C.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mtm_engine.catalogue import default_r


def _reduce(per_instance: Tensor, reduction: str) -> Tensor:
    """per_instance: [B] -> scalar."""
    return per_instance.mean() if reduction == "mean" else per_instance.sum()


def _squared_distance_to_own(e: Tensor, y: Tensor, C: Tensor) -> Tensor:
    """|e - c_e|^2 per instance: [B]."""
    return (e - C[y]).pow(2).sum(dim=1)


def euclidean(e: Tensor, y: Tensor, C: Tensor, *, r: float = 0.0, eps: float = 1e-8, reduction: str = "sum") -> Tensor:
    """Euclidean distance loss, Eq. 1: |e - c_e|^2."""
    return _reduce(_squared_distance_to_own(e, y, C), reduction)


def cosine(e: Tensor, y: Tensor, C: Tensor, *, r: float = 0.0, eps: float = 1e-8, reduction: str = "sum") -> Tensor:
    """Cosine distance loss, Eq. 2-3: 1 - cos(e, c_e)."""
    cos = F.cosine_similarity(e, C[y], dim=1, eps=max(eps, 1e-12))  # [B]
    return _reduce(1.0 - cos, reduction)


def class_proximity(C: Tensor, eps: float) -> Tensor:
    """prox(c) for every class, Eq. 4: sum over k != c of 1 / (|c - k|^2 + eps). C: [K, d] -> [K].

    Computed once per class (O(K^2 d)) so the per-instance loss only gathers it.
    """
    sq = (C.unsqueeze(1) - C.unsqueeze(0)).pow(2).sum(dim=2)   # [K, K]; direct, exact at k == c
    inverse = 1.0 / (sq + eps)
    inverse = inverse.masked_fill(torch.eye(len(C), dtype=torch.bool, device=C.device), 0.0)
    return inverse.sum(dim=1)


def proximity(e: Tensor, y: Tensor, C: Tensor, *, r: float = default_r("proximity"), eps: float = 1e-8, reduction: str = "sum") -> Tensor:
    """Class proximity loss, Eq. 5: |e - c_e|^2 + r * prox(c_e)."""
    per_instance = _squared_distance_to_own(e, y, C) + r * class_proximity(C, eps)[y]
    return _reduce(per_instance, reduction)


def authors_class_proximity(C: Tensor) -> Tensor:
    """The authors' code's prox(c) for every class: sum over k != c of 1 / (|c - k| + 1), the plain distance plus
    1 where Eq. 4 has the squared distance plus eps. C: [K, d] -> [K]. Its push on C differs from Eq. 4's (at
    N(0, 1) initialisation, d = 200 to 2000, 9x to 31x stronger at the same r), and Appendix A's r were tuned on it."""
    own = torch.eye(len(C), dtype=torch.bool, device=C.device)
    # the diagonal set to 1 before the square root: sqrt's gradient at 0 is infinite, and 0 * inf is NaN
    distance = (C.unsqueeze(1) - C.unsqueeze(0)).pow(2).sum(dim=2).masked_fill(own, 1.0).sqrt()   # [K, K]
    return (1.0 / (distance + 1.0)).masked_fill(own, 0.0).sum(dim=1)


def proximity_authors(e: Tensor, y: Tensor, C: Tensor, *, r: float = default_r("proximity_authors"),
                      reduction: str = "sum") -> Tensor:
    """Class proximity as the authors' code computes it: |e - c_e|^2 + r * sum_k 1 / (|c_e - k| + 1)."""
    per_instance = _squared_distance_to_own(e, y, C) + r * authors_class_proximity(C)[y]
    return _reduce(per_instance, reduction)


def push_pull(e: Tensor, y: Tensor, C: Tensor, *, r: float = default_r("push_pull"), eps: float = 1e-8, reduction: str = "sum") -> Tensor:
    """Push-and-pull loss, Eq. 6-7: |e - c_e|^2 - r |e - avg(C)|^2.

    Unbounded below in (e, C) for any r > 0: with e = c_e the loss is -r |c_e - avg(C)|^2, and scaling
    C scales it without end (model.normalize bounds it: e and C on a sphere). r < 1 only bounds it in e
    for a fixed C (a quadratic in e with leading coefficient 1 - r; validated in config, not here).
    """
    pull = _squared_distance_to_own(e, y, C)             # [B]
    push = (e - C.mean(dim=0)).pow(2).sum(dim=1)         # [B]
    return _reduce(pull - r * push, reduction)


def comparison(e: Tensor, y: Tensor, C: Tensor, *, r: float = 0.0, eps: float = 1e-8, reduction: str = "sum") -> Tensor:
    """Comparison loss, Eq. 8: sum over k != c_e of |e - c_e|^2 / (|e - c_e|^2 + |e - k|^2 + eps).

    One [B, K] squared-distance matrix, no loop over classes.
    """
    sq = (e.unsqueeze(1) - C.unsqueeze(0)).pow(2).sum(dim=2)   # [B, K]
    own = sq.gather(1, y.unsqueeze(1))                         # [B, 1]
    ratio = own / (own + sq + eps)                              # [B, K]
    ratio = ratio.masked_fill(F.one_hot(y, len(C)).bool(), 0.0)
    return _reduce(ratio.sum(dim=1), reduction)


def cross_entropy(
    logits: Tensor, y: Tensor, C: Tensor | None = None, *, r: float = 0.0, eps: float = 1e-8,
    reduction: str = "sum", label_smoothing: float = 0.0,
) -> Tensor:
    """Cross-entropy of a pure head's logits [B, K]; summed over the batch like the MTM losses."""
    return F.cross_entropy(logits, y, reduction=reduction, label_smoothing=label_smoothing)
