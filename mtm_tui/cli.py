"""`mtm`: the headless command line. Commands parse, delegate to the engine and print; they live in
`mtm_tui/commands/`, by what they do (runs, sweeps, results), on one Typer app.

Engine errors (`MtmError`) are caught in one place, `main`, and printed as one line; `--debug`
(anywhere on the command line) shows the traceback instead.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from mtm_engine.errors import MtmError, out_of_memory

# Importing a command module registers its commands, in this order in `mtm --help`.
from mtm_tui.commands import runs, sweeps, results  # noqa: F401 # isort: skip
from mtm_tui.commands.base import HOME, app, err_console


@app.command()
def tui(home: Optional[Path] = HOME) -> None:
    """Open the terminal UI (the same as `mtm-tui`)."""
    from mtm_tui.app import run

    raise typer.Exit(run(home or Path("mtm-home")))


def main() -> None:
    """Entry point: strips --debug from anywhere, runs the app, prints engine errors as one line."""
    debug = "--debug" in sys.argv or bool(os.environ.get("MTM_DEBUG"))
    sys.argv = [a for a in sys.argv if a != "--debug"]
    try:
        app()
    except MtmError as exc:
        if debug:
            raise
        if "--json" in sys.argv:   # scripts parse stdout: the error is JSON too
            print(json.dumps({"error": str(exc)}))
        else:
            err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted; `mtm resume RUN` continues from the last checkpoint", markup=False)
        sys.exit(130)
    except Exception as exc:   # not a user error, but still one line (the run, if any, is recorded failed)
        if debug:
            raise
        what = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        oom = out_of_memory(exc)   # outside a run too (mtm eval)
        line = str(oom) if oom else f"{type(exc).__name__}: {what[:300]} (add --debug for the traceback)"
        if "--json" in sys.argv:
            print(json.dumps({"error": line}))
        else:
            err_console.print(f"error: {line}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
