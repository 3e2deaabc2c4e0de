"""Devices: which one a run uses, the process-wide kernel switches its numbers and speed depend on, what it
records of the machine it ran on, and its GPU figures (memory, utilisation). No training here."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any

import torch

from mtm_engine.config import Spec
from mtm_engine.errors import ConfigError
from mtm_engine.records import gpu_share


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


def autocast(device: torch.device, spec: Spec):
    """bf16 autocast on CUDA (train.amp); full precision elsewhere."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=spec.train.amp and device.type == "cuda")


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
    share = gpu_share()
    if device.type == "cuda" and share is not None:   # a queue slot on a shared GPU
        torch.cuda.set_per_process_memory_fraction(share, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = spec.train.amp
        torch.backends.cudnn.allow_tf32 = spec.train.amp
        torch.backends.cudnn.benchmark = not spec.train.deterministic
        torch.backends.cudnn.deterministic = spec.train.deterministic
    if spec.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(spec.train.deterministic)


def memory_budget(device: torch.device) -> tuple[int, str] | None:
    """(bytes, how to say it): what a run may hold on `device`. A CUDA device's memory, or its share of it in a
    queue slot (records.gpu_share); the CPU's available memory (Linux); None where it cannot be known."""
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        share = gpu_share()
        if share is None:
            return total, f"{device}'s {total / 2**30:.1f} GiB"
        return int(total * share), (f"this run's {total * share / 2**30:.1f} GiB share of {device} ({total / 2**30:.0f} "
                                    f"GiB shared by the queue's runs: start it with fewer --per-gpu)")
    if device.type == "cpu":
        with contextlib.suppress(OSError, ValueError, StopIteration):
            line = next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemAvailable:"))
            available = int(line.split()[1]) * 1024
            return available, f"the {available / 2**30:.1f} GiB of memory available"
    return None


def check_dataset_fits(nbytes: int, device: torch.device, what: str) -> None:
    """Refuse, before the copy, a dataset of `nbytes` that cannot stay on a CUDA device within the run's memory
    (memory_budget). Past that, the copy would fail this run (and, without a cap, its neighbours) with an
    out-of-memory error that names no key. On the CPU the dataset is in memory already."""
    budget = memory_budget(device) if device.type == "cuda" else None
    if budget is not None and nbytes > budget[0]:
        raise ConfigError(f"{what} takes {nbytes / 2**30:.1f} GiB on the GPU, more than {budget[1]}; lower data.size, "
                          f"or train on the cpu")


def check_model_fits(model: torch.nn.Module, device: torch.device, spec: Spec) -> None:
    """Refuse a network whose training state alone cannot fit the device's memory: its weights, their gradients
    and Adam's two moments (4 float32 numbers a parameter; activations come on top). `model` may live on the
    `meta` device (built without memory), so the check costs nothing. A huge model.width otherwise ends in an
    out-of-memory error that blames the batch size."""
    parameters = sum(p.numel() for p in model.parameters())
    need = 16 * parameters
    budget = memory_budget(device)
    if budget is not None and need > budget[0]:
        m = spec.model
        raise ConfigError(f"the network has {parameters / 1e9:.2f} G parameters, {need / 2**30:.1f} GiB to train "
                          f"(weights, gradients, Adam's moments), more than {budget[1]}; lower model.width (now "
                          f"{m.width}) or model.dim (now {m.dim}), or choose a smaller model.backbone (now {m.backbone})")


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
