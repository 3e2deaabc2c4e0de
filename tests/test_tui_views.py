"""The TUI's views with Textual's Pilot: navigation on the Runs screen, groups of seeds, tags and
notes, the epoch in flight, the run charts' views, Compose's focus and Esc, Export's scope."""

import asyncio
import time

import pytest
from conftest import NOW, fake_records, fixture_app, settle, until
from textual.widgets import DataTable, Input, Select

from mtm_engine.config import load_spec
from mtm_engine.events import BatchProgress, progress_of
from mtm_engine.runner import create_run
from mtm_engine.store import Store
from mtm_tui.screens.compare import CompareScreen
from mtm_tui.screens.compose import ComposeScreen
from mtm_tui.screens.run import RunScreen
from mtm_tui.screens.runs import RunsScreen
from mtm_tui.services.rows import progress, stop_question
from mtm_tui.widgets.charts import MetricChart, epoch_ticks
from mtm_tui.widgets.palette import COLOURS, MARKERS


def cursor_id(app) -> str:
    return app.screen.selected_id()


def test_progress_of_the_epoch_in_flight_by_hand():
    # 10 of 40 batches, 1,000 images in 5 s: 200 img/s; 2 batches/s, so 30 batches left take 15 s
    p = progress_of(BatchProgress(epoch=3, batch=10, batches=40, loss=0.5, images=1000, seconds=5.0, gpu_mem_gb=1.25),
                    now=NOW)
    assert (p["images_per_s"], p["eta_s"], p["epoch"], p["at"]) == (200.0, 15.0, 3, NOW)
    row = {"status": "running", "epoch": 2, "progress": p}
    assert progress(row, NOW + 1) == "batch 10/40 · 200 img/s · ETA 15s · 1.2 GB"
    assert progress({**row, "epoch": 3}, NOW + 1) == ""            # that epoch has landed
    assert progress({**row, "status": "finished"}, NOW + 1) == ""
    assert progress(row, NOW + 600) == ""                          # stale: not shown as current


def test_palette_and_epoch_ticks():
    assert len(set(COLOURS)) == 10 and len(set(MARKERS)) == 10
    assert epoch_ticks([1, 2, 3]) == [1, 2, 3]
    assert epoch_ticks(list(range(1, 31))) == [2, 6, 10, 14, 18, 22, 26, 30]   # step ceil(30/8) = 4, ends on 30
    assert all(isinstance(t, int) for t in epoch_ticks(list(range(5, 17))))


def test_runs_screen_keys_move_mark_filter_and_sort(fixture_home):
    app = fixture_app(fixture_home)

    async def flow():
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot, 1.0)
            screen = app.screen
            order = [str(k.value) for k in screen.query_one(DataTable).rows]   # newest first
            assert cursor_id(app) == order[0]
            await pilot.press("j")
            assert cursor_id(app) == order[1]
            await pilot.press("G")
            assert cursor_id(app) == order[-1]
            await pilot.press("k")
            assert cursor_id(app) == order[-2]
            await pilot.press("g")
            assert cursor_id(app) == order[0]
            await pilot.press("space")                 # marks and moves down
            assert screen.marked == {order[0]} and cursor_id(app) == order[1]
            await pilot.press("space")
            assert screen.marked == {order[0], order[1]} and cursor_id(app) == order[2]
            await pilot.press("slash")
            assert app.focused is screen.query_one("#filter")
            await pilot.press("escape")                # leaves the filter
            assert app.focused is screen.query_one(DataTable)
            await pilot.press("slash", "tab")          # tab does not trap focus in the filter
            assert app.focused is screen.query_one(DataTable)
            await pilot.press("s")                     # a key, then the column
            await pilot.pause(0.3)
            options = app.screen.options
            assert "test%" in options
            steps = options.index("test%") - options.index("age")   # the chooser starts on the current column
            for _ in range(abs(steps)):
                await pilot.press("down" if steps > 0 else "up")
            await pilot.press("enter")
            await pilot.pause(0.3)
            assert screen.sort_by == "test%" and screen.reverse   # best first
            tests = [r["test_acc"] for r in screen.visible()]
            assert tests == sorted(tests, reverse=True)
    asyncio.run(flow())


