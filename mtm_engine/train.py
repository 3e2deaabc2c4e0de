"""The training loop (paper Algorithm 1). It prints nothing and writes no database: it reports
through an injected sink, and writes only its checkpoint."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from mtm_engine.atomic import atomic_write
from mtm_engine.checkpoints import (
    BackgroundWriter,
    WeightAverage,
    best_state,
    checkpoint_state,
    load_checkpoint,
    make_average,
)
from mtm_engine.classifiers import predict
from mtm_engine.config import Spec
from mtm_engine.data import Dataset, Split, augment, augmentation_draws, batches, flips, load_dataset
from mtm_engine.devices import (
    GpuMeter,
    check_dataset_fits,
    check_model_fits,
    configure_backends,
    machine,
    resolve_device,
)
from mtm_engine.geometry import (
    class_centres,
    class_embedding_gap,
    embedding_snapshot,
    geometry,
    mean_pairwise_distance,
)
from mtm_engine.losses import get_loss
from mtm_engine.models import MovingTargetsNet, build_model
from mtm_engine.records import (
    BEST,
    CHECKPOINT,
    METRICS,
    SNAPSHOTS,
    BatchProgress,
    CheckpointSaved,
    EpochEnded,
    NullSink,
    RunDiverged,
    RunResult,
    RunStarted,
    Sink,
    Status,
    acc_key,
)
from mtm_engine.results import summarise

PROGRESS_STEPS = 50   # BatchProgress events per epoch, at most


# --- one epoch ----------------------------------------------------------------------------------

def _autocast(device: torch.device, spec: Spec):
    """bf16 autocast on CUDA (train.amp); full precision elsewhere."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=spec.train.amp and device.type == "cuda")


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


def epoch_generator(spec: Spec, epoch: int) -> torch.Generator:
    """The batch order of an epoch depends only on (seed, epoch), so a resumed run sees the same."""
    return torch.Generator().manual_seed(spec.train.seed * 100_003 + epoch)


