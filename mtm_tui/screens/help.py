"""Help: what each screen does and its keys."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# mtm-tui

Train and study the Moving Targets Model. Runs train in **background processes**: quitting the TUI
leaves them going, and they come back when you reopen it. Runs started elsewhere (the `mtm` command,
another SSH session, a Ray sweep) appear within a second or two.

| screen | keys |
|---|---|
| **Runs** | `enter` open · `space` mark · `m` compare marked · `v` embedding · `x` stop · `R` resume · `d` delete · `c` compose · `e` export · `s` sort (or click a header) · `g` group by sweep · `/` filter |
| **Run** | `←` `→` charts · `v` embedding · `x` stop · `R` resume · `esc` back |
| **Compose** | pick a preset, edit the fields (checked as you type) · `ctrl+s` save TOML · `ctrl+l` launch run · `ctrl+r` launch sweep · `esc` back |
| **Compare** | `1`-`7` metric · `esc` back |
| **Embedding** | `b` best / last epoch · `esc` back |
| **Export** | choose options · `ctrl+r` preview · `ctrl+s` write the file · `esc` back |
| anywhere | `?` this help · `ctrl+p` command palette · `ctrl+t` light/dark theme · `q` quit |

Accuracies are on the validation split (used to choose the epoch) and the test split (reported).
σ is the cluster size, ρ the centre distance (the paper's Section III-B).
"""


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape,question_mark,q", "app.pop_screen", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Markdown(HELP)
