"""The prepared GPU check (bench/gpu.py): its --dry-run runs every step, tiny, on the CPU."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.long


def test_the_gpu_check_runs_every_step_in_a_dry_run_and_a_second_command_adds_to_its_figures(tmp_path):
    def check(*args):
        return subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), str(tmp_path / "out"), "--dry-run",
                               *args], capture_output=True, text=True, timeout=600)

    first, second = check("--steps", "versions,tests,train"), check("--steps", "paper,share")
    for out in (first, second):
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    figures = json.loads((tmp_path / "out" / "gpu.json").read_text())
    assert figures["dry_run"] is True
    assert all(figures[step]["ok"] for step in ("versions", "tests", "train", "paper", "share"))
    assert figures["versions"]["versions"][0].startswith("mtm-workbench ")
    assert "passed" in figures["tests"]["summary"]
    assert figures["train"]["images_per_s"]["engine"] > 0 and figures["train"]["engine_over_bare"] > 0
    assert figures["paper"]["epochs"] == 1 and 0 <= figures["paper"]["test_accuracy_val_selected"]["cos"] <= 1
    assert figures["paper"]["peak_gpu_gb"] is None   # no GPU figures off the GPU
    share = figures["share"]
    assert share["alone"]["statuses"] == ["finished"] and share["together"]["statuses"] == ["finished"] * 4
    assert share["together"]["most_at_once"] <= 2 and share["images_per_s_ratio"] > 0
    assert "== share" in (tmp_path / "out" / "gpu.log").read_text()


def test_a_step_past_its_deadline_fails_alone_and_leaves_the_other_figures(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), str(tmp_path / "out"), "--dry-run",
                          "--steps", "versions,share", "--step-s", "20"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    figures = json.loads((tmp_path / "out" / "gpu.json").read_text())
    assert figures["versions"]["ok"] and not figures["share"]["ok"]
    assert "deadline" in figures["share"]["error"] and figures["share"]["step_s"] < 60
