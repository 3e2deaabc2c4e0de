"""Help: what each screen does and its keys, made from the screens' own bindings (and their docstrings), so
that it never disagrees with what the keys do."""

from __future__ import annotations

import importlib
import re

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

INTRO = """\
# mtm-tui

Train and study the Moving Targets Model. Runs train in **background processes**: quitting the TUI
leaves them going, and they come back when you reopen it. Runs started elsewhere (the `mtm` command,
another SSH session, a Ray sweep) appear within a second or two.
"""
OUTRO = """
Accuracies are on the validation split (used to choose the epoch) and the test split (reported).
σ is the cluster size, ρ the centre distance (the paper's Section III-B).
"""
# (the row's name, the screen's module and class), in the order one meets them
SCREENS = (("Runs", "runs", "RunsScreen"), ("Run", "run", "RunScreen"), ("Compose", "compose", "ComposeScreen"),
           ("Compare", "compare", "CompareScreen"), ("Log", "log", "LogScreen"), ("Queue", "queue", "QueueScreen"),
           ("Sweep", "sweep", "SweepScreen"), ("Embedding", "embedding", "EmbeddingScreen"),
           ("Export", "export", "ExportScreen"))


def keys_of(bindings: list, key_display) -> str:
    """One screen's keys: "`k` what it does" for each action, its keys together ("`g` `home` first row")."""
    actions: dict[str, tuple[list[str], str]] = {}
    for binding in Binding.make_bindings(bindings):
        if binding.description:
            said = binding.tooltip or binding.description[:1].lower() + binding.description[1:]   # "save TOML"
            keys, said = actions.setdefault(binding.action, ([], said))
            keys.append(f"`{key_display(binding)}`")
    return " · ".join(f"{' '.join(keys)} {said}" for keys, said in actions.values())


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape,question_mark,q", "app.pop_screen", "Close")]

    def compose(self) -> ComposeResult:
        rows = []
        for name, module, cls in SCREENS:
            screen = getattr(importlib.import_module(f"mtm_tui.screens.{module}"), cls)
            what = (importlib.import_module(f"mtm_tui.screens.{module}").__doc__ or "").split(":", 1)[-1]
            what = " ".join(re.split(r"\.(?:\s|$)", what.strip(), maxsplit=1)[0].split())   # the first sentence
            rows.append(f"| **{name}** | {what} · {keys_of(screen.BINDINGS, self.app.get_key_display)} |")
        rows.append(f"| anywhere | {keys_of(type(self.app).BINDINGS, self.app.get_key_display)} · `ctrl+p` command "
                    f"palette |")
        with VerticalScroll(id="help"):
            yield Markdown(INTRO + "\n| screen | keys |\n|---|---|\n" + "\n".join(rows) + "\n" + OUTRO)