def test_the_cursor_stays_on_its_run_when_new_runs_arrive(fixture_home):
    app = fixture_app(fixture_home)
    store = Store(fixture_home)

    async def flow():
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot, 1.0)
            await pilot.press("j")
            on = cursor_id(app)
            new = create_run(store, load_spec(overrides=["name=newcomer"]), status="finished")
            store.update(new, created=NOW)   # the newest: it goes on top, above the cursor
            await until(pilot, lambda: len(app.screen.rows) == 4)
            await pilot.pause(0.3)
            assert cursor_id(app) == on
    asyncio.run(flow())


def test_seeds_of_one_config_group_into_one_row_with_mean_and_std(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = Store(tmp_path / "home")
    tests = {0: 0.90, 1: 0.92, 2: 0.94}   # mean 92.00, sample std 2.00 (in percent)
    for seed, acc in tests.items():
        run_id = create_run(store, load_spec(overrides=["name=pp", f"train.seed={seed}"]), status="finished")
        store.append_epoch(run_id, fake_records(1)[0], {"epoch": 1, "best_val": acc, "test_acc": acc, "best_epoch": 1})
        store.update(run_id, status="finished")   # as a run's end does: the row reaches the index
    # seed 2 was made before a spec key existed: its index row holds the id of the spec as it was then; the
    # group reads the id from the stored spec, as `mtm export` does
    store.update(run_id, config="made-before-a-key")
    other = create_run(store, load_spec(overrides=["name=pp-lr", "train.lr=0.01"]), status="finished")
    app = fixture_app(tmp_path / "home")

    async def flow():
        async with app.run_test(size=(200, 50)) as pilot:
            await settle(pilot, 1.0)
            screen = app.screen
            assert "seed" in screen.columns() and "lr" in screen.columns()   # the wide layout
            await pilot.press("o", "o")   # none -> sweep -> config
            assert screen.grouping == "config"
            table = screen.query_one(DataTable)
            await until(pilot, lambda: table.row_count == 2)
            group = next(str(k.value) for k in table.rows if str(k.value).startswith("group:"))
            assert table.get_cell(group, "id") == "×3" and table.get_cell(group, "test%") == "92.00±2.00"
            assert set(table.get_cell(group, "seed").split(",")) == {"0", "1", "2"}
            assert table.get_cell(other, "id") == other[:8]
            table.move_cursor(row=table.get_row_index(group))
            said = []
            app.notify = lambda message, **kw: said.append(message)
            for key in ("x", "d", "t", "n"):   # one run's actions on a group: a word, not a crash
                await pilot.press(key)
                await pilot.pause(0.1)
            assert isinstance(app.screen, RunsScreen) and len(said) == 4 and all("a group of 3 seeds" in m for m in said)
            await pilot.press("enter")           # a group opens its seeds side by side
            await pilot.pause(0.5)
            assert isinstance(app.screen, CompareScreen) and len(app.screen.run_ids) == 3
    asyncio.run(flow())


def test_groups_of_seeds_sort_by_the_mean_they_show(tmp_path, monkeypatch):
    """Issue 28, item 4: in ascending order a group with a mean of 89.50 came before one of 85.50, because its
    lowest seed (80.00) was placed first."""
    monkeypatch.chdir(tmp_path)
    store = Store(tmp_path / "home")
    for name, accs in (("wide", (0.80, 0.99)), ("narrow", (0.85, 0.86))):
        for seed, acc in enumerate(accs):
            run_id = create_run(store, load_spec(overrides=[f"name={name}", f"train.lr={0.001 if name == 'wide' else 0.002}",
                                                            f"train.seed={seed}"]), status="finished")
            store.append_epoch(run_id, fake_records(1)[0], {"epoch": 1, "best_val": acc, "test_acc": acc, "best_epoch": 1})
            store.update(run_id, status="finished")
    app = fixture_app(tmp_path / "home")

    async def flow():
        async with app.run_test(size=(200, 50)) as pilot:
            await settle(pilot, 1.0)
            screen = app.screen
            await pilot.press("o", "o")   # grouped by config
            table = screen.query_one(DataTable)
            await until(pilot, lambda: table.row_count == 2)
            means = lambda: [table.get_cell(k, "test%") for k in table.rows]   # noqa: E731  (in the table's order)
            screen.sort("test%")          # high to low first
            await pilot.pause(0.3)
            assert means() == ["89.50±13.44", "85.50±0.71"]
            screen.sort("test%")          # again: low to high
            await pilot.pause(0.3)
            assert means() == ["85.50±0.71", "89.50±13.44"]
    asyncio.run(flow())


def test_tags_and_notes_from_the_keyboard_are_stored_and_filterable(fixture_home):
    app = fixture_app(fixture_home)
    store = Store(fixture_home)

    async def flow():
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot, 1.0)
            run_id = cursor_id(app)
            await pilot.press("t")
            await pilot.pause(0.3)
            app.screen.query_one("#answer", Input).value = "baseline keep"
            await pilot.press("enter")
            await until(pilot, lambda: store.row(run_id).get("tags") == ["baseline", "keep"])
            await pilot.press("n")
            await pilot.pause(0.3)
            app.screen.query_one("#answer", Input).value = "the reference run"
            await pilot.press("enter")
            await until(pilot, lambda: store.row(run_id).get("note") == "the reference run")
            screen = app.screen
            await until(pilot, lambda: any(r.get("note") for r in screen.rows))
            screen.query_one("#filter", Input).value = "reference"
            await pilot.pause(0.2)
            assert [r["id"] for r in screen.visible()] == [run_id]
    asyncio.run(flow())


