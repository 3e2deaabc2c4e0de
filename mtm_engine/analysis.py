"""Post-hoc evaluation of a run's kept weights: `mtm eval` recomputes what the run recorded."""

from __future__ import annotations

from pathlib import Path

import torch

from mtm_engine.config import Spec
from mtm_engine.data import load_dataset
from mtm_engine.errors import ConfigError
from mtm_engine.models import build_model
from mtm_engine.records import BEST, CHECKPOINT
from mtm_engine.train import evaluate, read_checkpoint, resolve_device

CHECKPOINTS = {"best": BEST, "last": CHECKPOINT}


def evaluate_checkpoint(spec: Spec, run_dir: Path, which: str = "best") -> tuple[int, dict[str, float]]:
    """(epoch, record): the classifiers' accuracies and the geometry on the validation and test
    splits, recomputed from the run's best (validation-selected) or last checkpoint. On the CPU they
    equal the record the run stored for that epoch, to the last digit."""
    path = run_dir / CHECKPOINTS[which]
    if not path.exists():
        raise ConfigError(f"{path} does not exist: the run kept no {which} checkpoint (runs record best.pt "
                          f"from this version on; a run that has not finished an epoch has none)")
    device = resolve_device(spec.train.device)
    data = load_dataset(spec.data).to(device)
    torch.manual_seed(spec.train.seed)
    model = build_model(spec.model, data.channels, data.num_classes)
    state = read_checkpoint(path, model)
    record, _ = evaluate(model.to(device), data, spec)
    return int(state["epoch"]), record
