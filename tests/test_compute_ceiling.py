"""bench/compute_ceiling.py: its multiply-add count against hand computations, and a tiny run of the script."""

import importlib.util
import json
import subprocess
import sys

import torch
from conftest import ROOT
from torch import nn

spec = importlib.util.spec_from_file_location("compute_ceiling", ROOT / "bench" / "compute_ceiling.py")
ceiling = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ceiling)


def test_multiply_adds_match_a_hand_count():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(32, 10))
    # conv: 2 x 4 x 4 outputs, each 1 x 3 x 3 products = 288; linear: 10 outputs of 32 products = 320; per image
    assert ceiling.multiply_adds(model, torch.zeros(3, 1, 4, 4)) == 3 * (288 + 320)
    grouped = nn.Conv2d(4, 8, 3, padding=1, groups=2)   # each output sees 4 / 2 = 2 input channels
    assert ceiling.multiply_adds(grouped, torch.zeros(1, 4, 5, 5)) == 8 * 5 * 5 * (2 * 9)


def test_the_reference_network_is_the_issue_s_six_convolutions():
    net = ceiling.reference_network()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64, 128, 128]
    assert sum(p.numel() for c in convs for p in c.parameters()) == 285_984   # the issue's 0.29 M
    # 28 px: 1->32, 32->32; 14 px: 32->64, 64->64; 7 px: 64->128, 128->128
    hand = (28 * 28 * (9 * 32 + 32 * 9 * 32) + 14 * 14 * (32 * 9 * 64 + 64 * 9 * 64)
            + 7 * 7 * (64 * 9 * 128 + 128 * 9 * 128))
    assert ceiling.multiply_adds(net, torch.zeros(1, 1, 28, 28)) == hand == 29_127_168


def test_the_script_prints_and_writes_its_figures(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "compute_ceiling.py"), "--repeats", "1", "--steps", "1",
                          "--matrix", "128", "--batch", "8", "--claim", "1000", "--json", str(tmp_path / "f.json")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    figures = json.loads((tmp_path / "f.json").read_text())
    assert set(figures["networks"]) == {"ours", "stages3", "reference"}
    reference = figures["networks"]["reference"]
    assert reference["multiply_adds"] == 29_127_168 + 128 * 10   # with the shared linear head
    # the claim's FLOP rate: 1000 images/s x 3 passes x 2 FLOPs x the multiply-adds
    assert figures["claim"]["gflops"] == 1000 * 6 * reference["multiply_adds"] / 1e9
    assert out.stdout.startswith("$ python ") and "x the ceiling" in out.stdout


def test_options_that_would_measure_nothing_are_refused_in_one_line():
    for option, value in (("--batch", "0"), ("--steps", "-3"), ("--claim", "-1")):
        out = subprocess.run([sys.executable, str(ROOT / "bench" / "compute_ceiling.py"), option, value],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and "Traceback" not in out.stderr
        assert out.stderr.strip().splitlines()[-1].startswith(f"compute_ceiling.py: error: argument {option}: ")
