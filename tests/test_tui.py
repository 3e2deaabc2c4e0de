"""The TUI: the main flow with Textual's Pilot (real background runs), snapshots of every screen
from a fixture store, and the real `mtm-tui` in a terminal (tmux)."""

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import NOW, fixture_app, settle, until
from textual.widgets import Input

from mtm_engine.config import load_spec
from mtm_engine.runner import create_run
from mtm_engine.store import Store
from mtm_tui.app import MtmApp
from mtm_tui.screens.run import RunScreen
from mtm_tui.screens.runs import RunsScreen
from mtm_tui.services import jobs


def test_compose_launch_watch_stop_resume(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = MtmApp(tmp_path / "home")
    store = app.store

    async def flow():
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("c")
            await until(pilot, lambda: app.screen.query("#f-train--epochs"))
            app.screen.query_one("#f-train--epochs", Input).value = "200"   # stopped long before the end
            for key, value in (("model--width", "4"), ("model--dim", "16"), ("data--size", "16")):   # conftest.SMALL
                app.screen.query_one(f"#f-{key}", Input).value = value
            await pilot.pause()
            assert "valid" in str(app.screen.query_one("#verdict").render())
            await pilot.press("ctrl+l")
            # the run appears on the Runs screen
            await until(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.rows)
            run_id = app.screen.rows[0]["id"]
            await pilot.press("enter")
            assert isinstance(app.screen, RunScreen)
            # its charts fill in as epochs land
            await until(pilot, lambda: len(app.screen.records) >= 1)
            await until(pilot, lambda: len(app.screen.records) >= 2)
            # stop, with confirmation
            await pilot.press("x")
            await pilot.press("y")
            await until(pilot, lambda: store.row(run_id)["status"] == "interrupted")
            stopped_at = store.row(run_id)["epoch"]
            # resume, with confirmation; it trains on
            await pilot.press("R")
            await pilot.press("y")
            await until(pilot, lambda: store.row(run_id)["epoch"] > stopped_at)
            jobs.stop(store, run_id)
            await until(pilot, lambda: store.row(run_id)["status"] == "interrupted")
            epochs = [r["epoch"] for r in store.records(run_id)]
            assert epochs == list(range(1, len(epochs) + 1))

    asyncio.run(flow())


# --- snapshots of every screen -------------------------------------------------------------------

def test_snapshot_runs(snap_compare, fixture_home):
    assert snap_compare(fixture_app(fixture_home), terminal_size=(100, 30), run_before=settle)


def test_snapshot_run(snap_compare, fixture_home):
    async def open_first(pilot):
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
    assert snap_compare(fixture_app(fixture_home), terminal_size=(100, 30), run_before=open_first)


def test_snapshot_run_geometry_tab(snap_compare, fixture_home):
    async def geometry(pilot):
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("right", "right")
        await settle(pilot, 0.5)
    assert snap_compare(fixture_app(fixture_home), terminal_size=(100, 30), run_before=geometry)


def test_snapshot_compose(snap_compare, fixture_home):
    async def compose(pilot):
        await settle(pilot)
        await pilot.press("c")
        await until(pilot, lambda: getattr(pilot.app.screen, "spec", None) is not None)   # loaded and checked
        pilot.app.screen.query_one("#f-name", Input).cursor_blink = False   # focused: a blinking cursor is flaky
        await settle(pilot)
    assert snap_compare(fixture_app(fixture_home), terminal_size=(80, 24), run_before=compose)


def test_snapshot_compare(snap_compare, fixture_home):
    async def compare(pilot):
        await settle(pilot)
        await pilot.press("space", "down", "space", "m")
        await settle(pilot)
    assert snap_compare(fixture_app(fixture_home), terminal_size=(100, 30), run_before=compare)


def test_snapshot_embedding(snap_compare, fixture_home):
    async def embedding(pilot):
        await settle(pilot)
        await pilot.press("v")
        await settle(pilot)
    assert snap_compare(fixture_app(fixture_home), terminal_size=(100, 30), run_before=embedding)


def test_snapshot_export(snap_compare, fixture_home):
    async def export(pilot):
        await settle(pilot)
        await pilot.press("e")
        await settle(pilot, 2.5)
        pilot.app.screen.query_one("#path", Input).value = "/srv/results/paper.md"   # absolute: the same anywhere
        await settle(pilot, 0.5)
    assert snap_compare(fixture_app(fixture_home), terminal_size=(100, 30), run_before=export)


def test_snapshot_help(snap_compare, fixture_home):
    async def help_(pilot):
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot, 0.5)
    assert snap_compare(fixture_app(fixture_home), terminal_size=(100, 30), run_before=help_)


# --- the real program in a terminal ----------------------------------------------------------------

