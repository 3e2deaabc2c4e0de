"""The prepared GPU check (bench/gpu.py): its --dry-run runs every step, tiny, on the CPU."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_the_gpu_check_runs_every_step_in_a_dry_run(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), str(tmp_path / "out"), "--dry-run"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    figures = json.loads((tmp_path / "out" / "gpu.json").read_text())
    assert figures["dry_run"] is True
    steps = ("versions", "tests", "train", "paper", "sweep", "queue")
    assert all(figures[step]["ok"] for step in steps)
    assert figures["versions"]["versions"][0].startswith("mtm ")
    assert figures["train"]["images_per_s"]["engine"] > 0 and figures["train"]["engine_over_bare"] > 0
    assert figures["paper"]["epochs"] == 1 and 0 <= figures["paper"]["test_accuracy_val_selected"]["cos"] <= 1
    assert figures["paper"]["peak_gpu_gb"] is None   # no GPU figures off the GPU
    assert figures["sweep"]["finished"] == {"finished": 2} and figures["sweep"]["throughput_ratio"] > 0
    assert figures["queue"]["statuses"] == ["finished"] * 4 and figures["queue"]["most_at_once"] == 2
    assert "== queue" in (tmp_path / "out" / "gpu.log").read_text()
