"""`mtm-tui`: the Textual app. It routes between screens and holds the store; the screens do
the work. It never imports torch or ray: training runs in separate processes."""

from __future__ import annotations

import contextlib
import socket
import sys
import time
import traceback
from functools import partial
from pathlib import Path
from typing import Callable, Iterable

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from mtm_engine.atomic import atomic_write
from mtm_engine.errors import MtmError
from mtm_engine.store import Store
from mtm_tui.screens.help import HelpScreen
from mtm_tui.screens.runs import RunsScreen

# The other screens are imported when first opened: start-up loads only what the Runs screen
# needs (about 0.3 s less on these machines; bench/tui.py measures it).


class MtmApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "mtm"
    SUB_TITLE = "Moving Targets Model workbench"
    BINDINGS = [
        Binding("question_mark", "help", "Help"),
        Binding("ctrl+t", "toggle_theme", "Theme", show=False),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, home: str | Path = "mtm-home", clock: Callable[[], float] = time.time,
                 host: str | None = None):
        super().__init__()
        self.store = Store(home)
        self.clock = clock   # injectable, as the host is, so that snapshot tests render the same anywhere
        self.host = host or socket.gethostname()

    def on_mount(self) -> None:
        self.sub_title = f"{self.store.home} on {self.host}"   # which store, on which machine
        self.push_screen(RunsScreen())

    @property
    def crash_log(self) -> Path:
        return Path.home() / ".cache" / "mtm" / "tui-crash.log"

    def _handle_exception(self, error: Exception) -> None:
        """A crash ends the app with exit code 1 (Textual's own), and its first traceback also goes to a
        log file that `run` names, so that it outlives the terminal's scrollback."""
        if self._exception is None:   # the first error; one raised while closing keeps the first's log
            with contextlib.suppress(OSError):
                self.crash_log.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(self.crash_log, time.strftime("%Y-%m-%d %H:%M:%S ") + "".join(
                    traceback.format_exception(type(error), error, error.__traceback__)))
        super()._handle_exception(error)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """The command palette (ctrl+p) lists every action of the screen it was opened on, with its key,
        besides Textual's own: nothing is reachable only by a key one has to know."""
        yield from super().get_system_commands(screen)
        seen = set()
        where = f"on the {type(screen).__name__.removesuffix('Screen')} screen"
        for node, bindings, said in ((screen, type(screen).BINDINGS, where), (self, self.BINDINGS, "on every screen")):
            for binding in Binding.make_bindings(bindings):
                if binding.description and binding.action not in seen:
                    seen.add(binding.action)
                    key = self.get_key_display(binding)
                    yield SystemCommand(f"{binding.description} ({key})", f"key {key}, {said}",
                                        partial(node.run_action, binding.action))

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_toggle_theme(self) -> None:
        self.theme = "textual-light" if self.theme == "textual-dark" else "textual-dark"

    def open_run(self, run_id: str) -> None:
        from mtm_tui.screens.run import RunScreen

        self.push_screen(RunScreen(run_id))

    def open_log(self, run_id: str) -> None:
        from mtm_tui.screens.log import LogScreen

        self.push_screen(LogScreen(run_id))

    def open_queue(self) -> None:
        from mtm_tui.screens.queue import QueueScreen

        self.push_screen(QueueScreen())

    def open_compare(self, run_ids: list[str]) -> None:
        from mtm_tui.screens.compare import CompareScreen

        self.push_screen(CompareScreen(run_ids))

    def open_embedding(self, run_id: str) -> None:
        from mtm_tui.screens.embedding import EmbeddingScreen

        self.push_screen(EmbeddingScreen(run_id))

    def open_compose(self, from_run: str | None = None) -> None:
        """Compose from a preset, or from a run's stored spec (any status: clone and relaunch)."""
        from mtm_tui.screens.compose import ComposeScreen

        if from_run is None:
            self.push_screen(ComposeScreen())
            return
        try:
            stored = self.store.meta(from_run)["spec"]
        except MtmError as exc:
            self.notify(str(exc), severity="error", timeout=8)
            return
        self.push_screen(ComposeScreen((from_run, stored)))

    def open_export(self, run_ids: list[str] | None = None, which: str = "every run in the store") -> None:
        from mtm_tui.screens.export import ExportScreen

        self.push_screen(ExportScreen(run_ids, which))

    def open_sweep(self, sweep_id: str) -> None:
        from mtm_tui.screens.sweep import SweepScreen

        self.push_screen(SweepScreen(sweep_id))


def main() -> None:
    """Entry point: `mtm-tui [--home DIR]` (or MTM_HOME). Typer parses it as `mtm` does (--home=DIR too)."""
    import typer

    cli = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)

    @cli.command()
    def tui(home: Path = typer.Option(Path("mtm-home"), "--home", envvar="MTM_HOME", show_envvar=True,
                                      help="Folder of the store, checkpoints and logs.")) -> None:
        """The terminal workbench of the Moving Targets Model."""
        raise typer.Exit(run(home))

    cli()


def run(home: Path) -> int:
    """Run the app on a store. After a crash (Textual prints its traceback), one line names the file that
    keeps it, and the exit code is 1."""
    app = MtmApp(home.expanduser().resolve())
    app.run()
    if app.return_code:
        print(f"mtm-tui stopped on an error; its traceback is in {app.crash_log}", file=sys.stderr)
    return app.return_code or 0


if __name__ == "__main__":
    main()
