"""Does the clustering transfer to classes never trained on? Few-shot episodes on held-out classes
(paper Section VI-A's second open question), as pure functions of embeddings.

An N-way K-shot episode draws N of the held-out classes, K support images of each from their
TRAINING images and `queries` query images of each from their TEST images (so support and queries
never share an image), and classifies each query by its nearest support centre (the mean of a
class's K support embeddings). The generalised setting puts those K-shot centres of the new classes
beside the full centres G of the trained classes and classifies every test image among them all.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import torch
from torch import Tensor

from mtm_engine.classifiers import nearest

EPISODES = 600
QUERIES = 15          # query images of each class in an episode (the usual few-shot protocol)
Z_95 = 1.96           # the normal quantile of a 95% confidence interval of a mean over many episodes


@dataclass(frozen=True)
class Episode:
    classes: Tensor   # [N] the episode's classes (original labels)
    support: Tensor   # [N, K] indices into the support pool, row n of class classes[n]
    query: Tensor     # [N, Q] indices into the query pool


def sample_episode(support_y: Tensor, query_y: Tensor, classes: list[int], ways: int, shots: int,
                   queries: int, generator: torch.Generator) -> Episode:
    """Draw one episode: `ways` of `classes`, `shots` support indices of each (from support_y's
    images, without repetition) and up to `queries` query indices of each (from query_y's)."""
    pick = torch.randperm(len(classes), generator=generator)[:ways]
    chosen = torch.tensor(classes)[pick]
    support, query = [], []
    for k in chosen.tolist():
        pool = torch.nonzero(support_y == k).squeeze(1)
        support.append(pool[torch.randperm(len(pool), generator=generator)[:shots]])
        pool = torch.nonzero(query_y == k).squeeze(1)
        query.append(pool[torch.randperm(len(pool), generator=generator)[:queries]])
    q = min(len(x) for x in query)
    return Episode(chosen, torch.stack(support), torch.stack([x[:q] for x in query]))


def episode_accuracy(support_e: Tensor, query_e: Tensor, episode: Episode, metric: str) -> float:
    """Share of the episode's queries whose nearest support centre is their own class's.
    support_e: [M, d] embeddings of the support pool; query_e: [M', d] of the query pool."""
    centres = support_e[episode.support].mean(dim=1)                   # [N, d]
    ways, per_class = episode.query.shape
    predicted = nearest(query_e[episode.query.reshape(-1)], centres, metric)   # [N * Q]
    truth = torch.arange(ways).repeat_interleave(per_class)
    return (predicted == truth).double().mean().item()


def generalised_accuracy(old_centres: Tensor, support_e: Tensor, episode: Episode, test_e: Tensor,
                         test_y: Tensor, old_classes: list[int], metric: str) -> tuple[float, float]:
    """(accuracy on the old classes' test images, on the new ones'), classifying every test image
    among the old classes' centres G [K_old, d] and the new classes' K-shot centres together.
    test_y holds original labels; old_classes[i] is the label of old_centres[i]."""
    centres = torch.cat([old_centres, support_e[episode.support].mean(dim=1)])    # [K_old + N, d]
    labels = torch.tensor(old_classes + episode.classes.tolist())
    predicted = labels[nearest(test_e, centres, metric)]
    old = torch.isin(test_y, torch.tensor(old_classes))
    new = torch.isin(test_y, episode.classes)
    right = predicted == test_y
    return right[old].double().mean().item(), right[new].double().mean().item()


def mean_ci(values: list[float]) -> tuple[float, float]:
    """(mean, half-width of its 95% confidence interval: 1.96 sample std / sqrt(n))."""
    if len(values) < 2:
        return (values[0] if values else math.nan), math.nan
    return statistics.fmean(values), Z_95 * statistics.stdev(values) / math.sqrt(len(values))
