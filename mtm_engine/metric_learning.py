"""pytorch-metric-learning (the optional `metric` extra), the only module that imports it: its
proxy-based losses with the class embeddings as proxies, and its retrieval metrics.

Imported lazily: without the extra, everything else works, and config.validate names the extra
when a run asks for one of these.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from mtm_engine import install_hint
from mtm_engine.errors import ConfigError

if TYPE_CHECKING:
    from mtm_engine.evaluate import Embedded

RETRIEVAL = {   # record name -> AccuracyCalculator's name
    "precision_at_1": "precision_at_1",
    "r_precision": "r_precision",
    "map_at_r": "mean_average_precision_at_r",
    "nmi": "NMI",
    "ami": "AMI",
}
KNN_BATCH = 1000   # queries at a time: 10,000 x 10,000 cosine similarities would take 400 MB at once


def _library() -> ModuleType:
    try:
        import pytorch_metric_learning
        import pytorch_metric_learning.losses
        import pytorch_metric_learning.utils.accuracy_calculator  # noqa: F401
    except ImportError:   # config.validate says so first; this is for direct calls
        raise ConfigError(f"this needs pytorch-metric-learning, which is not installed; {install_hint('metric')}") from None
    return pytorch_metric_learning


class ProxyLoss:
    """A proxy-based loss of pytorch-metric-learning, its proxies being the model's class embeddings C:
    the library's own proxy parameter is dropped, and C [K, d] (or C^T [d, K], where the library keeps
    a weight matrix) stands in for it, so that C is one parameter, trained by the loss and read by
    cos_ce/euc_ce, the geometry and every view. The library's defaults otherwise (ProxyAnchor: margin
    0.1, alpha 32; ProxyNCA: softmax scale 1; NormalizedSoftmax: temperature 0.05; ArcFace: margin
    28.6 degrees, scale 64). The library averages over the batch; reduction "sum" multiplies by B,
    as the paper's losses sum."""

    def __init__(self, library_name: str, attribute: str):
        self.library_name, self.attribute = library_name, attribute
        self.built: dict[tuple[int, int], torch.nn.Module] = {}   # (K, d) -> the library's loss, built once

    def _loss(self, K: int, d: int) -> torch.nn.Module:
        """The library's loss object for K classes in d dimensions; built on the first batch only (building
        allocates a proxy tensor that is thrown away)."""
        if (K, d) not in self.built:
            loss = getattr(_library().losses, self.library_name)(num_classes=K, embedding_size=d)
            delattr(loss, self.attribute)                        # its own proxies: C replaces them
            loss.cast_types = lambda dtype, device: None         # C already has e's dtype and device
            self.built[K, d] = loss
        return self.built[K, d]

    def __call__(self, e: Tensor, y: Tensor, C: Tensor, *, r: float = 0.0, eps: float = 1e-8,
                 reduction: str = "sum") -> Tensor:
        loss = self._loss(*C.shape)
        # This batch's C (or a view of it), as a plain attribute: C is the model's parameter, not the loss's.
        loss.__dict__[self.attribute] = C if self.attribute == "proxies" else C.T
        mean = loss(e, y)
        return mean * len(y) if reduction == "sum" else mean


# The catalogue's proxy losses (catalogue.LOSSES names them by these attributes)
proxy_anchor = ProxyLoss("ProxyAnchorLoss", "proxies")
proxy_nca = ProxyLoss("ProxyNCALoss", "proxies")
normalized_softmax = ProxyLoss("NormalizedSoftmaxLoss", "W")
arcface = ProxyLoss("ArcFaceLoss", "W")


def _kmeans(x: Tensor, clusters: int) -> Tensor:
    """k-means labels [N] with scikit-learn (the library's default needs faiss, which we do not install)."""
    from sklearn.cluster import KMeans

    labels = KMeans(n_clusters=clusters, n_init=1, random_state=0).fit_predict(x.double().cpu().numpy())
    return torch.as_tensor(labels, device=x.device)


def retrieval(query: Tensor, query_y: Tensor, reference: Tensor, reference_y: Tensor) -> dict[str, float]:
    """Retrieval metrics of AccuracyCalculator, by cosine similarity: each query [N, d] (test) retrieves
    from the reference embeddings [M, d] (training); MAP@R and R-precision with R = the query's class
    count among the references; NMI and AMI of k-means (K clusters) of the queries against their labels."""
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.utils.inference import CustomKNN

    calculator = _library().utils.accuracy_calculator.AccuracyCalculator(
        include=tuple(RETRIEVAL.values()), k="max_bin_count", device=query.device,
        knn_func=CustomKNN(CosineSimilarity(), batch_size=KNN_BATCH), kmeans_func=_kmeans)
    found = calculator.get_accuracy(query, query_y, reference, reference_y)
    return {name: float(found[library_name]) for name, library_name in RETRIEVAL.items()}


def split_retrieval(s: Embedded) -> dict[str, float]:
    """With eval.retrieval: the test split's retrieval metrics against the training embeddings."""
    if not (s.spec.eval.retrieval and s.split == "test"):
        return {}
    return retrieval(s.e, s.y, s.train_e, s.train_y)
