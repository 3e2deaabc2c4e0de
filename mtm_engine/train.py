"""The training loop (paper Algorithm 1). It prints nothing and writes no database: it reports
through an injected sink, and writes only its checkpoint."""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

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
from mtm_engine.errors import ConfigError
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
    acc_key,
    gpu_share,
)
from mtm_engine.results import summarise

PROGRESS_STEPS = 50   # BatchProgress events per epoch, at most


# --- devices ------------------------------------------------------------------------------------

def resolve_device(name: str) -> torch.device:
    """`auto`: cuda, then mps, then cpu. A named device that is absent is a user error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device = {name!r}: no CUDA device is visible here; use auto or cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device = 'mps': no Apple GPU is available here; use auto or cpu")
    device = torch.device(name)
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        count = torch.cuda.device_count()   # CUDA numbers the visible devices 0..count-1
        raise ConfigError(f"train.device = {name!r}: only {count} CUDA device{'s' * (count != 1)} visible "
                          f"(cuda:0..cuda:{count - 1}); choose one of them, or auto")
    return device


def configure_backends(device: torch.device, spec: Spec) -> None:
    """The process-wide kernel switches a run's numbers and speed depend on, set before its first kernel.

    - train.amp off on CUDA means float32 throughout: TF32 (a 10-bit mantissa in convolutions and
      matrix products, on by default for cuDNN) is turned off with it.
    - cuDNN's autotuner (cudnn.benchmark) times the candidate kernels for each shape once; a run's
      shapes are fixed (one batch size, one image size), so it pays from the first epoch on. Its choice
      is by timing, so it is off when train.deterministic asks for repeatable numbers.
    - A queue slot on a GPU shared with others allocates at most its share of the GPU's memory
      (records.gpu_share), so that one run's growth fails that run, not its neighbour.
    - train.deterministic: deterministic kernels only (cuBLAS needs its workspace setting for that); an op
      without one is an error rather than a silent difference."""
    if device.type == "cuda" and gpu_share() is not None:   # a queue slot on a shared GPU
        torch.cuda.set_per_process_memory_fraction(gpu_share(), device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = spec.train.amp
        torch.backends.cudnn.allow_tf32 = spec.train.amp
        torch.backends.cudnn.benchmark = not spec.train.deterministic
        torch.backends.cudnn.deterministic = spec.train.deterministic
    if spec.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(spec.train.deterministic)


def machine(device: torch.device) -> dict[str, Any]:
    """What a run's floating point depends on beyond its spec and seed: the same seed gives the same
    numbers only on the same CPU model with the same thread count (and, on CUDA, the same GPU and
    kernel libraries, with train.deterministic). Recorded with every run."""
    config = torch.__config__.show()   # "... CPU capability usage: AVX2 ... Build settings: BLAS_INFO=mkl, ..."
    blas, vector = (re.search(pattern, config) for pattern in (r"BLAS_INFO=([^,\s]+)", r"CPU capability usage: (\S+)"))
    info = {"threads": torch.get_num_threads(), "cpu": cpu_model(), "cpu_kernels": vector and vector.group(1),
            "blas": blas and blas.group(1), "mkldnn": torch.backends.mkldnn.is_available(), "torch": torch.__version__}
    if device.type == "cuda":
        info.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    return info


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


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
def embed(model: MovingTargetsNet, x: Tensor, spec: Spec, backbone: bool = False) -> tuple[Tensor, Tensor | None]:
    """Embeddings [N, d] (and logits [N, K] for pure heads) in eval mode: float32, as the heads give them;
    with `backbone`, the backbone's features [N, F] instead, before any head (no logits).

    eval.flip_tta: the outputs for each image and its mirror image are averaged; a normalised
    embedding's mean goes back onto its sphere (radius model.scale), where the class embeddings are."""
    model.eval()
    forward = (lambda images: (model.features(images).float(), None)) if backbone else model
    es, ls = [], []
    for chunk in x.split(spec.eval.batch_size):
        with _autocast(x.device, spec):
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


def centre_subset(train: Split, samples: int) -> tuple[Tensor, Tensor]:
    """The training images whose embeddings give the centres G: `samples` of them (eval.centre_samples),
    the same fixed subset every epoch, or all if 0. -> (x [n, C, S, S], y [n])."""
    x, y = train.x, train.y
    if 0 < samples < len(y):
        keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:samples]
        x, y = x[keep.to(x.device)], y[keep.to(y.device)]
    return x, y


