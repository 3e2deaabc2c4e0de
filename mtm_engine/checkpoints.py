"""A run's checkpoints: what one holds, written atomically and read back with one-line errors; and the
weight average (train.ema) that is evaluated and kept in place of the trained weights."""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Any

import torch

from mtm_engine.atomic import atomic_write
from mtm_engine.config import Spec
from mtm_engine.errors import ConfigError, MtmError
from mtm_engine.models import MovingTargetsNet


class WeightAverage:
    """train.ema: an exponential moving average of a network's weights and float buffers (BatchNorm's
    statistics), updated after every optimiser step. Step 1 copies the weights w_1; step t > 1 sets
    a = d a + (1 - d) w_t with d = min(ema, t / (9 + t)), a warm-up that keeps the first steps (and the
    initialisation) from weighing on a short run. Integer buffers are copied. The step count is a
    Python int and the update one fused kernel per tensor list: no host-device sync per batch."""

    def __init__(self, model: MovingTargetsNet, ema: float):
        self.module = copy.deepcopy(model)   # the averaged network, evaluated instead of `model`
        self.ema, self.steps = ema, 0
        pairs = list(zip(self.module.state_dict().values(), model.state_dict().values()))   # shared storage
        self.floats = ([a for a, _ in pairs if a.is_floating_point()], [w for a, w in pairs if a.is_floating_point()])
        # Integer buffers (BatchNorm's batch counts) are copied, as one fused call: one copy kernel each
        # would be 104 launches a step for ResNet-101.
        self.others = ([a for a, _ in pairs if not a.is_floating_point()], [w for a, w in pairs if not a.is_floating_point()])

    @torch.no_grad()
    def update(self) -> None:
        self.steps += 1
        averaged, weights = self.floats
        if self.steps == 1:
            torch._foreach_copy_(averaged, weights)
        else:
            torch._foreach_lerp_(averaged, weights, 1.0 - min(self.ema, self.steps / (9 + self.steps)))
        if self.others[0]:
            torch._foreach_copy_(*self.others)


def make_average(spec: Spec, model: MovingTargetsNet) -> WeightAverage | None:
    return WeightAverage(model, spec.train.ema) if spec.train.ema else None


def checkpoint_state(model: MovingTargetsNet, optimiser: torch.optim.Optimizer,
                     schedule: torch.optim.lr_scheduler.LRScheduler, epoch: int,
                     average: WeightAverage | None = None) -> dict[str, Any]:
    """What checkpoint.pt holds: everything resume needs. "model" holds the weights that were evaluated: the
    trained ones, or their average (train.ema), whose trained weights and count then go beside them."""
    state = {
        "epoch": epoch,   # the last completed epoch (1-based)
        "model": (average.module if average is not None else model).state_dict(),   # includes C
        "optimizer": optimiser.state_dict(),
        "schedule": schedule.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": _cuda_rng_state(model),
    }
    if average is not None:
        state.update(trained_model=model.state_dict(), averaged_steps=average.steps)
    return state


def best_state(evaluated: MovingTargetsNet, epoch: int) -> dict[str, Any]:
    """What best.pt holds: the validation-selected epoch's evaluated weights, which `mtm eval`, certainty and
    few-shot read; no optimiser state, so a third of a checkpoint's size (Adam keeps two moments a weight),
    and one copy of the weights with train.ema."""
    return {"epoch": epoch, "model": evaluated.state_dict()}


class BackgroundWriter:
    """Writes checkpoints on a thread of its own, so that the next epoch trains while the last one's files
    are written and fsynced (about 190 MB an epoch for ResNet-18 with Adam: a large share of a 2-second GPU
    epoch). `write` first copies the state to host memory (into pinned memory, without a blocking copy per
    tensor, from a GPU; a plain copy on the CPU, since training changes the weights in place), then hands
    it to the thread.

    Writes happen one at a time, in the order asked: a write first waits for the one before it. Each file
    is still replaced atomically, so a kill at any moment leaves the last complete checkpoint, as before;
    the epoch's record is in the store first, and resume re-runs an epoch whose checkpoint never landed.
    `wait` returns the epoch whose files have landed (None if nothing was pending), and raises in the
    training thread what a write raised (a full disk)."""

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        self.epoch: int | None = None
        self.failure: BaseException | None = None

    def write(self, writes: list[tuple[Path, dict[str, Any]]], epoch: int) -> int | None:
        """Start writing `writes` ((path, state) pairs, in order) for `epoch`; returns the epoch whose
        files landed before (wait's answer)."""
        landed = self.wait()
        copied = [(path, _to_host(state)) for path, state in writes]
        copies_done = torch.cuda.Event() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        if copies_done is not None:
            copies_done.record()   # the device-to-host copies are queued on the stream: the thread waits for them

        def run() -> None:
            try:
                if copies_done is not None:
                    copies_done.synchronize()
                for path, state in copied:
                    _write(path, state)
            except BaseException as exc:   # raised again by wait(), in the training thread
                self.failure = exc

        self.thread, self.epoch = threading.Thread(target=run, name="checkpoint-writer"), epoch
        self.thread.start()
        return landed

    def wait(self) -> int | None:
        if self.thread is None:
            return None
        self.thread.join()
        landed, self.thread, self.epoch = self.epoch, None, None
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise failure
        return landed