def test_every_action_is_in_the_command_palette(fixture_home):
    app = fixture_app(fixture_home)

    async def flow():
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot, 1.0)
            titles = [c.title for c in app.get_system_commands(app.screen)]
            for action in ("Compare (m)", "Sort by column (s)", "Tag (t)", "Note (n)", "Sweep view (w)",
                           "Group: none, sweep, config (o)", "Embedding (v)", "Quit (q)"):
                assert action in titles, action
            command = next(c for c in app.get_system_commands(app.screen) if c.title == "Group: none, sweep, config (o)")
            await command.callback()
            assert app.screen.grouping == "sweep"
            help_ = next(c for c in app.get_system_commands(app.screen) if c.title == "Help (?)")   # the app's own
            await help_.callback()
            await pilot.pause(0.3)
            assert type(app.screen).__name__ == "HelpScreen"
    asyncio.run(flow())


def test_an_empty_store_says_where_it_looked_and_what_to_do(tmp_path):
    app = fixture_app(tmp_path / "empty-home")

    async def flow():
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot, 1.0)
            text = str(app.screen.query_one("#empty").render())
            assert f"No runs in {app.store.home}" in text and "c to compose" in text and "--home DIR" in text
    asyncio.run(flow())


def test_the_epoch_in_flight_shows_on_the_runs_and_run_screens(fixture_home):
    store = Store(fixture_home)
    run_id = "aaaa1111"
    store.update(run_id, status="running", epoch=8, epochs=20, pid=None, host="elsewhere", heartbeat=time.time())
    store.write_progress(run_id, progress_of(BatchProgress(9, 10, 40, 0.5, 1000, 5.0, None), now=NOW))
    app = fixture_app(fixture_home)

    async def flow():
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot, 1.0)
            app.screen.query_one(DataTable).move_cursor(row=app.screen.query_one(DataTable).get_row_index(run_id))
            await pilot.pause(0.3)
            line = str(app.screen.query_one("#runs-progress").render())
            assert "aaaa1111 epoch 9/20: batch 10/40 · 200 img/s · ETA 15s" in line
            app.open_run(run_id)
            await settle(pilot, 1.0)
            assert "epoch 9: batch 10/40 · 200 img/s · ETA 15s" in str(app.screen.query_one("#run-header").render())
    asyncio.run(flow())


