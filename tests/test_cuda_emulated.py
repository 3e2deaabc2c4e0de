"""The CUDA path's fixes, checked on the CPU by emulating what a GPU machine would report (device counts,
generator states). The gpu-marked tests in test_gpu.py run the same code on a real device."""

import pytest
import torch

from mtm_engine import checkpoints
from mtm_engine.checkpoints import BackgroundWriter, checkpoint_state, load_checkpoint
from mtm_engine.config import load_spec
from mtm_engine.devices import configure_backends, resolve_device
from mtm_engine.errors import ConfigError, out_of_memory
from mtm_engine.models import build_model
from mtm_engine.records import GPU_SHARE_ENV


class EmulatedCuda:
    """torch.cuda as a machine with `count` visible devices reports it: one generator state per device."""

    def __init__(self, monkeypatch, count: int):
        self.count, self.restored = count, []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: self.count)
        monkeypatch.setattr(torch.cuda, "get_rng_state", self.get_rng_state)
        monkeypatch.setattr(torch.cuda, "set_rng_state", self.set_rng_state)
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [self.get_rng_state(i) for i in range(self.count)])
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", self.set_rng_state_all)

    def _index(self, device) -> int:
        index = torch.device(device).index if not isinstance(device, int) else device
        if (index or 0) >= self.count:
            raise IndexError(f"device {index} of {self.count}")
        return index or 0

    def get_rng_state(self, device="cuda"):
        return torch.full((8,), self._index(device), dtype=torch.uint8)

    def set_rng_state(self, state, device="cuda"):
        self.restored.append((self._index(device), int(state[0])))

    def set_rng_state_all(self, states):
        for i, state in enumerate(states):
            self.set_rng_state(state, i)


def save_checkpoint(path, *state, **kw):
    writer = BackgroundWriter()
    writer.write([(path, checkpoint_state(*state, **kw))], epoch=kw["epoch"])
    assert writer.wait() == kw["epoch"]


def a_run(tmp_path):
    spec = load_spec(overrides=["model.width=4", "model.dim=8"])
    model = build_model(spec.model, 1, 10)
    optimiser = torch.optim.Adam(model.parameters())
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda _: 1.0)
    return model, optimiser, schedule, tmp_path / "checkpoint.pt"


def test_resume_on_fewer_visible_gpus_restores_the_runs_own_generator(tmp_path, monkeypatch):
    """Started on cuda:1 of a 2-GPU machine, resumed in a queue slot that sees one GPU (its cuda:0):
    the all-device list restored by index raised IndexError; now the run's own state goes to its device."""
    model, optimiser, schedule, path = a_run(tmp_path)
    cuda = EmulatedCuda(monkeypatch, count=2)
    monkeypatch.setattr(checkpoints, "_device_of", lambda _: torch.device("cuda", 1))
    save_checkpoint(path, model, optimiser, schedule, epoch=3)
    assert torch.load(path, weights_only=True)["cuda_rng"][0] == 1   # cuda:1's state alone

    cuda.count = 1
    monkeypatch.setattr(checkpoints, "_device_of", lambda _: torch.device("cuda", 0))
    assert load_checkpoint(path, model, optimiser, schedule) == 3
    assert cuda.restored == [(0, 1)]   # the saved state of the run's device, onto the run's device now


def test_a_cpu_run_saves_and_restores_no_cuda_state_even_where_cuda_is_visible(tmp_path, monkeypatch):
    model, optimiser, schedule, path = a_run(tmp_path)
    cuda = EmulatedCuda(monkeypatch, count=2)
    save_checkpoint(path, model, optimiser, schedule, epoch=1)
    assert torch.load(path, weights_only=True)["cuda_rng"] is None
    load_checkpoint(path, model, optimiser, schedule)
    assert cuda.restored == []


def test_an_absent_cuda_ordinal_is_one_line_naming_the_visible_ones(monkeypatch):
    EmulatedCuda(monkeypatch, count=2)
    with pytest.raises(ConfigError, match=r"train.device = 'cuda:7': only 2 CUDA devices visible \(cuda:0..cuda:1\)"):
        resolve_device("cuda:7")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