class Terminal:
    """The real `mtm-tui` in a tmux session of its own: keys in, the screen's text out."""

    def __init__(self, size: tuple[int, int], *args: str, cwd: Path | None = None, env: dict | None = None):
        self.session = f"mtm-test-{time.time_ns()}"
        subprocess.run(["tmux", "new-session", "-d", "-s", self.session, "-x", str(size[0]), "-y", str(size[1]),
                        *(["-c", str(cwd)] if cwd else []), "env", *(f"{k}={v}" for k, v in (env or {}).items()),
                        sys.executable, "-m", "mtm_tui.app", *args], check=True)

    def keys(self, *sent: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.session, *sent], check=True)

    def screen(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", self.session], capture_output=True,
                              text=True).stdout

    def wait_for(self, *texts: str, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if all(text in self.screen() for text in texts):
                return
            time.sleep(0.3)
        raise AssertionError(f"{texts!r} never appeared together:\n{self.screen()}")

    def closed(self, timeout: float = 15) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if subprocess.run(["tmux", "has-session", "-t", self.session], capture_output=True).returncode:
                return True
            time.sleep(0.2)
        return False

    def kill(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.session], capture_output=True)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (apt-get install tmux)")
def test_mtm_tui_in_a_real_terminal(fixture_home, tmp_path):
    terminal = Terminal((100, 30), "--home", str(fixture_home))
    try:
        terminal.wait_for("3 of 3 runs", "aaaa1111", "finished", timeout=30)
        terminal.keys("Enter")
        terminal.wait_for("Spec & log")
        terminal.keys("q")
        assert terminal.closed()
    finally:
        terminal.kill()


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (apt-get install tmux)")
def test_launch_watch_an_epoch_stop_and_quit_in_a_real_terminal(tmp_path):
    """The whole loop by keys in a real terminal at 80x24: compose, launch (the queue's pool trains it
    in the background), watch its first epochs arrive on the Run screen, stop it, quit."""
    home = tmp_path / "home"
    terminal = Terminal((80, 24), cwd=tmp_path, env={"MTM_HOME": home})
    try:
        terminal.wait_for("No runs in")
        terminal.keys("c")
        terminal.wait_for("valid")
        terminal.keys("C-l")                               # launch: queued, then trained by the pool
        terminal.wait_for("1 of 1 runs")
        terminal.keys("Enter")
        terminal.wait_for("Spec & log")
        terminal.wait_for("cos val", timeout=120)          # the first epoch's readout under the accuracy chart
        terminal.keys("x")
        terminal.wait_for("Stop run")
        terminal.keys("y")
        run_id = Store(home).rows()[0]["id"]
        deadline = time.time() + 120
        while Store(home).row(run_id)["status"] != "interrupted" and time.time() < deadline:
            time.sleep(0.5)
        assert Store(home).row(run_id)["status"] == "interrupted"
        terminal.keys("q")
        assert terminal.closed()
    finally:
        terminal.kill()
        for row in Store(home).rows():   # never leave a training process behind
            if row["status"] in ("queued", "running"):
                jobs.stop(Store(home), row["id"])


# --- regressions: the app never crashes in normal use ------------------------------------------------

def test_a_run_with_no_epochs_shows_every_chart_without_crashing(tmp_path):
    """Log-scale charts with no data crashed plotext (a queued or just-launched run's σ & ρ tab)."""
    store = Store(tmp_path / "home")
    run_id = create_run(store, load_spec(), status="queued")
    app = fixture_app(tmp_path / "home")

    async def flow():
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot, 0.5)
            app.open_run(run_id)
            await settle(pilot, 0.5)
            for _ in range(7):   # every tab, the log-scale ones included
                await pilot.press("right")
                await settle(pilot, 0.3)
            assert isinstance(app.screen, RunScreen) and app.return_code is None
    asyncio.run(flow())


def test_failed_writes_are_notifications_not_crashes(fixture_home, tmp_path):
    (tmp_path / "experiments").write_text("a file where compose would make a folder")
    app = fixture_app(fixture_home)
    messages = []

    async def flow():
        async with app.run_test(size=(100, 30)) as pilot:
            app.notify = lambda message, **kw: messages.append(message)
            await settle(pilot, 0.5)
            await pilot.press("e")
            await settle(pilot, 1.0)
            app.screen.query_one("#path", Input).value = "/nonexistent/dir/out.md"
            await pilot.press("ctrl+s")
            await until(pilot, lambda: any("cannot write /nonexistent/dir/out.md" in m for m in messages))
            await pilot.press("escape")
            await pilot.press("c")
            await until(pilot, lambda: app.screen.query("#f-train--epochs"))
            await pilot.press("ctrl+s")
            await until(pilot, lambda: any("cannot write" in m and "experiments" in m for m in messages[1:]))
            assert app.return_code is None
    asyncio.run(flow())