def test_run_charts_show_one_classifier_validation_first_and_zoom(fixture_home):
    Store(fixture_home).tag("cccc3333", ["baseline"])
    Store(fixture_home).update("cccc3333", note="[b]lr too high?[/b]")   # shown as typed, not as markup
    app = fixture_app(fixture_home)

    async def flow():
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot, 1.0)
            app.open_run("cccc3333")   # a pure head: its primary classifier is `pure`
            await settle(pilot, 1.0)
            screen = app.screen
            assert isinstance(screen, RunScreen)
            # the run's tags and note (issue 28, item 3: notes were never shown)
            assert "tags: baseline · note: [b]lr too high?[/b]" in str(screen.query_one("#run-header").render())
            chart = screen.query_one("#chart-0 MetricChart", MetricChart)
            assert list(chart.drawn) == ["pure val"]          # validation only, the primary classifier
            last = screen.records[-1]
            assert f"pure val {last['val_acc_pure']:.4f}" in str(chart.query_one(".legend").render())   # readout
            await pilot.press("t")
            assert list(chart.drawn) == ["pure val", "pure test"]
            await pilot.press("c")
            assert list(chart.drawn) == ["cos val", "cos test"] and "cos classifier" in chart.chart.title(screen.view)
            await pilot.press("z")
            assert all(xs == [1, 2, 3, 4, 5] for xs, _ in chart.drawn.values())   # 5 epochs: the last 10 is all
            await pilot.press("z")
            assert all(len(xs) == 5 for xs, _ in chart.drawn.values())
            await pilot.press("right", "right")                  # σ & ρ: no classifier in its series
            geometry = screen.query_one("#chart-2 MetricChart", MetricChart)
            assert set(geometry.drawn) == {"σ val", "ρ val", "σ test", "ρ test"}
            assert "classifier" not in geometry.chart.title(screen.view)
    asyncio.run(flow())


def test_compose_shows_the_preset_as_it_is_and_esc_leaves_an_untouched_form(fixture_home):
    # The Selects post their first option when they mount, after the preset has been loaded: the
    # loss's (euclidean) once reset push-and-pull's r to 0, so the form launched another loss and Esc asked.
    app = fixture_app(fixture_home)

    async def flow():
        async with app.run_test() as pilot:
            await settle(pilot, 1.0)
            await pilot.press("c")
            await until(pilot, lambda: isinstance(app.screen, ComposeScreen) and app.screen.spec is not None)
            await pilot.pause(0.5)
            quickstart = load_spec()
            assert app.screen.query_one("#f-loss--r", Input).value == str(quickstart.loss.r)
            assert app.screen.spec.loss == quickstart.loss
            await pilot.press("escape")
            await until(pilot, lambda: isinstance(app.screen, RunsScreen))
    asyncio.run(flow())


@pytest.mark.parametrize("size", [(80, 24), (200, 50)])
def test_compose_takes_keys_typed_while_it_loads_and_esc_asks(fixture_home, size):
    app = fixture_app(fixture_home)

    async def flow():
        async with app.run_test(size=size) as pilot:
            await settle(pilot, 1.0)
            await pilot.press("c", "m", "i", "n", "e")   # no pause: typed while Compose loads
            await until(pilot, lambda: isinstance(app.screen, ComposeScreen) and app.screen.spec is not None)
            await pilot.pause(0.5)
            assert app.screen.query_one("#f-name", Input).value == "mine"
            assert app.screen.spec.name == "mine"
            r = app.screen.query_one("#f-loss--r", Input)
            app.screen.query_one("#f-loss--name").value = "proximity"   # its own default r comes with it
            await pilot.pause(0.3)
            assert r.value == "10000.0" and app.screen.spec.loss.r == 1e4
            focused = []
            for _ in range(4):   # Tab goes field to field: never to an invisible stop
                await pilot.press("tab")
                focused.append(app.focused)
            assert all(w is not None and w.id and w.id.startswith(("f-", "preset")) for w in focused), focused
            while not isinstance(app.focused, Select):   # q on a dropdown quit the app, form lost (issue 28, item 2)
                await pilot.press("tab")
            await pilot.press("q")
            await pilot.pause(0.3)
            assert "Quit mtm? The changed form is not saved." in str(app.screen.query_one("#question").render())
            await pilot.press("n")
            await pilot.pause(0.2)
            assert isinstance(app.screen, ComposeScreen) and app.return_code is None
            await pilot.press("escape")   # the form changed: asks first
            await pilot.pause(0.3)
            assert "not saved" in str(app.screen.query_one("#question").render())
            await pilot.press("n")
            assert isinstance(app.screen, ComposeScreen)
            await pilot.press("escape", "y")
            await pilot.pause(0.3)
            assert isinstance(app.screen, RunsScreen)
    asyncio.run(flow())


