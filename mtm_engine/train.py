"""The training loop (paper Algorithm 1). It prints nothing and writes no database: it reports
through an injected sink. Its optimiser is optim.py's, its evaluation evaluate.py's, its checkpoints
checkpoints.py's."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from mtm_engine.catalogue import loss_arguments, loss_function
from mtm_engine.checkpoints import (
    BackgroundWriter,
    WeightAverage,
    best_state,
    checkpoint_state,
    load_checkpoint,
    make_average,
)
from mtm_engine.config import Spec
from mtm_engine.data import Dataset, Split, augment, augmentation_draws, batches, flips, load_dataset
from mtm_engine.devices import (
    GpuMeter,
    autocast,
    check_dataset_fits,
    check_model_fits,
    configure_backends,
    machine,
    resolve_device,
)
from mtm_engine.evaluate import evaluate, write_snapshot
from mtm_engine.events import (
    BatchProgress,
    CheckpointSaved,
    EpochEnded,
    NullSink,
    RunDiverged,
    RunResult,
    RunStarted,
    Sink,
)
from mtm_engine.models import MovingTargetsNet, build_model
from mtm_engine.optim import make_optimiser, make_schedule
from mtm_engine.records import BEST, CHECKPOINT, Status
from mtm_engine.results import summarise

PROGRESS_STEPS = 50   # BatchProgress events per epoch, at most


# --- one epoch ----------------------------------------------------------------------------------

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
    # Train mode every epoch, unless train.freeze_batchnorm: the authors' loop evaluates in eval mode and never
    # calls model.train() again, so from epoch 2 on BatchNorm normalises by epoch 1's running statistics.
    model.train(not (spec.train.freeze_batchnorm and epoch > 1))
    loss_fn, arguments = loss_function(spec.loss.name), loss_arguments(spec.loss)   # its own parameters only
    lo = spec.loss
    device = split.y.device
    total = torch.zeros((), device=device)   # summed on the device: no sync per batch
    n_batches = math.ceil(len(split) / spec.train.batch_size)
    every = max(1, n_batches // PROGRESS_STEPS)
    generator = epoch_generator(spec, epoch)   # the augmentation draws, then the batch order
    if spec.data.augment:
        draws = augmentation_draws(len(split), generator, spec.data.crop_padding, flips(spec.data), device)
    for i, (x, y) in enumerate(batches(split, spec.train.batch_size, generator)):
        if spec.data.augment:
            start = i * spec.train.batch_size
            x = augment(x, draws[start:start + len(y)], spec.data.crop_padding)
        with autocast(device, spec):
            e, logits = model(x)
        # e, logits and C are float32 (the heads run outside autocast): the losses see no bf16 rounding.
        loss = loss_fn(logits if logits is not None else e, y, model.targets(), **arguments)
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
        best = summarise(records, spec.classifiers[:1])[spec.eval.selection].get(spec.classifiers[0], {}).get("epoch") == epoch
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