@pytest.fixture
def backends(monkeypatch):
    """torch's process-wide switches, put back after the test."""
    for module, name in ((torch.backends.cuda.matmul, "allow_tf32"), (torch.backends.cudnn, "allow_tf32"),
                         (torch.backends.cudnn, "benchmark"), (torch.backends.cudnn, "deterministic")):
        monkeypatch.setattr(module, name, getattr(module, name))
    yield
    torch.use_deterministic_algorithms(False)


def test_float32_on_cuda_means_float32_and_the_autotuner_is_on(backends):
    configure_backends(torch.device("cuda"), load_spec(overrides=["train.amp=false"]))
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()
    configure_backends(torch.device("cuda"), load_spec())   # bf16 autocast: TF32 for what stays float32
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32


def test_deterministic_turns_the_autotuner_off_and_asks_for_deterministic_kernels(backends):
    configure_backends(torch.device("cuda"), load_spec(overrides=["train.deterministic=true"]))
    assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
    assert torch.are_deterministic_algorithms_enabled()
    configure_backends(torch.device("cpu"), load_spec())
    assert not torch.are_deterministic_algorithms_enabled()


def test_a_run_records_its_threads_cpu_and_kernel_libraries(tmp_path):
    from mtm_engine.runner import create_run, execute
    from mtm_engine.store import Store

    store = Store(tmp_path)
    run_id = create_run(store, load_spec(overrides=["train.epochs=1", "model.width=4", "model.dim=8"]))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        execute(store, run_id)
    finally:
        torch.set_num_threads(threads)
    recorded = store.row(run_id)["machine"]
    assert recorded["threads"] == 1 and recorded["cpu"] and recorded["torch"] == torch.__version__
    assert "blas" in recorded and "mkldnn" in recorded


def test_queue_workers_share_the_cores_and_a_shared_gpu_in_pci_order(monkeypatch):
    from mtm_tui.services.jobs import worker_environment

    monkeypatch.setattr("os.cpu_count", lambda: 16)
    slots = ["gpu:0"] * 8 + ["gpu:1"] * 2
    env = worker_environment("gpu:0", slots)
    assert env["CUDA_VISIBLE_DEVICES"] == "0" and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert env["OMP_NUM_THREADS"] == "1"                 # 16 cores over 10 slots, GPU slots too
    assert float(env[GPU_SHARE_ENV]) == pytest.approx(1 / 8)
    assert "expandable_segments:True" in env["PYTORCH_CUDA_ALLOC_CONF"]
    assert float(worker_environment("gpu:1", slots)[GPU_SHARE_ENV]) == pytest.approx(1 / 2)
    cpu = worker_environment("cpu", ["cpu", "cpu"])
    assert cpu["CUDA_VISIBLE_DEVICES"] == "" and cpu["OMP_NUM_THREADS"] == "8" and GPU_SHARE_ENV not in cpu


def test_a_run_on_a_shared_gpu_caps_its_memory_at_its_share(monkeypatch, backends):
    capped = []
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, d: capped.append((f, d)))
    monkeypatch.setenv(GPU_SHARE_ENV, "0.125")
    configure_backends(torch.device("cuda", 0), load_spec())
    assert capped == [(0.125, torch.device("cuda", 0))]
    monkeypatch.delenv(GPU_SHARE_ENV)
    configure_backends(torch.device("cuda", 0), load_spec())
    assert len(capped) == 1   # a GPU of its own: no cap


def test_out_of_memory_on_a_shared_gpu_names_per_gpu():
    error = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB.")
    assert "--per-gpu" in str(out_of_memory(error, gpu_share=0.125)) and "shares" in str(out_of_memory(error, 0.125))
    assert "--per-gpu" not in str(out_of_memory(error, gpu_share=None))


def test_weight_averaging_copies_integer_buffers_in_one_fused_call(monkeypatch):
    """A per-tensor copy is a kernel launch each on a GPU (104 a step for ResNet-101's BatchNorm counts)."""
    from mtm_engine.checkpoints import WeightAverage

    model = build_model(load_spec(overrides=["model.width=4", "model.depth=2"]).model, 1, 10)
    average = WeightAverage(model, ema=0.9)
    counts = [b for n, b in model.named_buffers() if not b.is_floating_point()]
    assert len(counts) >= 4
    for b in counts:
        b.add_(3)
    copies = []
    original = torch.Tensor.copy_
    monkeypatch.setattr(torch.Tensor, "copy_", lambda self, *a, **k: copies.append(1) or original(self, *a, **k))
    average.update()
    average.update()
    assert copies == []
    assert all(int(b) == 3 for n, b in average.module.named_buffers() if not b.is_floating_point())