def test_export_takes_the_marked_runs_shows_its_absolute_path_and_asks_before_overwriting(fixture_home, tmp_path):
    app = fixture_app(fixture_home)
    (tmp_path / "results.md").write_text("keep me until asked")

    async def flow():
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot, 1.0)
            await pilot.press("space")      # mark the first run (pp-digits, aaaa1111)
            await pilot.press("e")
            await settle(pilot, 1.0)
            screen = app.screen
            target = str(screen.query_one("#export-target").render())
            assert "the 1 marked runs" in target and str(tmp_path / "results.md") in target
            await until(pilot, lambda: "CNN-PP" in screen.query_one("#preview").source)
            assert "CNN-E" not in screen.query_one("#preview").source
            await pilot.press("ctrl+s")     # the file exists: a question, not a write
            await pilot.pause(0.3)
            assert "exists. Overwrite it?" in str(app.screen.query_one("#question").render())
            await pilot.press("n")
            await pilot.pause(0.3)
            assert (tmp_path / "results.md").read_text() == "keep me until asked"
            await pilot.press("ctrl+s", "y")
            await until(pilot, lambda: "CNN-PP" in (tmp_path / "results.md").read_text())
    asyncio.run(flow())


def test_log_scale_charts_survive_a_resize(fixture_home):
    """plotext's log scale took log10 of its data in place at each render: a resize crashed it."""
    app = fixture_app(fixture_home)

    async def flow():
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot, 1.0)
            app.open_run("aaaa1111")
            await settle(pilot, 1.0)
            for tab in range(1, 5):   # Loss, σ & ρ, ρ vs σ, Separation: two on a log scale
                await pilot.press("right")
                await settle(pilot, 0.3)
                for size in ((120, 40), (80, 24), (100, 30)):
                    await pilot.resize_terminal(*size)
                    await settle(pilot, 0.3)
            assert app.return_code is None and isinstance(app.screen, RunScreen)
            geometry = app.screen.query_one("#chart-2 MetricChart", MetricChart)
            assert geometry.drawn   # and its y axis is labelled with values, not their logarithms
    asyncio.run(flow())


def test_at_80_columns_a_long_name_gives_way_and_every_figure_shows(fixture_home):
    store = Store(fixture_home)
    store.update("aaaa1111", name="a-rather-long-experiment-name")
    app = fixture_app(fixture_home)

    async def flow():
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot, 1.0)
            table = app.screen.query_one(DataTable)
            name = table.get_cell("aaaa1111", "name")
            assert name.endswith("…") and "a-rather-long-experiment-name".startswith(name[:-1]) and len(name) >= 6
            assert table.get_cell("aaaa1111", "test%") == "97.36" and table.get_cell("aaaa1111", "age") == "1h"
            assert table.virtual_size.width <= table.size.width   # no horizontal scrolling: nothing cut off
    asyncio.run(flow())