def train_one_epoch(
    model: MovingTargetsNet, split: Split, spec: Spec, optimiser: torch.optim.Optimizer, epoch: int,
    schedule: torch.optim.lr_scheduler.LRScheduler | None = None, average: WeightAverage | None = None,
    on_progress: Callable[[int, int, Tensor], None] = lambda batch, batches, loss: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> float | None:
    """Algorithm 1's inner loop, updating `average` (train.ema) after each step. Returns the mean
    per-instance training loss (of the trained weights), or None if stopped."""
    model.train()   # every epoch: the original code left BatchNorm frozen after the first evaluation
    loss_fn = get_loss(spec.loss.name)
    lo = spec.loss
    device = split.y.device
    total = torch.zeros((), device=device)   # summed on the device: no sync per batch
    n_batches = math.ceil(len(split) / spec.train.batch_size)
    every = max(1, n_batches // PROGRESS_STEPS)
    extra = {"label_smoothing": lo.label_smoothing} if lo.name == "cross_entropy" else {}
    generator = epoch_generator(spec, epoch)   # the augmentation draws, then the batch order
    if spec.data.augment:
        draws = augmentation_draws(len(split), generator, spec.data.crop_padding, flips(spec.data), device)
    for i, (x, y) in enumerate(batches(split, spec.train.batch_size, generator)):
        if spec.data.augment:
            start = i * spec.train.batch_size
            x = augment(x, draws[start:start + len(y)], spec.data.crop_padding)
        with _autocast(device, spec):
            e, logits = model(x)
        # e, logits and C are float32 (the heads run outside autocast): the losses see no bf16 rounding.
        loss = loss_fn(logits if logits is not None else e, y, model.targets(), r=lo.r, eps=lo.eps,
                       reduction=lo.reduction, **extra)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if average is not None:
            average.update()
        if schedule is not None:
            schedule.step()
        batch_sum = loss.detach() * (len(y) if lo.reduction == "mean" else 1)
        total += batch_sum
        if (i + 1) % every == 0 or i + 1 == n_batches:
            on_progress(i + 1, n_batches, batch_sum / len(y))
            if should_stop():
                return None
    return total.item() / len(split)


# --- evaluation ---------------------------------------------------------------------------------

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
        with _autocast(chunk.device, spec):
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


# --- the run ------------------------------------------------------------------------------------

def fit(
    spec: Spec, run_dir: Path, sink: Sink = NullSink(), *, resume: bool = False,
    history: list[dict[str, Any]] | None = None, should_stop: Callable[[], bool] = lambda: False,
    data: Dataset | None = None, background_checkpoints: bool = True,
) -> RunResult:
    """Train `spec` for its epochs, checkpointing each one into `run_dir`.

    resume: continue from run_dir's checkpoint, if there is one; `history` holds the records of
    the epochs already done (from the store). `data` may pass an already loaded dataset.
    background_checkpoints: write each epoch's checkpoint while the next epoch trains; CheckpointSaved
    then comes once its files have landed, an epoch later. False: written before the next epoch starts
    (a Tune trial reports each epoch with its checkpoint files).
    """
    device = resolve_device(spec.train.device)
    configure_backends(device, spec)
    torch.manual_seed(spec.train.seed)
    data = data or load_dataset(spec.data)
    check_dataset_fits(data.nbytes, device, f"data.dataset = {spec.data.dataset!r} at data.size = {spec.data.size}")
    data = data.to(device)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not spec.model.pretrained:   # sized on the meta device first: no memory, no initialisation
        with torch.device("meta"):
            check_model_fits(build_model(spec.model, data.channels, data.num_classes), device, spec)
    model = build_model(spec.model, data.channels, data.num_classes).to(device)
    if spec.train.compile:
        model.compile()   # in place: forward runs compiled, parameter names (and checkpoints) stay the module's
    optimiser = make_optimiser(spec, model)
    schedule = make_schedule(spec, optimiser, math.ceil(len(data.train) / spec.train.batch_size))
    average = make_average(spec, model)
    evaluated = average.module if average is not None else model
    checkpoint = run_dir / CHECKPOINT
    done = load_checkpoint(checkpoint, model, optimiser, schedule, average) if resume and checkpoint.exists() else 0
    records = [r for r in (history or []) if r["epoch"] <= done]
    # Recorded epochs past the checkpoint are trained again. One is by design (killed between its record and
    # its checkpoint); more, or all of them with checkpoint.pt gone, are said, not dropped silently.
    dropped = sorted(r["epoch"] for r in (history or []) if r["epoch"] > done)
    why = "checkpoint.pt was missing" if not done else f"the checkpoint held epoch {done}"
    note = f"epochs {dropped[0]}-{dropped[-1]} were recorded, and trained again: {why}" \
        if dropped and (not done or len(dropped) > 1) else ""
    sink.emit(RunStarted(str(device), sum(p.numel() for p in model.parameters()),
                         {"train": len(data.train), "val": len(data.val), "test": len(data.test)}, done + 1,
                         machine(device), note))

    gpu = GpuMeter(device)
    start = time.perf_counter()
    writer = BackgroundWriter()

    def written(epoch: int | None) -> None:
        if epoch is not None:
            sink.emit(CheckpointSaved(epoch, checkpoint))

    def ended(status: str, message: str = "") -> RunResult:
        written(writer.wait())   # every end of a run: its last checkpoint is on disk
        return RunResult(status, records, summarise(records, spec.classifiers), message or note)

    def progress(epoch: int, batch: int, batches: int, loss: Tensor) -> None:
        gpu.sample()
        sink.emit(BatchProgress(epoch, batch, batches, loss.item(), min(batch * spec.train.batch_size, len(data.train)),
                                time.perf_counter() - start, gpu.allocated()))

    for epoch in range(done + 1, spec.train.epochs + 1):
        start = time.perf_counter()
        gpu.start()
        train_loss = train_one_epoch(
            model, data.train, spec, optimiser, epoch, schedule, average,
            on_progress=lambda b, n, loss, epoch=epoch: progress(epoch, b, n, loss), should_stop=should_stop,
        )
        if train_loss is None:
            return ended(Status.INTERRUPTED, f"stopped during epoch {epoch}; resume continues from epoch {epoch}")
        trained = time.perf_counter()
        if not math.isfinite(train_loss):
            message = (f"training loss became {train_loss} in epoch {epoch}; lower train.lr "
                       f"(now {spec.train.lr:g}) or loss.r (now {spec.loss.r:g})")
            sink.emit(RunDiverged(epoch, message))
            return ended(Status.DIVERGED, message)
        metrics, snapshot = evaluate(evaluated, data, spec)
        record = {"epoch": epoch, "train_loss": train_loss, "lr": optimiser.param_groups[0]["lr"], **metrics}
        end = time.perf_counter()
        record.update(train_time_s=trained - start, eval_time_s=end - trained, epoch_time_s=end - start,
                      images_per_s=len(data.train) / (trained - start), **gpu.figures())
        # Record first, then checkpoint: a kill between the two re-runs this epoch on resume, and
        # the store replaces its record (same seed, same numbers) rather than losing it.
        records.append(record)
        best = summarise(records, spec.classifiers[:1])["val"].get(spec.classifiers[0], {}).get("epoch") == epoch
        write_snapshot(run_dir, snapshot, epoch, best=best)
        sink.emit(EpochEnded(epoch, record))
        # best.pt before checkpoint.pt: a kill between the two leaves a best.pt that the resumed epoch rewrites.
        written(writer.write(([(run_dir / BEST, best_state(evaluated, epoch))] if best else [])
                             + [(checkpoint, checkpoint_state(model, optimiser, schedule, epoch, average))], epoch))
        if not background_checkpoints:
            written(writer.wait())
        if should_stop() and epoch < spec.train.epochs:
            return ended(Status.INTERRUPTED, f"stopped after epoch {epoch}; resume continues from epoch {epoch + 1}")
    return ended(Status.FINISHED)
