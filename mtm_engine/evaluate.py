"""An epoch's evaluation: embed the splits, classify with every classifier (paper Eq. 9-11), measure the
geometry (Section III-B), and keep the 2-D embedding snapshot the TUI draws."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mtm_engine.atomic import atomic_write
from mtm_engine.classifiers import predict
from mtm_engine.config import Spec
from mtm_engine.data import Dataset, Split
from mtm_engine.devices import autocast
from mtm_engine.geometry import (
    class_centres,
    class_embedding_gap,
    embedding_snapshot,
    geometry,
    mean_pairwise_distance,
)
from mtm_engine.models import MovingTargetsNet
from mtm_engine.records import METRICS, SNAPSHOTS, acc_key


@torch.no_grad()
def embed(model: MovingTargetsNet, images: Split, spec: Spec, backbone: bool = False) -> tuple[Tensor, Tensor | None]:
    """Embeddings [N, d] of a split's N images (and logits [N, K] for pure heads) in eval mode: float32, as the
    heads give them; with `backbone`, the backbone's features [N, F] instead, before any head (no logits).

    eval.flip_tta: the outputs for each image and its mirror image are averaged; a normalised
    embedding's mean goes back onto its sphere (radius model.scale), where the class embeddings are."""
    model.eval()
    forward = (lambda images: (model.features(images).float(), None)) if backbone else model
    es, ls = [], []
    for chunk in images.chunks(spec.eval.batch_size):
        with autocast(chunk.device, spec):
            e, logits = forward(chunk)
            if spec.eval.flip_tta:
                e_flip, logits_flip = forward(chunk.flip(-1))
                e = (e + e_flip) / 2
                logits = (logits + logits_flip) / 2 if logits is not None else None
                if spec.model.normalize and spec.model.head == "mtm" and not backbone:
                    e = spec.model.scale * torch.nn.functional.normalize(e, dim=1)
        es.append(e)
        if logits is not None:
            ls.append(logits)
    return torch.cat(es), (torch.cat(ls) if ls else None)


def centre_subset(train: Split, samples: int) -> Split:
    """The training images whose embeddings give the centres G: `samples` of them (eval.centre_samples),
    the same fixed subset every epoch, or all if 0."""
    if 0 < samples < len(train):
        keep = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:samples]
        return train.subset(keep.to(train.y.device))
    return train


def evaluate(model: MovingTargetsNet, data: Dataset, spec: Spec) -> tuple[dict[str, float], dict[str, Any]]:
    """Classifier accuracies and geometry on the validation and test splits, and a 2-D snapshot
    of the test embeddings (see geometry.embedding_snapshot).

    Keys: records.METRICS[name].key(split, classifier): the accuracies, the geometry, for MTM heads
    ce_gap (per split) and ce_separation (of C alone), and with eval.retrieval the test split's
    retrieval metrics against the training embeddings.
    The centres G that the classifiers use come from the TRAINING split only.
    """
    centre_images = centre_subset(data.train, spec.eval.centre_samples)
    e_train, _ = embed(model, centre_images, spec)
    y = centre_images.y
    # A class absent from the training split has no centre; put it at the origin rather than NaN,
    # which argmax/argmin would otherwise pick.
    G = class_centres(e_train, y, data.num_classes).nan_to_num(0.0)   # [K, d]
    C = model.targets().detach() if model.class_embeddings is not None else None
    record: dict[str, float] = {}
    snapshot: dict[str, Any] = {}
    for name, split in (("val", data.val), ("test", data.test)):
        if len(split) == 0:   # data.val_fraction = 0: no validation split (a refit on train+val)
            continue
        e, logits = embed(model, split, spec)
        for classifier in spec.classifiers:
            pred = predict(classifier, e, centres=G, class_embeddings=C, logits=logits)
            record[acc_key(name, classifier)] = (pred == split.y).float().mean().item()
        record.update({METRICS[k].key(name): v for k, v in geometry(e, split.y).items()})
        if C is not None:
            record[METRICS["ce_gap"].key(name)] = class_embedding_gap(C, class_centres(e, split.y, data.num_classes))
        if name == "test":
            snapshot = embedding_snapshot(e, split.y, G, C)
            if spec.eval.retrieval:
                from mtm_engine.metric_learning import retrieval

                record.update({METRICS[k].key(name): v for k, v in retrieval(e, split.y, e_train, y).items()})
    if C is not None:
        record[METRICS["ce_separation"].key()] = mean_pairwise_distance(C)
    return record, snapshot


def write_snapshot(run_dir: Path, snapshot: dict[str, Any], epoch: int, best: bool) -> None:
    """The embedding snapshot of the last epoch, and of the best one (validation accuracy of the
    first classifier), as small JSON files beside the checkpoint (at most 2,000 points)."""
    text = json.dumps({"epoch": epoch, **snapshot})
    for which in ("last", "best") if best else ("last",):
        atomic_write(run_dir / SNAPSHOTS[which], text)
