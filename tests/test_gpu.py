"""The GPU path: bf16 autocast and channels_last on CUDA. Skipped where no CUDA device is visible."""

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
