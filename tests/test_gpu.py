"""The GPU path: bf16 autocast with float32 heads, channels_last, GPU figures and the queue on CUDA.
Skipped where no CUDA device is visible; bench/gpu.sh runs them on a GPU machine."""

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from mtm_engine.config import load_spec
from mtm_engine.train import fit

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_fit_on_cuda_with_bf16_autocast_learns(tmp_path):
    result = fit(load_spec(overrides=["train.epochs=3", "train.device=cuda", "train.amp=true"]), tmp_path)
    assert result.status == "finished"
    assert result.records[-1]["test_acc_euc"] > 0.7
    # GPU figures per epoch: torch's peak memory always. (NVML's utilisation and process memory are not asserted:
    # a MIG slice or a container may not report them.)
    record = result.records[-1]
    assert 0 < record["gpu_mem_allocated_gb"] <= record["gpu_mem_reserved_gb"]
    if "gpu_mem_process_gb" in record:   # the CUDA context and libraries come on top of torch's own
        assert record["gpu_mem_process_gb"] >= record["gpu_mem_allocated_gb"]


@pytest.mark.parametrize("head", ["mtm", "pure"])
def test_heads_are_float32_under_cuda_autocast(head):
    from mtm_engine.config import ModelSpec
    from mtm_engine.models import build_model

    model = build_model(ModelSpec(backbone="resnet18", head=head, dim=1351), 1, 10).cuda().eval()
    x = torch.randn(8, 1, 36, 36, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        e, logits = model(x)
    assert e.dtype == torch.float32 and (logits is None or logits.dtype == torch.float32)


def test_a_queued_run_records_its_gpu(tmp_path):
    env = {**os.environ, "MTM_HOME": str(tmp_path / "home")}
    mtm = [sys.executable, "-P", "-m", "mtm_tui.cli"]
    started = subprocess.run([*mtm, "run", "-d", "--json", "--gpus", "auto", "--set", "train.epochs=1"],
                             capture_output=True, text=True, cwd=tmp_path, env=env)
    run_id = json.loads(started.stdout)["run_id"]
    deadline = time.time() + 240
    while time.time() < deadline:
        shown = json.loads(subprocess.run([*mtm, "show", run_id, "--json"], capture_output=True, text=True,
                                          cwd=tmp_path, env=env).stdout)
        if shown["status"] not in ("queued", "running"):
            break
        time.sleep(1)
    assert shown["status"] == "finished" and shown["device"].startswith("cuda:")
    assert shown["slot_device"].startswith("gpu:") and "gpu_mem_allocated_gb" in shown["records"][-1]
