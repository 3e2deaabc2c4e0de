"""The Sweep screen: a sweep's trials best first, the parameter-vs-accuracy scatter, and which
parameter matters most, on a fixture store with a six-trial sweep written directly."""

import asyncio
import os
from pathlib import Path

import pytest
from conftest import settle, until
from textual.widgets import DataTable

from mtm_engine.config import load_spec
from mtm_engine.importance import importance
from mtm_engine.runner import create_run, summary_fields
from mtm_engine.store import Store
from mtm_tui.app import MtmApp
from mtm_tui.screens.run import RunScreen
from mtm_tui.screens.sweep import ParamScatter, SweepScreen, compact, log_axis, short_names

NOW = 1_795_000_000.0
SWEEP = "5ee7c0de"
EPOCHS = 6
# run id, drawn values, status, epochs done, best validation accuracy (cos) reached
TRIALS = [
    ("a1" * 16, {"train.lr": 3e-4, "model.dim": 128, "loss.name": "push_pull"}, "finished", 6, 0.962),
    ("b2" * 16, {"train.lr": 1e-3, "model.dim": 64, "loss.name": "push_pull"}, "finished", 6, 0.951),
    ("c3" * 16, {"train.lr": 1e-4, "model.dim": 256, "loss.name": "cosine"}, "finished", 6, 0.930),
    ("d4" * 16, {"train.lr": 2e-4, "model.dim": 32, "loss.name": "push_pull"}, "finished", 2, 0.900),  # ASHA stop
    ("e5" * 16, {"train.lr": 8e-6, "model.dim": 200, "loss.name": "cosine"}, "finished", 6, 0.870),
    ("f6" * 16, {"train.lr": 4e-3, "model.dim": 100, "loss.name": "cosine"}, "failed", 0, None),
]
BEST_FIRST = ["a1" * 16, "b2" * 16, "c3" * 16, "d4" * 16, "e5" * 16, "f6" * 16]


def fake_records(epochs: int, best: float) -> list[dict]:
    """Validation accuracy climbing to `best` at the last epoch; test 1 point under; euc 2 points under cos."""
    out = []
    for e in range(1, epochs + 1):
        val = best - 0.02 * (epochs - e)
        out.append({"epoch": e, "train_loss": 1 / e, "val_acc_cos": val, "test_acc_cos": val - 0.01,
                    "val_acc_euc": val - 0.02, "test_acc_euc": val - 0.03})
    return out