def _to_host(value: Any) -> Any:
    """A copy of a (nested) state on the CPU: tensors copied (into pinned memory from a GPU, without
    waiting), everything else as it is."""
    if isinstance(value, torch.Tensor):
        if value.is_cuda:
            host = torch.empty(value.shape, dtype=value.dtype, pin_memory=True)
            return host.copy_(value.detach(), non_blocking=True)
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _to_host(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_host(v) for v in value)
    return value


def _write(path: Path, state: dict[str, Any]) -> None:
    """torch.save, atomically (`atomic_write`): a kill during the write leaves the last good file."""
    try:
        atomic_write(path, lambda fh: torch.save(state, fh))
    except OSError as exc:
        raise MtmError(f"cannot write {path}: {exc.strerror or exc}; free some space, or choose a writable home "
                       f"with --home or MTM_HOME") from None
    except RuntimeError as exc:   # torch's zip writer reports a failed write as "[enforce fail at inline_container.cc]"
        if "inline_container" not in str(exc) and "write" not in str(exc).lower():
            raise
        raise MtmError(f"cannot write {path}: the write failed (a full or failing disk: {str(exc).splitlines()[0][:120]}); "
                       f"free some space, or choose a writable home with --home or MTM_HOME") from None


def read_checkpoint(path: Path, model: MovingTargetsNet, trained: MovingTargetsNet | None = None) -> dict[str, Any]:
    """Load a checkpoint's state and its evaluated weights into `model` (and, for a run with train.ema,
    the trained weights into `trained`); a damaged or foreign file, or one of another network, is one
    ConfigError line that names the file."""
    state = load_state(path)
    try:
        model.load_state_dict(state["model"])
        if trained is not None:
            trained.load_state_dict(state["trained_model"])
    except Exception as exc:   # a missing key, another network's shapes
        raise _damaged(path, exc) from None
    return state


def load_state(path: Path) -> dict[str, Any]:
    """A checkpoint file's state, read with weights_only (tensors and numbers only: nothing in it runs); a missing,
    damaged or foreign file is one ConfigError line that names it."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"checkpoint {path} is missing") from None
    except Exception as exc:   # unpickling, zip and shape errors differ by torch version; all mean "not this run's"
        raise _damaged(path, exc) from None
    if not isinstance(state, dict):
        raise _damaged(path, TypeError(f"it holds a {type(state).__name__}, not a checkpoint's table"))
    return state


def _damaged(path: Path, exc: BaseException) -> ConfigError:
    text = str(exc).strip()
    reason = text.splitlines()[0] if text else type(exc).__name__
    if "Weights only load failed" in text:   # torch's advice (load it with weights_only=False) would run its code
        reason = "it holds objects other than tensors and numbers, and mtm never unpickles those"
    if isinstance(exc, KeyError):
        reason = f"it lacks {exc}: not a whole training checkpoint"
    return ConfigError(f"checkpoint {path} is damaged or belongs to another network ({reason[:160]}); "
                       f"move it aside (resume then starts the run again from epoch 1)")


def load_checkpoint(path: Path, model: MovingTargetsNet, optimiser: torch.optim.Optimizer,
                    schedule: torch.optim.lr_scheduler.LRScheduler, average: WeightAverage | None = None) -> int:
    """Restore model (and its average), optimiser, schedule and RNG states; return the last completed epoch."""
    state = read_checkpoint(path, model) if average is None else read_checkpoint(path, average.module, trained=model)
    try:
        if average is not None:
            average.steps = int(state["averaged_steps"])
        optimiser.load_state_dict(state["optimizer"])
        if "schedule" in state:   # checkpoints from before schedules existed had a constant rate
            schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["torch_rng"])
        device = _device_of(model)
        if isinstance(state.get("cuda_rng"), torch.Tensor) and device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        return int(state["epoch"])
    except Exception as exc:   # best.pt copied over it (weights only), another optimiser's state
        raise _damaged(path, exc) from None


def _device_of(model: MovingTargetsNet) -> torch.device:
    return next(model.parameters()).device


def _cuda_rng_state(model: MovingTargetsNet) -> torch.Tensor | None:
    """The CUDA generator state of the run's own device only. The set of visible devices may differ on
    resume (started on 2 GPUs, resumed in a queue slot pinned to one), so an all-device list restored by
    index would not fit; and training draws no CUDA random numbers, so the other devices' states are not
    the run's. (Checkpoints with the old all-device list restore none.)"""
    device = _device_of(model)
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else None