def test_the_process_memory_on_its_gpu_comes_from_nvml_by_uuid(monkeypatch):
    """NVML counts every process on a GPU (the CUDA context included); a run records its own, found by its pid
    on the GPU with its device's UUID. Where NVML cannot say (no nvidia-ml-py, MIG), there is no figure."""
    import os
    import sys
    import types

    from mtm_engine.devices import nvml_process_memory_gb

    class Props:
        uuid = "1234-abcd"

    asked = []
    nvml = types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlDeviceGetHandleByUUID=lambda uuid: asked.append(uuid) or "handle",
        nvmlDeviceGetComputeRunningProcesses=lambda handle: [types.SimpleNamespace(pid=1, usedGpuMemory=9e9),
                                                             types.SimpleNamespace(pid=os.getpid(), usedGpuMemory=3e9)])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Props())
    assert nvml_process_memory_gb(torch.device("cuda", 0)) == pytest.approx(3.0) and asked == ["GPU-1234-abcd"]
    nvml.nvmlDeviceGetComputeRunningProcesses = lambda handle: [types.SimpleNamespace(pid=os.getpid(), usedGpuMemory=None)]
    assert nvml_process_memory_gb(torch.device("cuda", 0)) is None   # MIG: NVML does not say
    monkeypatch.setitem(sys.modules, "pynvml", None)                  # no nvidia-ml-py
    assert nvml_process_memory_gb(torch.device("cuda", 0)) is None


def test_a_dataset_larger_than_the_runs_share_of_the_gpu_is_refused_before_the_copy(tmp_path, monkeypatch):
    """F-MNIST at data.size = 224 is 70,000 x 224 x 224 bytes = 3.3 GiB of 8-bit pixels (14 GB as float32): it
    fits an 80 GiB GPU alone, and is refused in a slot of a GPU shared 32 ways (2.5 GiB), in one line naming the
    keys to change, before anything is copied to the device."""
    from mtm_engine.data import Dataset, Split
    from mtm_engine.devices import check_dataset_fits
    from mtm_engine.train import fit

    class Properties:
        total_memory = 80 * 2**30

    EmulatedCuda(monkeypatch, 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Properties())
    cuda = torch.device("cuda:0")
    fmnist_224 = 70_000 * 224 * 224 + 70_000 * 8   # pixels and int64 labels
    check_dataset_fits(fmnist_224, cuda, "F-MNIST")   # the whole GPU: fits
    check_dataset_fits(fmnist_224, torch.device("cpu"), "F-MNIST")   # the cpu is not checked
    monkeypatch.setenv(GPU_SHARE_ENV, str(1 / 32))
    with pytest.raises(ConfigError, match=r"F-MNIST takes 3\.3 GiB on the GPU, more than this run's 2\.5 GiB share of "
                                          r"cuda:0 .*fewer --per-gpu\); lower data\.size"):
        check_dataset_fits(fmnist_224, cuda, "F-MNIST")

    # fit checks before its first copy: a split whose .to() would be the copy is never asked
    copies = []
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda *a: None)
    monkeypatch.setattr(Split, "to", lambda self, device: copies.append(device))
    pixels = torch.zeros(3, 1, 4, 4, dtype=torch.uint8)
    split = Split(pixels, torch.zeros(3, dtype=torch.long), torch.zeros(1), torch.ones(1))
    huge = Dataset("digits", split, split, split, ["0", "1"])
    monkeypatch.setattr(Dataset, "nbytes", property(lambda self: 3 * 2**30))
    with pytest.raises(ConfigError, match=r"data.dataset = 'digits' at data.size = 36 takes 3\.0 GiB"):
        fit(load_spec(overrides=["train.device=cuda:0"]), tmp_path, data=huge)
    assert copies == []

