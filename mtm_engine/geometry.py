"""Embedding-space measures (paper Section III-B and IV-F), pure functions of tensors.

e: [N, d] embeddings, y: [N] class labels (long). Classes absent from y have no centre and are
left out of the class-wise means.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


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


def embedding_snapshot(e: Tensor, y: Tensor, centres: Tensor, class_embeddings: Tensor | None,
                       max_points: int = 2000, seed: int = 0) -> dict:
    """A small 2-D picture of the embedding space, like the paper's Figs. 2-3, as plain data.

    e: [N, d] evaluation embeddings, y: [N]; centres G and class embeddings C: [K, d]. At most
    `max_points` points (a fixed random subset) are kept. The projection is PCA of those points;
    G and C are projected with the same axes.
    """
    if len(e) > max_points:
        keep = torch.randperm(len(e), generator=torch.Generator().manual_seed(seed))[:max_points].to(e.device)
        e, y = e[keep], y[keep]
    mean = e.mean(dim=0)
    _, S, Vh = torch.linalg.svd(e - mean, full_matrices=False)
    axes = Vh[:2].T                                                     # [d, 2]
    variance = S.pow(2)
    project = lambda points: ((points - mean) @ axes).tolist()         # noqa: E731
    return {
        "points": project(e),
        "labels": y.tolist(),
        "centres": project(centres.nan_to_num(0.0)),
        "class_embeddings": project(class_embeddings) if class_embeddings is not None else None,
        "explained_variance": (variance[:2] / variance.sum().clamp_min(1e-12)).tolist(),
    }


def class_embedding_gap(C: Tensor, G: Tensor) -> float:
    """How closely the class embeddings track the centres: mean over classes of |c_k - g_k|.
    C, G: [K, d]; classes whose centre is NaN (absent) are left out."""
    present = ~G.isnan().any(dim=1)
    return (C[present] - G[present]).norm(dim=1).mean().item()
