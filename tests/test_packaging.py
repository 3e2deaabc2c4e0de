"""The package users install: the wheel holds every module and data file of the source tree, the
suite imports the package pip installed, and `mtm --version` names what it runs on."""

import json
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

from conftest import MTM, ROOT

import mtm_engine
import mtm_tui
from mtm_engine import DISTRIBUTION

PACKAGES = ("mtm_engine", "mtm_tui")
SHIPPED = {".py", ".tcss", ".toml", ".json"}


def source_files() -> set[str]:
    return {str(p.relative_to(ROOT)) for package in PACKAGES for p in (ROOT / package).rglob("*")
            if p.is_file() and p.suffix in SHIPPED and "__pycache__" not in p.parts}


def test_the_wheel_holds_every_subpackage_and_data_file(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path)], check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("mtm_workbench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = source_files()
    assert {"mtm_tui/screens/runs.py", "mtm_tui/widgets/charts.py", "mtm_tui/app.tcss",
            "mtm_engine/quickstart.toml", "mtm_engine/paper_results.json"} <= expected
    assert expected - names == set()


def test_the_suite_imports_the_package_pip_installed():
    """A wheel install must be what the tests import (not the source tree beside them, which
    `python -m pytest` would put first on the path); an editable one must point at this checkout."""
    (dist,) = [d for d in metadata.distributions(name=DISTRIBUTION) if d.read_text("RECORD") is not None]
    editable = json.loads(dist.read_text("direct_url.json") or "{}").get("dir_info", {}).get("editable", False)
    for package in (mtm_engine, mtm_tui):
        module = Path(package.__file__)
        if editable:
            assert module.parent == ROOT / package.__name__
        else:
            assert module == Path(dist.locate_file(f"{package.__name__}/__init__.py"))
            assert module.parent != ROOT / package.__name__   # (the venv itself may live in the checkout)


def test_version_names_mtm_torch_and_the_cuda_devices(tmp_path):
    out = subprocess.run([*MTM, "--version"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"mtm-workbench {metadata.version(DISTRIBUTION)}"
    assert lines[1].startswith(f"torch {metadata.version('torch').split('+')[0]}")
    assert lines[2].startswith("CUDA devices: ")