@pytest.fixture
def sweep_home(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    store = Store(home)
    store.save_sweep(SWEEP, {"id": SWEEP, "name": "lr-dim-loss", "spec": load_spec().to_dict(),
                             "tune": {"metric": "cos", "num_samples": 8, "max_epochs": EPOCHS}, "created": NOW})
    for n, (run_id, config, status, done, best) in enumerate(TRIALS):
        spec = load_spec(overrides=[f"{k}={v}" for k, v in config.items()] + [f"train.epochs={EPOCHS}",
                                                                                 "eval.classifiers=['cos', 'euc']"])
        create_run(store, spec, status="running", sweep=SWEEP, run_id=run_id,
                   extra={"git": None, "trial_id": f"t{n}", "trial_config": config})
        records = fake_records(done, best) if best is not None else []
        for i in range(len(records)):
            store.append_epoch(run_id, records[i], summary_fields(spec, records[:i + 1]))
        store.update(run_id, status=status, created=NOW - 600 * (n + 1), host="fixture", device="cpu",
                     message="the trial raised an error" if status == "failed" else "")
    # a run outside the sweep, which the sweep view leaves out
    other = create_run(store, load_spec(overrides=["name=single"]), status="finished", run_id="99" * 16)
    store.update(other, created=NOW - 60)
    return home


def fixture_app(home):
    return MtmApp(Path(os.path.relpath(home)), clock=lambda: NOW, host="fixture")


async def _open_sweep(pilot):
    await settle(pilot, 0.5)
    pilot.app.push_screen(SweepScreen(SWEEP))
    await until(pilot, lambda: isinstance(pilot.app.screen, SweepScreen) and pilot.app.screen.data.trials)
    await settle(pilot, 0.5)


def test_the_sweep_view_ranks_trials_and_parameters(sweep_home):
    app = fixture_app(sweep_home)
    expected = [imp.param for imp in importance([(config, best) for _, config, _, _, best in TRIALS])]

    async def flow():
        async with app.run_test(size=(100, 30)) as pilot:
            await _open_sweep(pilot)
            screen = app.screen
            table = screen.query_one(DataTable)
            # the trials, best validation accuracy first (the failed one last); the single run is not there
            assert [row.value for row in table.rows] == BEST_FIRST
            assert table.get_row_at(0)[-2:] == ["96.20", "95.20"]   # val%, test% of a1 (test 1 point under)
            assert table.get_row_at(3)[-3] == "2/6"                  # epochs done of the sweep's most
            # parameters in the importance order of mtm_engine.importance on the same data, in the panel,
            # the table's columns and the chart (the most important first)
            assert screen.params() == expected
            assert [str(c.label) for c in table.columns.values()][2:-3] == [short_names(expected)[p] for p in expected]
            chart = screen.query_one(ParamScatter)
            assert expected[0] in chart.caption
            # ] and [ (and right, left) cycle the chart's parameter
            await pilot.press("right_square_bracket")
            assert expected[1] in chart.caption and expected[0] not in chart.caption
            await pilot.press("right")
            assert expected[2] in chart.caption
            await pilot.press("right")
            assert expected[0] in chart.caption
            await pilot.press("left_square_bracket")
            assert expected[2] in chart.caption
            # the header names the sweep, its trials by status, and the best trial
            header = str(screen.query_one("#sweep-header").render())
            assert "sweep 5ee7c0de" in header and "lr-dim-loss" in header and "6 of 8 trials" in header
            assert "5 finished" in header and "1 failed" in header and "best a1a1a1a1 val 96.20%" in header
            # enter opens the trial's run; escape comes back
            await pilot.press("down", "enter")
            assert isinstance(app.screen, RunScreen) and app.screen.run_id == "b2" * 16
            await pilot.press("escape")
            assert isinstance(app.screen, SweepScreen)
            await pilot.press("escape")
            assert not isinstance(app.screen, SweepScreen)
            assert app.return_code is None
    asyncio.run(flow())


def test_the_accuracy_is_of_the_metric_the_sweep_maximised(sweep_home):
    """A sweep on the euc classifier: the rows' figures are of cos (the primary), the view's of euc."""
    store = Store(sweep_home)
    saved = store.sweep(SWEEP)
    store.save_sweep(SWEEP, {**saved, "tune": {**saved["tune"], "metric": "euc"}})
    app = fixture_app(sweep_home)

    async def flow():
        async with app.run_test(size=(100, 30)) as pilot:
            await _open_sweep(pilot)
            trials = {t.run_id: t for t in app.screen.data.trials}
            # euc is 2 points under cos at every epoch, so its best is too; test at that epoch, 3 under
            assert trials["a1" * 16].val == pytest.approx(0.942)
            assert trials["a1" * 16].test == pytest.approx(0.932)
            assert trials["f6" * 16].val is None
            assert "val_acc_euc" in str(app.screen.query_one("#sweep-header").render())
    asyncio.run(flow())


def test_an_unknown_sweep_says_so_without_crashing(sweep_home):
    app = fixture_app(sweep_home)

    async def flow():
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot, 0.5)
            app.push_screen(SweepScreen("00000000"))
            await settle(pilot, 1.0)
            assert "none recorded yet" in str(app.screen.query_one("#sweep-header").render())
            assert "no drawn parameters" in app.screen.query_one(ParamScatter).caption
            await pilot.press("right", "left_square_bracket")
            assert app.return_code is None
    asyncio.run(flow())


def test_every_chart_draws_again_the_same_and_survives_a_resize(sweep_home):
    """plotext's own log scale takes log10 of its data in place at every build: a second render of a
    log-axis chart (a resize) raised a math domain error. Each parameter's chart must build twice alike."""
    app = fixture_app(sweep_home)

    async def flow():
        async with app.run_test(size=(80, 24)) as pilot:
            await _open_sweep(pilot)
            chart = app.screen.query_one(ParamScatter)
            seen = set()
            for _ in app.screen.params():
                seen.add(chart.caption)
                assert chart.plt.build() == chart.plt.build()
                await pilot.resize_terminal(120, 40)
                await settle(pilot, 0.3)
                await pilot.resize_terminal(80, 24)
                await settle(pilot, 0.3)
                await pilot.press("right")
            assert len(seen) == 3 and app.return_code is None
    asyncio.run(flow())


def test_values_read_compactly_and_log_axes_need_two_decades():
    assert [compact(v) for v in (3.2e-4, 0.95, 12.5, 1234.0, 2e5, 64, True, "push_pull", 0.0)] == \
        ["3.2e-04", "0.95", "12.5", "1234", "2.0e+05", "64", "True", "push_pull", "0"]
    assert log_axis([1e-4, 1e-2]) and not log_axis([1e-4, 9e-3]) and not log_axis([0.0, 1.0, 100.0])
    assert short_names(["train.lr", "loss.r", "model.r", "loss.name"]) == {
        "train.lr": "lr", "loss.r": "loss.r", "model.r": "model.r", "loss.name": "loss"}


def test_snapshot_sweep_80x24(snap_compare, sweep_home):
    assert snap_compare(fixture_app(sweep_home), terminal_size=(80, 24), run_before=_open_sweep)


def test_snapshot_sweep_200x50(snap_compare, sweep_home):
    assert snap_compare(fixture_app(sweep_home), terminal_size=(200, 50), run_before=_open_sweep)
