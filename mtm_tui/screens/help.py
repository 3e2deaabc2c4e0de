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
| **Runs** | `enter` open (a group: its seeds side by side) · `j` `k` `g` `G` `home` `end` move · `space` mark and move down · `m` compare marked · `v` embedding · `w` the run's sweep · `x` stop · `R` resume · `d` delete · `t` tags · `n` note · `l` log (follows it) · `p` queue and devices · `c` compose · `f` compose from this run (any status: change it, launch it) · `e` export (marked, else filtered, else all) · `s` sort by a column (or click its header; again reverses) · `o` group: none, by sweep, seeds by config (mean ± std) · `/` filter, `esc` leaves it |
| **Run** | `←` `→` charts · `c` the accuracy chart's classifier · `t` test split on/off (validation is always drawn) · `z` last 10 / 5 / all epochs · `v` embedding · `l` log · `f` compose from this run · `x` stop · `R` resume · `esc` back |
| **Compose** | pick a preset, edit the fields (checked as you type; the focused key's meaning below the form) · `ctrl+g` go to a key (`lr` is enough) · `ctrl+s` save TOML · `ctrl+l` launch run · `ctrl+r` launch sweep · `esc` back (asks if the form changed) |
| **Compare** | seeds of a configuration as one band, mean ± std · `s` seeds apart / as bands · `1`-`7` metric · `z` zoom · `esc` back |
| **Log** | the run's log, following it as it grows · `f` follow on/off · `G` `end` last line · `esc` back |
| **Queue** | the pool, each slot with its run, GPU memory and use, the queued runs in order · `s` set the slots (`--slots 2`, `--gpus auto --per-gpu 2`) · `enter` open · `l` log · `esc` back |
| **Sweep** | trials best first · `[` `]` the parameter plotted against validation accuracy · `enter` open a trial · `esc` back |
| **Embedding** | `p` projection (class centres, LDA, PCA) · `b` best / last epoch · `esc` back |
| **Export** | choose options · `ctrl+r` preview · `ctrl+s` write the file (asks before overwriting) · `esc` back |
| anywhere | `?` this help · `ctrl+p` command palette · `ctrl+t` light/dark theme · `q` quit |

Accuracies are on the validation split (used to choose the epoch) and the test split (reported).
σ is the cluster size, ρ the centre distance (the paper's Section III-B).
"""


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape,question_mark,q", "app.pop_screen", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Markdown(HELP)