def test_no_screen_binds_a_key_that_text_inputs_use():
    """ctrl+k launched a sweep but every Input took it as "delete to the end of the line"."""
    from mtm_tui.screens.compose import ComposeScreen
    from mtm_tui.screens.export import ExportScreen

    input_keys = {key for binding in Input.BINDINGS for key in binding.key.split(",")}
    for screen in (ComposeScreen, ExportScreen):
        keys = {key for binding in screen.BINDINGS for key in binding.key.split(",")}
        assert not keys & input_keys, (screen.__name__, keys & input_keys)


def test_a_crash_exits_non_zero_and_keeps_its_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    home = tmp_path / "home"
    out = subprocess.run([sys.executable, "-c", (
        "import sys; from mtm_tui.app import MtmApp, main; "
        "MtmApp.on_mount = lambda self: 1 / 0; sys.argv = ['mtm-tui', '--home', sys.argv[1]]; main()"), str(home)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": str(tmp_path)})
    log = tmp_path / ".cache" / "mtm" / "tui-crash.log"
    assert out.returncode == 1
    assert f"mtm-tui stopped on an error; its traceback is in {log}" in out.stderr
    assert "ZeroDivisionError" in log.read_text()


def test_the_filter_matches_what_the_table_shows_word_by_word(fixture_home):
    app = fixture_app(fixture_home)

    async def flow():
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot, 1.0)
            screen = app.screen
            for typed, expected in (("", 3), ("PP", 1), ("digits cross_entropy", 1), ("CNN pure", 1), ("push_pull", 1),
                                    ("euclid E", 1), ("finished digits", 3), ("nothing-like-this", 0)):
                screen.query_one("#filter", Input).value = typed
                await pilot.pause(0.2)
                assert len(screen.visible()) == expected, typed
            await pilot.press("slash", "P", "P")   # Esc clears the filter, as the README says (issue 28, item 6)
            await pilot.pause(0.2)
            assert len(screen.visible()) == 1
            await pilot.press("escape")
            await pilot.pause(0.2)
            assert screen.query_one("#filter", Input).value == "" and len(screen.visible()) == 3
    asyncio.run(flow())


def test_ages_move_on_and_an_updated_status_is_not_cut(fixture_home):
    now = [NOW]
    app = MtmApp(Path(os.path.relpath(fixture_home)), clock=lambda: now[0], host="fixture")
    store = Store(fixture_home)

    async def flow():
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot, 1.0)
            table = app.screen.query_one("#runs")
            assert table.get_cell("aaaa1111", "age") == "1h"
            now[0] += 86400   # a day later, with nothing new in the store
            await pilot.pause(6.0)
            assert table.get_cell("aaaa1111", "age") == "1d"
            store.update("aaaa1111", status="interrupted")
            await until(pilot, lambda: "interrupted" in table.get_cell("aaaa1111", "status"))
            column = next(c for c in table.columns.values() if str(c.key.value) == "status")
            assert column.content_width >= len("interrupted")
    asyncio.run(flow())


def test_stop_of_a_finished_run_says_so_and_dialogs_name_the_run(fixture_home):
    app = fixture_app(fixture_home)
    messages = []

    async def flow():
        async with app.run_test(size=(100, 30)) as pilot:
            app.notify = lambda message, **kw: messages.append(message)
            await settle(pilot, 1.0)
            await pilot.press("x")   # the cursor is on a finished run: no question, an answer
            await pilot.pause(0.3)
            assert isinstance(app.screen, RunsScreen) and messages[-1].endswith("is finished: nothing to stop")
            await pilot.press("d")
            await pilot.pause(0.3)
            question = str(app.screen.query_one("#question").render())
            assert "aaaa1111 (pp-digits)" in question
            await pilot.press("n")
    asyncio.run(flow())


# --- the layouts at the smallest and a large terminal -------------------------------------------------

@pytest.mark.parametrize("size", [(80, 24), (200, 50)], ids=["80x24", "200x50"])
def test_snapshot_runs_at(snap_compare, fixture_home, size):
    """80x24: test% and the footer's keys are not cut; 200x50 adds seed, lr, time, progress, tags."""
    assert snap_compare(fixture_app(fixture_home), terminal_size=size, run_before=settle)


@pytest.mark.parametrize("size", [(80, 24), (200, 50)], ids=["80x24", "200x50"])
def test_snapshot_run_at(snap_compare, fixture_home, size):
    async def open_first(pilot):
        await settle(pilot)
        await pilot.press("enter", "t")   # validation and test
        await settle(pilot)
    assert snap_compare(fixture_app(fixture_home), terminal_size=size, run_before=open_first)
