import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The real MNIST / Fashion-MNIST next to the project; absent in a user's fresh clone."""
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATA} (only on the project's machines)")
    return SHARED_DATA


@pytest.fixture
def mtm_env(tmp_path) -> dict[str, str]:
    """Environment for running `mtm` in a subprocess with its own home."""
    env = dict(os.environ, MTM_HOME=str(tmp_path / "home"), PYTHONUNBUFFERED="1")
    env.pop("MTM_DEBUG", None)
    return env


MTM = [sys.executable, "-m", "mtm_tui.cli"]


def pytest_collection_modifyitems(items):
    """Ray tests run one after another on one xdist worker (two local Ray clusters on 2 cores starve each other),
    and first, with the TUI's tests next: the Ray tests' minutes of training then overlap the TUI tests' waiting
    for the screen on the other worker, instead of either ending the suite alone. Otherwise in file order."""
    for item in items:
        if item.get_closest_marker("ray"):
            item.add_marker(pytest.mark.xdist_group("ray"))
    items.sort(key=lambda item: (item.get_closest_marker("ray") is None, not item.module.__name__.startswith("test_tui")))


# A small network on smaller images: an epoch of the embedded digits in about 0.2 s instead of 1.2 s, for tests of
# what happens around training (queue, stop, resume, eval), not of what it learns.
SMALL = ["model.width=4", "model.dim=16", "data.size=16"]
SMALL_ARGS = [arg for key in SMALL for arg in ("--set", key)]
