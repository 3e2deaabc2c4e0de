"""Import hygiene (DESIGN.md rules 1-2), harlequin-style: modules are imported in a fresh interpreter and
sys.modules is checked. Every engine module pulls in no UI package, and the TUI process (the app and every
screen and widget) pulls in no torch and no ray. The modules of a side are imported together, in one
interpreter (what none of them imports together, none imports alone), and a failure names the module that
pulls the package in, each alone. Then ruff, as configured in pyproject.toml, finds nothing."""

import json
import pkgutil
import subprocess
import sys

import pytest
from conftest import ROOT

import mtm_engine
import mtm_tui.screens
import mtm_tui.widgets

UI = {"textual", "typer", "rich", "plotext", "textual_plotext", "mtm_tui"}
ENGINE_MODULES = sorted(m.name for m in pkgutil.walk_packages(mtm_engine.__path__, "mtm_engine."))
TUI_MODULES = ["mtm_tui.app", "mtm_tui.services.jobs", "mtm_tui.services.rows"] + sorted(
    m.name for package in (mtm_tui.screens, mtm_tui.widgets) for m in pkgutil.iter_modules(package.__path__,
                                                                                            package.__name__ + "."))

def _modules_after(module: str) -> set[str]:
    code = f"import sys, json; import {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return {m.split(".")[0] for m in json.loads(out)}


def test_there_are_modules_to_check():
    assert {"mtm_engine.train", "mtm_engine.store", "mtm_engine.measures.geometry"} <= set(ENGINE_MODULES)
    assert "mtm_tui.screens.runs" in TUI_MODULES and "mtm_tui.widgets.charts" in TUI_MODULES


def _culprits(modules: list[str], banned: set[str]) -> dict[str, set[str]]:
    return {m: found for m in modules if (found := _modules_after(m) & banned)}


def test_engine_modules_import_no_ui_package():
    # Ray Tune imports rich for its own console output: not ours to keep out of tune.py, which is checked alone.
    together = [m for m in ENGINE_MODULES if m != "mtm_engine.tune"]
    if _modules_after("; import ".join(together)) & UI:
        pytest.fail(f"engine modules import UI packages: {_culprits(together, UI)}")
    assert not (_modules_after("mtm_engine.tune") - _modules_after("ray.tune")) & UI


def test_tui_modules_import_no_torch_and_no_ray():
    heavy = {"torch", "ray", "torchvision"}
    if _modules_after("; import ".join(TUI_MODULES)) & heavy:
        pytest.fail(f"TUI modules import torch or ray: {_culprits(TUI_MODULES, heavy)}")


def test_ruff_finds_nothing():
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "mtm_engine", "mtm_tui", "tests", "bench"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_record_keys_are_spelled_only_in_records():
    """An epoch record's split-prefixed keys (val_acc_cos, test_cluster_size) are made by records.acc_key and
    Metric.key; a module that spells one itself breaks silently when a key is renamed."""
    import ast

    from mtm_engine.catalogue import CLASSIFIERS
    from mtm_engine.records import METRICS

    keys = {m.key(split, c) for m in METRICS.values() for split in ("val", "test") for c in CLASSIFIERS}
    keys = {k for k in keys if k.startswith(("val_", "test_"))}
    for path in sorted((ROOT / "mtm_engine").rglob("*.py")) + sorted((ROOT / "mtm_tui").rglob("*.py")):
        if path.name == "records.py" and path.parent.name == "mtm_engine":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert node.value not in keys, f"{path.relative_to(ROOT)}:{node.lineno} spells {node.value!r}"
            if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
                head = str(node.values[0].value)
                assert not head.startswith(("val_", "test_")), f"{path.relative_to(ROOT)}:{node.lineno} spells {head!r}"
