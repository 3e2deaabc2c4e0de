"""Import hygiene (DESIGN.md rules 1-2): the engine pulls in no UI package, and the parts the
TUI uses (config) pull in no torch."""

import json
import subprocess
import sys

UI = ("textual", "typer", "rich", "plotext", "textual_plotext", "mtm_tui")


def _modules_after(statement: str) -> set[str]:
    code = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return {m.split(".")[0] for m in json.loads(out)}


def test_engine_imports_no_ui_package():
    loaded = _modules_after("import mtm_engine.train, mtm_engine.data, mtm_engine.models, mtm_engine.config")
    assert not loaded & set(UI)


def test_config_and_results_import_no_torch():
    loaded = _modules_after("import mtm_engine.config, mtm_engine.results, mtm_engine.errors")
    assert "torch" not in loaded