def test_certainty_tab_shows_the_kept_measurement_or_how_to_make_it(fixture_home):
    """A run measured by `mtm eval --certainty` (its kept certainty.json, written here by the store) shows
    each score's AUROCs and one risk-coverage curve a score; a run never measured says which command to run;
    a corrupt file is said in the tab."""
    from mtm_tui.widgets.certainty import CertaintyView

    store = Store(fixture_home)
    curve = {"coverage": [0.5, 1.0], "risk": [0.0, 0.1]}
    scores = {name: {"misclassification_auroc": auc, "aurc": 0.02, "accuracy_at_80": 0.99, "accuracy_at_90": 0.98,
                     "accuracy_at_95": 0.95, "ood_auroc": auc - 0.1, "ood_fpr95": 0.3}
              for name, auc in (("distance G", 0.91), ("gaussian", 0.87))}
    store.write_measurement("aaaa1111", "certainty", {"checkpoint": "best", "epoch": 8, "classifier": "cos", "accuracy": 0.9,
                                       "ood": "mnist", "temperature": 0.05, "ece": 0.012, "scores": scores,
                                       "risk_coverage": {name: curve for name in scores}, "histograms": {}})
    (store.run_dir("bbbb2222") / "certainty.json").write_text("{not json")
    app = fixture_app(fixture_home)

    async def flow():
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot, 1.0)
            for run_id, expected in (("aaaa1111", "ECE 0.0120"), ("cccc3333", "Not measured yet"),
                                     ("bbbb2222", "is corrupt")):
                app.open_run(run_id)
                await settle(pilot, 1.0)
                app.screen.query_one("#charts").active = "certainty"
                await settle(pilot, 0.5)
                view = app.screen.query_one(CertaintyView)
                assert expected in str(view.query_one(".about").render())
                table = view.query_one(DataTable)
                if run_id == "aaaa1111":
                    assert table.row_count == 2 and table.get_row_at(0)[:2] == ["distance G", "0.9100"]
                    assert "OOD AUROC" in [str(c.label) for c in table.columns.values()]
                else:
                    assert not table.display
                await pilot.press("escape")
    asyncio.run(flow())


def test_the_small_words_a_queued_or_evaluating_run_gets():
    """Issue 28, item 6: the stop dialog of a queued run spoke of its "last whole epoch", and the progress line
    froze at "ETA 0s" while the epoch's evaluation ran."""
    queued = {"id": "abcd1234" * 4, "name": "pp", "status": "queued"}
    assert stop_question(queued) == "Take run abcd1234 (pp) out of the queue? It has not started; R resumes it later."
    assert "last whole epoch" in stop_question({**queued, "status": "running"})
    running = {**queued, "status": "running", "epoch": 3,
               "progress": {"epoch": 4, "batch": 40, "batches": 40, "images_per_s": 900.0, "eta_s": 0.0, "at": NOW}}
    assert progress(running, NOW) == "batch 40/40 · evaluating"
    running["progress"]["batch"] = 39
    assert progress(running, NOW).startswith("batch 39/40 · 900 img/s · ETA")


def test_the_help_is_made_from_every_screen_s_bindings(fixture_home):
    """A key added to a screen shows in the help with what it does; a new screen must join the help's list."""
    import importlib
    import pkgutil

    from textual.binding import Binding
    from textual.screen import ModalScreen, Screen
    from textual.widgets import Markdown

    import mtm_tui.screens
    from mtm_tui.screens.help import SCREENS

    listed = {cls for _, _, cls in SCREENS}
    for module in pkgutil.iter_modules(mtm_tui.screens.__path__):
        for name, value in vars(importlib.import_module(f"mtm_tui.screens.{module.name}")).items():
            if (isinstance(value, type) and issubclass(value, Screen) and not issubclass(value, ModalScreen)
                    and value.__module__ == f"mtm_tui.screens.{module.name}" and "BINDINGS" in vars(value)):
                assert name in listed, f"{name} is missing from the help's SCREENS"
    app = fixture_app(fixture_home)

    async def flow():
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot, 0.5)
            await pilot.press("question_mark")
            await pilot.pause(0.5)
            text = app.screen.query_one(Markdown).source
            for _, module, cls in SCREENS:
                screen = getattr(importlib.import_module(f"mtm_tui.screens.{module}"), cls)
                for binding in Binding.make_bindings(screen.BINDINGS):
                    if binding.description:
                        said = binding.tooltip or binding.description[:1].lower() + binding.description[1:]
                        assert f"`{app.get_key_display(binding)}`" in text and said in text, (cls, binding)
    asyncio.run(flow())
