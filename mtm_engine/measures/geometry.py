"""Embedding-space measures (paper Section III-B and IV-F), pure functions of tensors.

e: [N, d] embeddings, y: [N] class labels (long). Classes absent from y have no centre and are
left out of the class-wise means.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from mtm_engine.evaluate import Embedded


def class_centres(e: Tensor, y: Tensor, num_classes: int) -> Tensor:
    """G [K, d]: g_k is the mean of the embeddings of class k (NaN rows for absent classes)."""
    sums = torch.zeros(num_classes, e.shape[1], dtype=e.dtype, device=e.device).index_add_(0, y, e)
    counts = torch.bincount(y, minlength=num_classes).to(e.dtype)          # [K]
    return sums / counts.unsqueeze(1)


def _present_centres(e: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """(G [K, d], present [K] bool), with K = max label + 1."""
    G = class_centres(e, y, int(y.max()) + 1)
    return G, torch.bincount(y, minlength=len(G)) > 0


def mean_pairwise_distance(points: Tensor) -> float:
    """Mean of |p_k - p_l| over ordered pairs k != l. points: [K, d], K >= 2."""
    K = len(points)
    if K < 2:
        return float("nan")
    return (torch.cdist(points, points).sum() / (K * (K - 1))).item()


def geometry(e: Tensor, y: Tensor) -> dict[str, float]:
    """Every per-split measure at once (the centres are computed once), by the record's names:

    cluster_size      sigma: median over all points of |e_i - g_{y_i}| (aggregated over classes, III-B)
    centre_distance   rho: mean over classes of |g_k - avg(G)|, avg(G) the global centre
    centre_separation mean over pairs k != l of |g_k - g_l| (Figs. 18-19)
    median_cosine     median over points of cos(e_i, g_{y_i})
    """
    G, present = _present_centres(e, y)
    own = G[y]                                             # [N, d]
    Gp = G[present]
    return {
        "cluster_size": (e - own).norm(dim=1).median().item(),
        "centre_distance": (Gp - Gp.mean(dim=0)).norm(dim=1).mean().item(),
        "centre_separation": mean_pairwise_distance(Gp),
        "median_cosine": F.cosine_similarity(e, own, dim=1).median().item(),
    }


def split_geometry(s: Embedded) -> dict[str, float]:
    """The catalogue's geometry measures of a split: against its own centres (Section III-B)."""
    return geometry(s.e, s.y)


def class_embedding_gaps(s: Embedded) -> dict[str, float]:
    """ce_gap of a split: how far each class embedding is from its class's centre in that split (MTM heads)."""
    if s.class_embeddings is None:
        return {}
    return {"ce_gap": class_embedding_gap(s.class_embeddings, class_centres(s.e, s.y, s.num_classes))}


def class_embedding_separation(s: Embedded) -> dict[str, float]:
    """ce_separation: the class embeddings' mean pairwise distance, of C alone (MTM heads)."""
    return {} if s.class_embeddings is None else {"ce_separation": mean_pairwise_distance(s.class_embeddings)}


