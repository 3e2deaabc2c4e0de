"""mtm-tui: start-up time, and responsiveness with a large store and long runs.

    python bench/tui.py                 # a store of 3,750 runs (the paper's study), 5 start-ups
    python bench/tui.py --runs 500

  startup   a fresh `mtm-tui` process, from exec to the Runs screen showing the store's rows
            (headless), median of --repeats; and which heavy modules it imported (none expected)
  table     re-sorting all the runs and rebuilding the Runs table (its first 200 rows)
  charts    redrawing all the Run screen's charts for a 30-epoch run with 4 classifiers (8 accuracy
            series), rendered
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from store import fill, record  # noqa: E402  (bench/store.py)

STARTUP = """
import sys, time
from mtm_tui.app import MtmApp
from mtm_tui.screens.runs import RunsScreen

async def until_shown(pilot):
    app = pilot.app
    while not (isinstance(app.screen, RunsScreen) and app.screen.rows):
        await pilot.pause(0.01)
    heavy = sorted(m for m in ("torch", "ray") if m in sys.modules)
    print(f"heavy={','.join(heavy) or 'none'}")
    app.exit()

MtmApp(sys.argv[1]).run(headless=True, auto_pilot=until_shown)
"""


def startup_s(home: Path) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", STARTUP, str(home)], capture_output=True, text=True, check=True)
    return time.perf_counter() - start, out.stdout.strip().splitlines()[-1]


async def ui_timings(home: Path, run_id: str) -> tuple[float, float]:
    from mtm_tui.app import MtmApp
    from mtm_tui.screens.run import RunScreen

    app = MtmApp(home)
    async with app.run_test(size=(120, 40)) as pilot:
        while not app.screen.rows:
            await pilot.pause(0.05)
        screen = app.screen
        times = []
        for column in ("test%", "name", "val%", "epoch", "age"):   # a new order rebuilds the table (an epoch
            start = time.perf_counter()                            # landing only updates cells)
            screen.sort(column)
            await pilot.pause()
            times.append(time.perf_counter() - start)
        table_ms = 1000 * statistics.median(times)
        app.push_screen(RunScreen(run_id))
        await pilot.pause(1.0)
        run_screen = app.screen
        data = run_screen.fetch()
        times = []
        for _ in range(5):
            start = time.perf_counter()
            run_screen.show(data)
            await pilot.pause()
            times.append(time.perf_counter() - start)
        return table_ms, 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3750)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mtm-tui-bench-") as tmp:
        small, big = Path(tmp) / "small", Path(tmp) / "big"
        fill(str(small), [0], 1, 30)
        fill(str(big), list(range(args.runs // 50)), 50, 1)
        # one long run with every metric, for the charts
        from mtm_engine.store import Store

        store = Store(big)
        rows = [{"epoch": e, **{k: v for k, v in record(e, __import__("random").Random(e)).items() if k != "epoch"}}
                for e in range(1, 31)]
        for r in rows:
            store.append_epoch("s000t000", r, {"epoch": r["epoch"]})
        small_times = [startup_s(small) for _ in range(args.repeats)]
        big_times = [startup_s(big) for _ in range(args.repeats)]
        table_ms, charts_ms = asyncio.run(ui_timings(big, "s000t000"))
    print("$ python " + " ".join(sys.argv))
    print(f"startup, 1 run:    {statistics.median(t for t, _ in small_times):.2f} s (median of {args.repeats}); "
          f"{small_times[0][1]}")
    print(f"startup, {args.runs} runs: {statistics.median(t for t, _ in big_times):.2f} s; {big_times[0][1]}")
    print(f"table: re-sort {args.runs} runs and rebuild {table_ms:.0f} ms; "
          f"charts: redraw 30 epochs x 8 series {charts_ms:.0f} ms")


if __name__ == "__main__":
    main()
