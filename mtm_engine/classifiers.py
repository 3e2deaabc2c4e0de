"""Nearest-neighbour classifiers (paper Eq. 9-11) and the named classifiers of Table 6.

`cos` and `euc` classify against the class centres G (from the TRAINING split's embeddings),
`cos_ce` and `euc_ce` against the learned class embeddings C, and `pure` takes the argmax of a
pure head's logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mtm_engine.catalogue import CLASSIFIERS
from mtm_engine.errors import ConfigError


def nearest(e: Tensor, refs: Tensor, metric: str) -> Tensor:
    """NN_{f,S}(e) = argmin_{s in S} f(e, s), Eq. 9. e: [N, d], refs: [K, d] -> [N] row indices.

    metric "cos": f = -cos(e, s) (Eq. 10); metric "euc": f = |e - s| (Eq. 11).
    """
    if metric == "cos":
        similarity = F.normalize(e, dim=1) @ F.normalize(refs, dim=1).T   # [N, K]
        return similarity.argmax(dim=1)
    if metric == "euc":
        return torch.cdist(e, refs).argmin(dim=1)
    raise ConfigError(f"nearest: unknown metric {metric!r}; choose cos or euc")


def predict(
    name: str, e: Tensor, *, centres: Tensor, class_embeddings: Tensor | None, logits: Tensor | None
) -> Tensor:
    """Class predictions [N] of the named classifier. e: [N, d]; centres G: [K, d]; C: [K, d];
    logits: [N, K] (pure heads only)."""
    if name not in CLASSIFIERS:
        raise ConfigError(f"unknown classifier {name!r}; choose one of {', '.join(CLASSIFIERS)}")
    entry = CLASSIFIERS[name]
    if entry.reference == "logits":
        if logits is None:
            raise ConfigError(f"classifier {name!r} needs a pure head (model.head = \"pure\")")
        return logits.argmax(dim=1)
    metric = entry.metric
    if entry.reference == "class_embeddings":
        if class_embeddings is None:
            raise ConfigError(f"classifier {name!r} needs class embeddings (model.head = \"mtm\")")
        return nearest(e, class_embeddings, metric)
    return nearest(e, centres, metric)