def evaluate(model: MovingTargetsNet, data: Dataset, spec: Spec) -> tuple[dict[str, float], dict[str, Any]]:
    """Classifier accuracies and geometry on the validation and test splits, and a 2-D snapshot
    of the test embeddings (see geometry.embedding_snapshot).

    Keys: records.METRICS[name].key(split, classifier): the accuracies, the geometry, for MTM heads
    ce_gap (per split) and ce_separation (of C alone), and with eval.retrieval the test split's
    retrieval metrics against the training embeddings.
    The centres G that the classifiers use come from the TRAINING split only.
    """
    x, y = centre_subset(data.train, spec.eval.centre_samples)
    e_train, _ = embed(model, x, spec)
    # A class absent from the training split has no centre; put it at the origin rather than NaN,
    # which argmax/argmin would otherwise pick.
    G = class_centres(e_train, y, data.num_classes).nan_to_num(0.0)   # [K, d]
    C = model.targets().detach() if model.class_embeddings is not None else None
    record: dict[str, float] = {}
    snapshot: dict[str, Any] = {}
    for name, split in (("val", data.val), ("test", data.test)):
        if len(split) == 0:   # data.val_fraction = 0: no validation split (a refit on train+val)
            continue
        e, logits = embed(model, split.x, spec)
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
        tmp = run_dir / f".{SNAPSHOTS[which]}.tmp"
        tmp.write_text(text)
        os.replace(tmp, run_dir / SNAPSHOTS[which])


class GpuMeter:
    """An epoch's GPU figures: peak memory allocated and reserved by torch (GB); where nvidia-ml-py is
    installed (the `gpu` extra), the process's own memory on the GPU as NVML sees it, CUDA context and
    libraries included (what runs sharing a GPU must be sized on), and the mean utilisation (%) sampled at
    each progress step, which is the whole GPU's: runs sharing a GPU all record the same total. On other
    devices it measures nothing and adds no keys to the record."""

    def __init__(self, device: torch.device):
        self.device = device if device.type == "cuda" else None
        self.utilisation: list[int] = []

    def start(self) -> None:
        if self.device is not None:
            torch.cuda.reset_peak_memory_stats(self.device)
            self.utilisation = []

    def sample(self) -> None:
        if self.device is not None:
            try:
                self.utilisation.append(torch.cuda.utilization(self.device))   # NVML; maps CUDA_VISIBLE_DEVICES
            except Exception:   # no nvidia-ml-py, or NVML unavailable: memory figures only
                pass

    def allocated(self) -> float | None:
        """GB allocated by torch now (None off the GPU): the live figure of the epoch in flight."""
        return torch.cuda.memory_allocated(self.device) / 1e9 if self.device is not None else None

    def figures(self) -> dict[str, float]:
        if self.device is None:
            return {}
        figures = {"gpu_mem_allocated_gb": torch.cuda.max_memory_allocated(self.device) / 1e9,
                   "gpu_mem_reserved_gb": torch.cuda.max_memory_reserved(self.device) / 1e9}
        process = nvml_process_memory_gb(self.device)
        if process is not None:
            figures["gpu_mem_process_gb"] = process
        if self.utilisation:
            figures["gpu_util_pct"] = sum(self.utilisation) / len(self.utilisation)
        return figures


def nvml_process_memory_gb(device: torch.device) -> float | None:
    """This process's memory on `device` as NVML counts it (GB), or None without nvidia-ml-py or where NVML
    does not say (MIG slices, some containers). NVML knows GPUs by UUID, whatever CUDA_VISIBLE_DEVICES did."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByUUID(f"GPU-{torch.cuda.get_device_properties(device).uuid}")
        used = [p.usedGpuMemory for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle) if p.pid == os.getpid()]
    except Exception:   # ImportError, NVMLError, a device property this torch lacks: no figure
        return None
    return used[0] / 1e9 if used and used[0] is not None else None


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
    data = (data or load_dataset(spec.data)).to(device)
    run_dir.mkdir(parents=True, exist_ok=True)
    model = build_model(spec.model, data.channels, data.num_classes).to(device)
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
    writes = BackgroundWriter()

    def written(epoch: int | None) -> None:
        if epoch is not None:
            sink.emit(CheckpointSaved(epoch, checkpoint))

    def ended(status: str, message: str = "") -> RunResult:
        written(writes.wait())   # every end of a run: its last checkpoint is on disk
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
            return ended("interrupted", f"stopped during epoch {epoch}; resume continues from epoch {epoch}")
        trained = time.perf_counter()
        if not math.isfinite(train_loss):
            message = (f"training loss became {train_loss} in epoch {epoch}; lower train.lr "
                       f"(now {spec.train.lr:g}) or loss.r (now {spec.loss.r:g})")
            sink.emit(RunDiverged(epoch, message))
            return ended("diverged", message)
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
        written(writes.write(([(run_dir / BEST, best_state(evaluated, epoch))] if best else [])
                             + [(checkpoint, checkpoint_state(model, optimiser, schedule, epoch, average))], epoch))
        if not background_checkpoints:
            written(writes.wait())
        if should_stop() and epoch < spec.train.epochs:
            return ended("interrupted", f"stopped after epoch {epoch}; resume continues from epoch {epoch + 1}")
    return ended("finished")
