"""An epoch's evaluation: embed the splits, classify with every classifier (paper Eq. 9-11), measure the
geometry (Section III-B), and keep the 2-D embedding snapshot the TUI draws."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mtm_engine.atomic import atomic_write
from mtm_engine.catalogue import load
from mtm_engine.classifiers import predict
from mtm_engine.config import Spec
from mtm_engine.data import Dataset, Split
from mtm_engine.devices import autocast
from mtm_engine.measures.geometry import class_centres, embedding_snapshot
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


@dataclass(frozen=True)
class Embedded:
    """What a measure's function (records.Metric.function) is given: one split, embedded, and what it is measured
    against."""
    split: str                       # "val" or "test"
    e: Tensor                        # [N, d] the split's embeddings
    y: Tensor                        # [N] their labels
    num_classes: int                 # K
    train_e: Tensor                  # [M, d] the training images' embeddings that give the centres
    train_y: Tensor                  # [M]
    centres: Tensor                  # G [K, d] of the training split: what the classifiers use (absent: 0)
    class_embeddings: Tensor | None  # C [K, d] of an MTM head
    spec: Spec


def measure(embedded: Embedded, per_split: bool) -> dict[str, float]:
    """The record's values of every measure of the catalogue (per split, or of the run as a whole) that a function
    measures: each function once, its values under their record keys."""
    metrics = [m for m in METRICS.values() if m.function and m.per_split == per_split]
    record: dict[str, float] = {}
    for path in dict.fromkeys(m.function for m in metrics):
        values = load(path)(embedded)
        record.update({METRICS[name].key(embedded.split): value for name, value in values.items()})
    return record


def evaluate(model: MovingTargetsNet, data: Dataset, spec: Spec) -> tuple[dict[str, float], dict[str, Any]]:
    """Classifier accuracies and the measures of the catalogue on the validation and test splits, and a 2-D
    snapshot of the test embeddings (see geometry.embedding_snapshot).

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
    embedded = None
    for name, split in (("val", data.val), ("test", data.test)):
        if len(split) == 0:   # data.val_fraction = 0: no validation split (a refit on train+val)
            continue
        e, logits = embed(model, split, spec)
        for classifier in spec.classifiers:
            pred = predict(classifier, e, centres=G, class_embeddings=C, logits=logits)
            record[acc_key(name, classifier)] = (pred == split.y).float().mean().item()
        embedded = Embedded(name, e, split.y, data.num_classes, e_train, y, G, C, spec)
        record.update(measure(embedded, per_split=True))
        if name == "test":
            snapshot = embedding_snapshot(e, split.y, G, C)
    if embedded is not None:
        record.update(measure(embedded, per_split=False))
    return record, snapshot


def write_snapshot(run_dir: Path, snapshot: dict[str, Any], epoch: int, best: bool) -> None:
    """The embedding snapshot of the last epoch, and of the best one (the epoch eval.selection picks for the
    first classifier), as small JSON files beside the checkpoint (at most 2,000 points)."""
    text = json.dumps({"epoch": epoch, **snapshot})
    for which in ("last", "best") if best else ("last",):
        atomic_write(run_dir / SNAPSHOTS[which], text)
