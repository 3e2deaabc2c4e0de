"""The optimiser and the learning-rate schedule of a run (train.optimizer, train.schedule)."""

from __future__ import annotations

import math

import torch

from mtm_engine.config import Spec
from mtm_engine.models import MovingTargetsNet


def make_optimiser(spec: Spec, model: MovingTargetsNet) -> torch.optim.Optimizer:
    """Adam (the paper's), AdamW or SGD. The class embeddings are their own group: learning rate
    times train.ce_lr_mult, and no weight decay (it would pull the targets to the origin)."""
    t = spec.train
    C = model.class_embeddings
    groups = [{"params": [p for p in model.parameters() if p is not C], "weight_decay": t.weight_decay}]
    if C is not None:
        groups.append({"params": [C], "lr": t.lr * t.ce_lr_mult, "weight_decay": 0.0})
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum)
    return (torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam)(groups, lr=t.lr)


def make_schedule(spec: Spec, optimiser: torch.optim.Optimizer, batches_per_epoch: int):
    """The learning-rate schedule, stepped once per batch: none or cosine (each after a linear
    warm-up of train.warmup_epochs), or one-cycle (rising for warmup_epochs, 30% if 0)."""
    t = spec.train
    total = max(1, t.epochs * batches_per_epoch)
    warmup = int(t.warmup_epochs * batches_per_epoch)
    if t.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimiser, max_lr=[g["lr"] for g in optimiser.param_groups], total_steps=total,
            pct_start=warmup / total if warmup else 0.3)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if t.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimiser, factor)
