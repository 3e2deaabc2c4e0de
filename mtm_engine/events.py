"""What the training loop reports as it goes (paper Algorithm 1's progress): events, the sink that receives
them, the epoch in flight as the TUI reads it, and a run's result. No torch: the CLI and the TUI show them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypedDict

from mtm_engine.records import Status


@dataclass
class RunStarted:
    device: str
    parameters: int
    sizes: dict[str, int]   # images per split
    start_epoch: int        # 1 unless resumed
    machine: dict[str, Any] = field(default_factory=dict)   # what the numbers depend on beyond spec and seed
    note: str = ""          # on resume: recorded epochs that are trained again, and why


@dataclass
class BatchProgress:
    epoch: int
    batch: int
    batches: int
    loss: float             # mean per-instance loss of the latest batch
    images: int = 0         # training images seen in this epoch so far
    seconds: float = 0.0    # since the epoch began
    gpu_mem_gb: float | None = None   # allocated now, on CUDA


class Progress(TypedDict):
    """The epoch in flight, as a live run's progress.json holds it."""
    epoch: int
    batch: int
    batches: int
    images_per_s: float
    eta_s: float            # to the end of this epoch's training (evaluation not included)
    gpu_mem_gb: float | None
    at: float               # wall-clock time it was written


def progress_of(event: BatchProgress, now: float) -> Progress:
    rate = event.batch / event.seconds if event.seconds > 0 else 0.0   # batches per second
    return Progress(epoch=event.epoch, batch=event.batch, batches=event.batches,
                    images_per_s=event.images / event.seconds if event.seconds > 0 else 0.0,
                    eta_s=(event.batches - event.batch) / rate if rate else 0.0, gpu_mem_gb=event.gpu_mem_gb, at=now)


@dataclass
class EpochEnded:
    epoch: int
    record: dict[str, Any]  # every metric of the epoch, flat: see `evaluate`


@dataclass
class CheckpointSaved:
    epoch: int
    path: Path              # the run's checkpoint file, now holding this epoch


@dataclass
class RunDiverged:
    epoch: int
    message: str


Event = RunStarted | BatchProgress | EpochEnded | CheckpointSaved | RunDiverged


class Sink(Protocol):
    def emit(self, event: Event) -> None: ...


class NullSink:
    def emit(self, event: Event) -> None:
        pass


@dataclass
class RunResult:
    status: Status                   # finished, diverged or interrupted
    records: list[dict[str, Any]]    # every epoch's record, earlier runs of a resumed run included
    summary: dict[str, Any] = field(default_factory=dict)
    message: str = ""
