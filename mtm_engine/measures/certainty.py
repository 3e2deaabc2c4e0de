"""How certain is a prediction? Scores per image, and how well they rank (paper Section VI-A's first
open question), as pure functions of tensors.

Every score is "higher = more certain". e: [N, d] embeddings; refs: [K, d] reference points (the
class centres G or the class embeddings C); logits: [N, K]; y: [N] labels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

COVERAGES = (0.8, 0.9, 0.95)   # selective classification: accuracy on the most certain 80/90/95%
ECE_BINS = 15
HISTOGRAM_TAIL = 0.005   # the share of scores on each side that histograms gather into their end bins
GAUSSIAN_JITTER = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)   # added to the diagonal until Cholesky works
SCORE_CHUNK_BYTES = 256 * 2**20   # the Gaussian score's float64 working arrays per chunk of images


# --- scores -------------------------------------------------------------------------------------

def distance_scores(e: Tensor, refs: Tensor) -> dict[str, Tensor]:
    """The nearest-reference scores of an MTM head, each [N]:
    distance  -|e - r_1|, r_1 the nearest reference (Eq. 11's distance, negated)
    margin    |e - r_2| - |e - r_1|, r_2 the second nearest (large: far from any rival class)
    cosine    max_k cos(e, r_k) (Eq. 10's similarity)"""
    d = torch.cdist(e, refs)                           # [N, K]
    two = d.topk(2, dim=1, largest=False).values       # [N, 2], ascending
    cosine = (F.normalize(e, dim=1) @ F.normalize(refs, dim=1).T).max(dim=1).values
    return {"distance": -two[:, 0], "margin": two[:, 1] - two[:, 0], "cosine": cosine}


def softmax_scores(logits: Tensor) -> dict[str, Tensor]:
    """A pure head's scores, each [N]: msp = max_k softmax(logits)_k (maximum softmax probability);
    energy = logsumexp_k logits_k (the negative free energy of Liu et al. 2020, at temperature 1)."""
    return {"msp": logits.softmax(dim=1).max(dim=1).values, "energy": logits.logsumexp(dim=1)}


class ClassGaussians:
    """A Gaussian per class fitted on training embeddings (the density of DDU, Mukhoti et al. 2023):
    mean mu_k [K, d] and covariance Sigma_k [K, d, d]. score(e) = log sum_k N(e; mu_k, Sigma_k) [N], the
    log density of the mixture with equal weights, up to the constant log K."""

    def __init__(self, e: Tensor, y: Tensor, num_classes: int):
        e = e.double()   # covariances of d = 128..2000 near-collapsed clusters need the precision
        self.means = torch.stack([e[y == k].mean(dim=0) for k in range(num_classes)])           # [K, d]
        centred = [e[y == k] - self.means[k] for k in range(num_classes)]
        cov = torch.stack([c.T @ c / max(1, len(c) - 1) for c in centred])                      # [K, d, d]
        eye = torch.eye(e.shape[1], dtype=e.dtype, device=e.device)
        for jitter in GAUSSIAN_JITTER:   # the smallest ridge that makes every Sigma_k positive definite
            chol, info = torch.linalg.cholesky_ex(cov + jitter * eye)
            if not info.any():
                break
        else:
            raise ValueError("class covariances are not positive definite even with a ridge of 1; "
                             "the embeddings have collapsed")
        self.chol = chol   # [K, d, d] lower triangular

    def score(self, e: Tensor) -> Tensor:
        """e [N, d] -> [N], in chunks of images: all N at once would be a [K, N, d] float64 array (32 GB
        for CIFAR-100's test split at d = 2000)."""
        K, d = self.means.shape
        chunk = max(1, SCORE_CHUNK_BYTES // (2 * K * d * 8))   # diff and z, float64
        return torch.cat([self._score(part) for part in e.split(chunk)])

    def _score(self, e: Tensor) -> Tensor:
        diff = e.double()[None] - self.means[:, None]                                # [K, n, d]
        z = torch.linalg.solve_triangular(self.chol, diff.transpose(1, 2), upper=False)   # [K, d, n]
        log_det = 2 * self.chol.diagonal(dim1=1, dim2=2).log().sum(dim=1)            # [K]
        d = e.shape[1]
        log_p = -0.5 * (z.pow(2).sum(dim=1) + log_det[:, None] + d * math.log(2 * math.pi))   # [K, n]
        return log_p.logsumexp(dim=0).float()


# --- how well a score ranks ---------------------------------------------------------------------

def auroc(score: Tensor, positive: Tensor) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties counting 1/2
    (the Mann-Whitney U statistic over the pairs, from average ranks). positive: [N] bool."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(score.double())
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2
    return (u / (n_pos * n_neg)).item()


def _average_ranks(x: Tensor) -> Tensor:
    """1-based ranks of x [N], tied values sharing the mean of their ranks."""
    order = x.argsort()
    sorted_x = x[order]
    first = torch.ones(len(x), dtype=torch.bool, device=x.device)
    first[1:] = sorted_x[1:] != sorted_x[:-1]
    group = first.cumsum(0) - 1                                              # [N] tie-group of each sorted item
    starts = torch.nonzero(first).squeeze(1)                                 # [G] 0-based first positions
    ends = torch.cat([starts[1:], torch.tensor([len(x)], device=x.device)])  # [G] exclusive
    mean_rank = (starts + 1 + ends).double() / 2                             # mean of ranks start+1 .. end
    ranks = torch.empty(len(x), dtype=torch.double, device=x.device)
    ranks[order] = mean_rank[group]
    return ranks


def fpr_at_tpr(score: Tensor, positive: Tensor, tpr: float = 0.95) -> float:
    """The share of negatives accepted by the highest threshold that accepts (score >= t) at least
    `tpr` of the positives (out-of-distribution: FPR at 95% TPR, in-distribution positive)."""
    pos = score[positive].sort(descending=True).values
    threshold = pos[max(0, math.ceil(tpr * len(pos)) - 1)]
    return (score[~positive] >= threshold).double().mean().item()


def risk_coverage(score: Tensor, correct: Tensor) -> tuple[Tensor, Tensor]:
    """Selective classification, the most certain first: coverage [N] = k/N and risk [N] = the
    error rate among the k most certain images, for k = 1..N."""
    order = score.argsort(descending=True, stable=True)
    errors = (~correct[order]).double().cumsum(0)
    k = torch.arange(1, len(score) + 1, dtype=torch.double, device=score.device)
    return k / len(score), errors / k


def risk_coverage_points(score: Tensor, correct: Tensor, points: int = 100) -> dict[str, list[float]]:
    """The risk-coverage curve at `points` evenly spaced coverages (1/points .. 1), for plots and files."""
    coverage, risk = risk_coverage(score, correct)
    at = torch.linspace(1 / points, 1, points, dtype=torch.double)
    k = (at * len(score)).ceil().long().clamp(1, len(score)) - 1
    return {"coverage": coverage[k].tolist(), "risk": risk[k].tolist()}


def histogram(values: dict[str, Tensor], bins: int = 30) -> dict[str, list[float]]:
    """Counts of each named set of scores over one shared set of `bins` equal-width bins:
    {"edges": [bins + 1], name: [bins], ...} (in- against out-of-distribution, say). The bins span
    the 0.5th to 99.5th percentile of all the scores, and the outer ones count what lies beyond:
    a Gaussian's log density has a tail of outliers that would squeeze everything into one bin."""
    everything = torch.cat(list(values.values())).double()
    low = torch.quantile(everything, HISTOGRAM_TAIL, interpolation="lower").item()
    high = torch.quantile(everything, 1 - HISTOGRAM_TAIL, interpolation="higher").item()
    high = high if high > low else low + 1.0
    edges = torch.linspace(low, high, bins + 1, dtype=torch.double)
    return {"edges": edges.tolist(),
            **{name: torch.histc(v.double().clamp(low, high), bins, low, high).tolist() for name, v in values.items()}}


def aurc(score: Tensor, correct: Tensor) -> float:
    """Area under the risk-coverage curve: the mean of the risk over k = 1..N (lower is better)."""
    return risk_coverage(score, correct)[1].mean().item()


def accuracy_at_coverage(score: Tensor, correct: Tensor, coverage: float) -> float:
    """Accuracy on the ceil(coverage * N) most certain images."""
    keep = score.argsort(descending=True, stable=True)[:max(1, math.ceil(coverage * len(score)))]
    return correct[keep].double().mean().item()


# --- calibration --------------------------------------------------------------------------------

def expected_calibration_error(probs: Tensor, y: Tensor, bins: int = ECE_BINS) -> float:
    """ECE: sum over equal-width confidence bins b of |B_b|/N * |accuracy(B_b) - confidence(B_b)|,
    the confidence being max_k probs_k. probs: [N, K] rows summing to 1."""
    confidence, pred = probs.max(dim=1)
    correct = (pred == y).double()
    which = (confidence.double() * bins).ceil().clamp(1, bins).long() - 1     # (i/bins, (i+1)/bins] -> i
    total = torch.zeros(bins, dtype=torch.double, device=probs.device)
    gap = total.clone().index_add_(0, which, correct - confidence.double())
    total.index_add_(0, which, torch.ones_like(correct))
    return (gap.abs().sum() / len(y)).item()


def fit_temperature(logits: Tensor, y: Tensor) -> float:
    """The temperature T > 0 that minimises the negative log-likelihood of softmax(logits / T) on
    (logits, y): to be fitted on the VALIDATION split, never on test. logits: [N, K]."""
    log_t = torch.zeros((), dtype=torch.double, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")
    z = logits.detach().double()

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    return log_t.exp().item()