def upper_median(values: Tensor) -> float:
    """The authors' median: the element at index n // 2 of the sorted values (the upper of the middle two where n
    is even; torch.median takes the lower)."""
    return values.sort().values[len(values) // 2].item()


def split_authors_geometry(s: Embedded) -> dict[str, float]:
    """With eval.authors_geometry: the geometry as the authors' analysis code measures it (Figs. 15-19), beside ours.
    Against the TRAINING split's centres G where ours uses the split's own, with their upper median:
      authors_cluster_size       upper median over points of |e_i - g_{y_i}|
      authors_median_cosine      upper median over points of cos(e_i, g_{y_i})
      authors_centre_separation  the sum over unordered pairs k < l of the split's own |g_k - g_l|, over K: (K - 1) / 2
                                 times our mean (their sum is over k < l; divided by K, not by the pair count)"""
    if not s.spec.eval.authors_geometry:
        return {}
    own = s.centres[s.y]                                   # [N, d] training centres (absent classes: 0)
    G, present = _present_centres(s.e, s.y)
    Gp = G[present]                                        # [K', d] the split's own centres
    K = len(Gp)
    pairs = torch.cdist(Gp, Gp).triu(diagonal=1).sum()     # over k < l
    return {"authors_cluster_size": upper_median((s.e - own).norm(dim=1)),
            "authors_median_cosine": upper_median(F.cosine_similarity(s.e, own, dim=1)),
            "authors_centre_separation": (pairs / K).item()}


def authors_centre_distance(s: Embedded) -> dict[str, float]:
    """With eval.authors_geometry: ρ as the authors measure it: the mean over classes of |g_k - avg(G)| for the
    TRAINING split's centres (ours: each split's own), so one value a run."""
    if not s.spec.eval.authors_geometry:
        return {}
    present = torch.bincount(s.train_y, minlength=len(s.centres)) > 0
    G = s.centres[present]
    return {"authors_centre_distance": (G - G.mean(dim=0)).norm(dim=1).mean().item()}


LDA_REG = 1e-3   # Fisher LDA: Sw + LDA_REG * trace(Sw) / d * I, so that Sw is invertible (d > N, collapsed classes)
DEFAULT_PROJECTION = "centres"


def _unit(v: Tensor) -> Tensor:
    return v / v.norm().clamp_min(1e-30)


def _max_variance_axis(x: Tensor, against: list[Tensor], starts: Tensor, steps: int = 64) -> Tensor:
    """The unit direction [d] along which the rows of x [N, d] (centred) vary most, among the directions
    orthogonal to the unit vectors `against` (each [d]; at most one, or mutually orthogonal), by power
    iteration from the first of `starts` [m, d] not (nearly) in their span. A zero vector where d leaves
    no orthogonal direction."""
    def deflate(v: Tensor) -> Tensor:
        for a in against:
            v = v - (v @ a) * a
        return v

    d = x.shape[1]
    if d <= len(against):
        return torch.zeros(d, dtype=x.dtype, device=x.device)
    # the basis vector where the `against` vectors are smallest is never in their span (for one of them)
    smallest = torch.stack(against).abs().sum(dim=0).argmin() if against else torch.tensor(0)
    candidates = [*starts, F.one_hot(smallest, d).to(x)]
    u = next((deflate(s) for s in candidates if deflate(s).norm() >= 0.5 * s.norm() > 0), deflate(candidates[-1]))
    u = _unit(u)
    for _ in range(steps):
        v = deflate(x.T @ (x @ u))                                     # [d]
        if v.norm() <= 1e-12 * (x.norm() ** 2).clamp_min(1e-30):    # no variance left orthogonally: keep u
            break
        u = _unit(v)
    return u


def _fix_signs(axes: Tensor) -> Tensor:
    """axes [d, 2] with each column's largest-magnitude entry made positive (as sklearn's svd_flip),
    so that a picture does not mirror between epochs merely because an eigensolver chose a sign."""
    top = axes.abs().argmax(dim=0)                                      # [2]
    signs = axes[top, torch.arange(axes.shape[1], device=axes.device)].sign()
    return axes * torch.where(signs == 0, torch.ones_like(signs), signs)


def pca_axes(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """PCA of the centred points x [N, d]: (axes [d, 2], explained [2], Vh [r, d]) with explained the
    share of the points' variance along each axis and Vh all r = min(N, d) principal directions."""
    _, S, Vh = torch.linalg.svd(x, full_matrices=False)                # S [r], Vh [r, d]
    variance = S.pow(2)
    axes = [Vh[i] for i in range(min(2, len(Vh)))]
    while len(axes) < 2:                                                # d < 2 or N < 2: pad
        axes.append(_max_variance_axis(x, axes, Vh))
    explained = torch.zeros(2, dtype=x.dtype, device=x.device)
    explained[:min(2, len(variance))] = (variance / variance.sum().clamp_min(1e-30))[:2]
    return _fix_signs(torch.stack(axes, dim=1)), explained, Vh


def centre_axes(centres: Tensor, x: Tensor, starts: Tensor) -> tuple[Tensor, Tensor]:
    """PCA of the class centres G [K, d] (rows with a NaN, absent classes, left out): the orthonormal
    plane [d, 2] through which the centres spread most, and the share of their variance along each
    axis [2]. With two classes (or centres on one line) the centres span one axis only; the second is
    then the direction of largest variance of the points x [N, d] (centred) orthogonal to it.
    starts [m, d]: where the power iteration for that second axis begins (the points' principal axes)."""
    G = centres[torch.isfinite(centres).all(dim=1)].double()           # [K', d]
    rank, axes = 0, []
    explained = torch.zeros(2, dtype=x.dtype, device=x.device)
    if len(G) >= 2:   # float64: two centres far from the origin and close together centre to rank 1 exactly
        _, S, Vh = torch.linalg.svd(G - G.mean(dim=0), full_matrices=False)
        rank = int((S > 1e-9 * S[0]).sum()) if S[0] > 0 else 0
        axes = [Vh[i].to(x.dtype) for i in range(min(2, rank))]
        explained[:min(2, rank)] = (S.pow(2) / S.pow(2).sum())[:min(2, rank)].to(x.dtype)
    while len(axes) < 2:
        axes.append(_max_variance_axis(x, axes, starts))
    return _fix_signs(torch.stack(axes, dim=1)), explained


def fisher_axes(e: Tensor, y: Tensor, reg: float = LDA_REG, basis: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Fisher LDA of the points e [N, d] with labels y [N]: (axes [d, 2], lambda [max(K, 2)]), lambda
    every generalised eigenvalue, largest first (zeros past rank K - 1), the first two the axes'.

    Sb = sum_k (n_k / N) (m_k - m)(m_k - m)^T (between classes), Sw = (1/N) sum_i (e_i - m_{y_i})(...)^T
    (within), regularised as Sw' = Sw + reg * trace(Sw) / d * I. The axes are the top generalised
    eigenvectors, Sb a = lambda Sw' a, scaled so that a^T Sw' a = 1 (a unit along an axis is one
    within-class standard deviation). Sb has rank at most K - 1, so with two classes there is one
    discriminant axis; every missing axis (lambda = 0) is the direction of largest variance of the points
    orthogonal to the axes before it, scaled the same way. Computed in float64 in the span of the centred
    points (basis: their principal directions Vh [r, d], r = min(N, d); computed when not given), which
    holds every axis with lambda > 0, so that d > N costs r x r matrices, not d x d.
    """
    N, d = e.shape
    x = e - e.mean(dim=0)                                               # [N, d]
    if basis is None:
        basis = torch.linalg.svd(x, full_matrices=False)[2]             # [r, d]
    # coordinates z [N, r] in the span; when it is all of R^d (N >= d) the rotation is skipped
    V = basis.double() if len(basis) < d else None                      # [r, d]
    z = x.double() @ V.T if V is not None else x.double()               # [N, r]
    classes, yi = torch.unique(y, return_inverse=True)
    n = torch.bincount(yi, minlength=len(classes)).double()            # [K]
    M = torch.zeros(len(classes), z.shape[1], dtype=z.dtype, device=z.device).index_add_(0, yi, z) / n[:, None]
    Zw = z - M[yi]                                                      # [N, r]
    Sw = Zw.T @ Zw / N                                                  # [r, r]
    alpha = (reg * Sw.trace() / d).clamp_min(1e-30)
    Sw_reg = Sw + alpha * torch.eye(len(Sw), dtype=z.dtype, device=z.device)
    B = (n / N).sqrt()[:, None] * (M - z.mean(dim=0))                   # [K, r]: Sb = B^T B
    # Sb a = lambda L L^T a  <=>  (L^-1 B^T)(L^-1 B^T)^T u = lambda u, u = L^T a; the K x K Gram matrix
    # X^T X has the same nonzero eigenvalues, with u = X w / sqrt(lambda).
    L = torch.linalg.cholesky(Sw_reg)                                   # [r, r]
    X = torch.linalg.solve_triangular(L, B.T, upper=False)              # [r, K]
    lam, W = torch.linalg.eigh(X.T @ X)                                 # ascending [K], [K, K]
    lam, W = lam.flip(0), W.flip(1)
    rank = int((lam > 1e-9 * lam[0]).sum()) if len(lam) and lam[0] > 0 else 0
    k = min(2, rank)
    U = X @ W[:, :k] / lam[:k].sqrt()                                   # [r, k], orthonormal
    A = torch.linalg.solve_triangular(L.T, U, upper=True)               # [r, k], A^T Sw' A = I
    axes = [A[:, i] for i in range(k)]
    # the points' top principal axes, in z's coordinates (where the power iteration starts)
    starts = torch.eye(z.shape[1], dtype=z.dtype, device=z.device)[:2] if V is not None else basis[:2].double()
    while len(axes) < 2:
        a = _max_variance_axis(z, [_unit(a) for a in axes], starts)
        axes.append(a / (a @ Sw_reg @ a).sqrt().clamp_min(1e-30))
    criterion = torch.zeros(max(2, len(lam)), dtype=z.dtype, device=z.device)
    criterion[:len(lam)] = lam.clamp_min(0.0)
    criterion[rank:] = 0.0                                              # numerically zero
    A = torch.stack(axes, dim=1)                                        # [r, 2]
    return _fix_signs(V.T @ A if V is not None else A).to(e.dtype), criterion.to(e.dtype)


def projection_axes(e: Tensor, y: Tensor, centres: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
    """The snapshot's planes, by name: (axes [d, 2], explained [2]) for e [N, d], y [N], centres G [K, d].

    centres  PCA of the class centres G (centre_axes): explained = share of the centres' variance
    lda      Fisher LDA of the points (fisher_axes): explained = share of the Fisher criterion
             trace(Sw'^-1 Sb), the sum of all K - 1 generalised eigenvalues, along each axis
    pca      PCA of the points (pca_axes): explained = share of the points' variance
    """
    x = e - e.mean(dim=0)                                               # [N, d]
    pca, explained, Vh = pca_axes(x)
    lda, lam = fisher_axes(e, y, basis=Vh)
    return {
        "centres": centre_axes(centres, x, Vh[:2]),
        "lda": (lda, lam[:2] / lam.sum().clamp_min(1e-30)),
        "pca": (pca, explained),
    }


def _rounded(t: Tensor | None, digits: int = 4) -> list | None:
    """t as nested lists of floats to `digits` significant digits (the JSON stays small)."""
    if t is None:
        return None
    return [[float(f"{v:.{digits}g}") for v in row] for row in t.tolist()] if t.dim() == 2 else \
        [float(f"{v:.{digits}g}") for v in t.tolist()]


def embedding_snapshot(e: Tensor, y: Tensor, centres: Tensor, class_embeddings: Tensor | None,
                       max_points: int = 2000, seed: int = 0) -> dict:
    """A small 2-D picture of the embedding space, like the paper's Figs. 2-3, as plain data, in
    three planes (projection_axes): "centres" (the default: the classes separate), "lda" and "pca".

    e: [N, d] evaluation embeddings, y: [N]; centres G and class embeddings C: [K, d]. At most
    `max_points` points (a fixed random subset) are kept. Each plane projects the points, G and C
    with the same axes, about the points' mean; coordinates keep 4 significant digits.

    The PCA plane keeps the flat layout of the snapshots before planes were added (points, centres,
    class_embeddings, explained_variance), so that their readers still read it; the other planes are
    under "projections" as {name: {points, centres, class_embeddings, explained}}. Read either layout
    with mtm_engine.snapshots.projections.
    """
    e, y = e.detach(), y.detach()
    if len(e) > max_points:
        keep = torch.randperm(len(e), generator=torch.Generator().manual_seed(seed))[:max_points].to(e.device)
        e, y = e[keep], y[keep]
    if e.device.type == "mps":   # no float64 (and few linalg kernels) on MPS: the plane is small work
        e, y, centres = e.cpu(), y.cpu(), centres.cpu()
        class_embeddings = class_embeddings.cpu() if class_embeddings is not None else None
    e = e.float()
    mean = e.mean(dim=0)                                                # [d]
    G = centres.to(e).nan_to_num(0.0)                                   # [K, d]
    C = class_embeddings.detach().to(e) if class_embeddings is not None else None

    def plane(axes: Tensor, explained: Tensor, explained_key: str) -> dict:
        project = lambda points: _rounded((points - mean) @ axes)      # noqa: E731  [n, 2]
        return {"points": project(e), "centres": project(G),
                "class_embeddings": project(C) if C is not None else None,
                explained_key: _rounded(explained)}

    planes = projection_axes(e, y, centres.to(e))
    return {
        "labels": y.tolist(),
        **plane(*planes.pop("pca"), "explained_variance"),
        "projections": {name: plane(axes, explained, "explained") for name, (axes, explained) in planes.items()},
        "default": DEFAULT_PROJECTION,
    }


def class_embedding_gap(C: Tensor, G: Tensor) -> float:
    """How closely the class embeddings track the centres: mean over classes of |c_k - g_k|.
    C, G: [K, d]; classes whose centre is NaN (absent) are left out."""
    present = ~G.isnan().any(dim=1)
    return (C[present] - G[present]).norm(dim=1).mean().item()
