"""The Sweep screen: a sweep's trials as a table of their drawn parameters and accuracies (best
first), a scatter of one parameter against the validation accuracy, and which parameter matters
most (mtm_engine.importance). Parameters are ordered by importance everywhere on the screen."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import DataTable, Footer, Header, Static
from textual_plotext import PlotextPlot

from mtm_engine.config import comparable_spec
from mtm_engine.importance import Importance, importance, is_numeric
from mtm_engine.records import Status, acc_key
from mtm_engine.results import select_epoch
from mtm_engine.store import StoreError
from mtm_tui.screens.base import PollingScreen
from mtm_tui.services.rows import compact, pct, short_names, status
from mtm_tui.widgets.charts import log_ticks
from mtm_tui.widgets.palette import colour, marker

BAR = 8                            # cells of the importance bar at a score of 1
EIGHTHS = " ▏▎▍▌▋▊▉"
STATUS_ORDER = (Status.RUNNING, Status.QUEUED, Status.FINISHED, Status.FAILED, Status.DIVERGED, Status.INTERRUPTED)


@dataclass(frozen=True)
class Trial:
    run_id: str
    status: str
    params: dict[str, Any]         # the drawn values (the run's trial_config), "train.lr" -> 3e-4
    epoch: int                     # epochs done ...
    epochs: int                    # ... of the most the sweep allows (ASHA may stop it sooner)
    val: float | None              # best validation accuracy of the sweep's metric
    test: float | None             # test accuracy at that epoch
    on_test: bool = False          # the sweep maximised test accuracy (eval.selection = max-test): no validation

    @property
    def score(self) -> float | None:
        """What the sweep maximised: the validation accuracy, or the test accuracy under the authors' protocol."""
        return self.test if self.on_test else self.val

    @property
    def scored_on(self) -> str:
        return "test" if self.on_test else "val"


@dataclass(frozen=True)
class SweepData:
    sweep_id: str
    name: str = ""
    metric: str = ""               # the classifier whose validation accuracy the sweep maximised
    planned: int | None = None     # tune.num_samples
    trials: list[Trial] = field(default_factory=list)        # best validation accuracy first
    ranking: list[Importance] = field(default_factory=list)  # most important parameter first
    searched_log: frozenset[str] = frozenset()               # parameters the search drew log-uniformly


def sort_trials(trials: list[Trial]) -> list[Trial]:
    """Best validation accuracy first; trials without one (not scored yet, failed) last."""
    return sorted(trials, key=lambda t: (t.score is None, -(t.score or 0.0), t.run_id))


def log_axis(values: list[Any], searched_log: bool = False) -> bool:
    """Draw on a log axis: numbers, all above 0, that were searched on a log scale or span two decades."""
    positive = bool(values) and all(is_numeric(v) and v > 0 for v in values)
    return positive and (searched_log or max(values) / min(values) >= 100)


def _padded(low: float, high: float, share: float = 0.06, least: float = 0.5) -> tuple[float, float]:
    """Limits a little wider than the data, so that no point sits on the frame."""
    pad = (high - low) * share if high > low else least
    return low - pad, high + pad


class ParamScatter(PlotextPlot):
    """One parameter's drawn values against the trials' validation accuracy (in %); the selected
    trial (the table's cursor) is the orange diamond. It owns its data: the screen hands it the
    trials with `update`, and `caption` is the title it drew."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.caption = ""

    def update(self, param: str | None, imp: Importance | None, trials: list[Trial], selected: str | None,
               searched_log: bool = False) -> None:
        plt = self.plt
        plt.clear_figure()   # scale, ticks and limits of the previous parameter go too
        scored = [t for t in trials if t.score is not None and t.params.get(param) is not None]
        split = trials[0].scored_on if trials else "val"
        if param is None:
            self.caption = "no drawn parameters recorded"
        elif not scored:
            self.caption = f"{split}% vs {param}: no scored trial yet"
        else:
            values = [t.params[param] for t in scored]
            how = f" · {imp.label} {imp.score:.2f}" if imp is not None else ""
            self.caption = f"{split}% vs {param}{how}"
            if all(is_numeric(v) for v in values):
                xs = [float(v) for v in values]
                if log_axis(xs, searched_log):
                    # log10 drawn on a linear axis, ticks labelled with the values: plotext's own log scale
                    # transforms its data in place at every build, so a second render (a resize) crashed
                    xs = [math.log10(x) for x in xs]
                    plt.xticks(*log_ticks(min(xs), max(xs), most=3))   # a narrow chart: labels that never overlap
                    plt.xlabel(f"{param} (log)")
                else:
                    plt.xlabel(param)
                plt.xlim(*_padded(min(xs), max(xs)))
            else:   # categories at positions 1..k, labelled with their values
                labels = sorted({compact(v) for v in values})
                xs = [labels.index(compact(v)) + 1.0 for v in values]
                plt.xticks(list(range(1, len(labels) + 1)), labels)
                plt.xlim(0.5, len(labels) + 0.5)
                plt.xlabel(param)
            ys = [100 * t.score for t in scored]
            plt.ylim(*_padded(min(ys), max(ys)))
            others = [(x, y) for x, y, t in zip(xs, ys, scored) if t.run_id != selected]
            mine = [(x, y) for x, y, t in zip(xs, ys, scored) if t.run_id == selected]
            if others:
                plt.scatter([x for x, _ in others], [y for _, y in others], marker=marker(0), color=colour(0))
            if mine:   # drawn last, so that it stays on top
                plt.scatter([x for x, _ in mine], [y for _, y in mine], marker=marker(3), color=colour(1))
            plt.ylabel(f"{split} %")
        plt.title(self.caption)
        self.refresh()


def importance_text(ranking: list[Importance], names: dict[str, str], current: str | None) -> str:
    """The panel: each parameter with a bar, its score and method, most important first."""
    if not ranking:
        return "[b]importance[/b]\nno drawn parameters recorded"
    scored = max(imp.n for imp in ranking)
    lines = [f"[b]importance[/b] on {scored} scored trial{'s' if scored != 1 else ''}"]
    width = max(len(names[imp.param]) for imp in ranking)
    for imp in ranking:
        cells = imp.score * BAR
        bar = "█" * int(cells) + (EIGHTHS[int((cells % 1) * 8)] if cells < BAR else "")
        if imp.method == "spearman":
            hint = "" if not imp.rho else ("↑" if imp.rho > 0 else "↓")
        else:
            hint = compact(imp.best) if imp.best is not None and imp.score > 0 else ""
        pointer = "▶" if imp.param == current else " "
        line = f"{pointer} {escape(names[imp.param]):<{width}} {bar:<{BAR}} {imp.score:.2f} {imp.label:<3} " \
               f"{escape(hint)}"
        lines.append(f"[b]{line}[/b]" if imp.param == current else line)
    if scored < 3:
        lines.append("[dim]too few scored trials to say much[/dim]")
    lines.append("\n[dim]|ρ|: Spearman rank correlation with the val accuracy (↑ larger values did better, "
                 "↓ smaller). η²: the share of its variance between values (the best value named). "
                 "◆ on the chart: the trial under the cursor.[/dim]")
    return "\n".join(lines)


class SweepScreen(PollingScreen[SweepData]):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("left_square_bracket", "param(-1)", "Prev param"),
        Binding("right_square_bracket", "param(1)", "Next param"),
        # The table has no use for left and right (row cursor, columns that fit): they cycle too.
        Binding("left", "param(-1)", "Prev param", show=False, priority=True),
        Binding("right", "param(1)", "Next param", show=False, priority=True),
    ]
    CSS_PATH = "sweep.tcss"
    POLL_S = 2.0

    def __init__(self, sweep_id: str):
        super().__init__()
        self.sweep_id = sweep_id
        self.data = SweepData(sweep_id)
        self.param: str | None = None      # the parameter on the chart
        self.selected: str | None = None   # the trial under the table's cursor
        self._configs: dict[str, dict[str, Any]] = {}   # run id -> trial_config (written once; read once)

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="sweep-header")
        yield DataTable(id="sweep-table", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="sweep-lower"):
            yield ParamScatter(id="sweep-chart")
            with VerticalScroll(id="sweep-side"):
                yield Static("", id="sweep-importance")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()
        super().on_mount()

    # --- the data (polling thread) ----------------------------------------------------------------

    def fetch(self) -> SweepData:
        store = self.app.store
        saved: dict[str, Any] = {}
        with contextlib.suppress(StoreError):   # trials recorded but no sweep file: show what there is
            saved = store.sweep(self.sweep_id)
        tune = saved.get("tune") or {}
        metric = tune.get("metric") or ""
        selection = comparable_spec(saved["spec"])["eval"]["selection"] if "spec" in saved else "val"
        trials = []
        for row in store.rows():
            if row.get("sweep") != self.sweep_id:
                continue
            run_id = row["id"]
            if run_id not in self._configs:
                try:
                    self._configs[run_id] = dict(store.meta(run_id).get("trial_config") or {})
                except StoreError:   # deleted while we read
                    continue
            classifier = metric or row.get("primary", "")
            val, test = row.get("best_val"), row.get("test_acc")
            if classifier != row.get("primary"):   # the row's figures are of another classifier
                with contextlib.suppress(StoreError):
                    chosen = select_epoch(store.records(run_id), classifier, selection)
                    val = chosen.get(acc_key("val", classifier)) if chosen else None
                    test = chosen.get(acc_key("test", classifier)) if chosen else None
            trials.append(Trial(run_id, row["status"], self._configs[run_id], row.get("epoch", 0),
                                row.get("epochs", 0), val, test, selection == "max-test"))
        ranking = importance([(t.params, t.score) for t in trials])
        searched_log = frozenset(k for k, v in (tune.get("space") or {}).items()
                                 if isinstance(v, dict) and "loguniform" in v)
        return SweepData(self.sweep_id, saved.get("name", ""), metric, tune.get("num_samples"), sort_trials(trials),
                         ranking, searched_log)

    # --- the widgets (UI thread) ------------------------------------------------------------------

    def show(self, data: SweepData) -> None:
        self.data = data
        params = self.params()
        if self.param not in params:
            self.param = params[0] if params else None
        self._header()
        self._table()
        self.draw()

    def params(self) -> list[str]:
        """The drawn parameters, most important first."""
        return [imp.param for imp in self.data.ranking]

    def _header(self) -> None:
        data = self.data
        counts: dict[str, int] = {}
        for t in data.trials:
            counts[t.status] = counts.get(t.status, 0) + 1
        by_status = ", ".join(f"{counts[s]} {status(s)}" for s in sorted(counts, key=_status_rank))
        planned = f" of {data.planned}" if data.planned else ""
        split = data.trials[0].scored_on if data.trials else "val"
        metric = f" · {acc_key(split, data.metric)}" if data.metric else ""
        name = f" {escape(data.name)}" if data.name else ""
        line = f"[b]sweep {escape(data.sweep_id)}[/b]{name}{metric} · {len(data.trials)}{planned} trials"
        line += f": {by_status}" if counts else ": none recorded yet"
        best = data.trials[0] if data.trials and data.trials[0].score is not None else None
        if best is not None:
            names = short_names(self.params())
            values = " ".join(f"{names[p]}={compact(best.params[p])}" for p in self.params() if p in best.params)
            test = f"{pct(best.test)}%" if best.test is not None else "-"
            line += (f"\nbest [b]{best.run_id[:8]}[/b] val {pct(best.val)}% test {test}{'*' * best.on_test}"
                     f"{' · ' + escape(values) if values else ''}")
        self.query_one("#sweep-header", Static).update(line)

    def _table(self) -> None:
        table = self.query_one(DataTable)
        params = self.params()
        names = short_names(params)
        selected = self.selected
        table.clear(columns=True)
        table.add_column("trial", key="trial")
        table.add_column("status", key="status")
        for p in params:
            table.add_column(escape(names[p]), key=f"p:{p}")
        for label in ("epochs", "val%", "test%"):
            table.add_column(label, key=label)
        for t in self.data.trials:
            table.add_row(t.run_id[:8], status(t.status),
                          *(escape(compact(t.params[p])) if p in t.params else "-" for p in params),
                          f"{t.epoch}/{t.epochs}", pct(t.val), pct(t.test), key=t.run_id)
        ids = [t.run_id for t in self.data.trials]
        if selected in ids:
            table.move_cursor(row=ids.index(selected))
        self.selected = ids[table.cursor_row] if ids and 0 <= table.cursor_row < len(ids) else None

    def draw(self) -> None:
        imp = next((i for i in self.data.ranking if i.param == self.param), None)
        self.query_one(ParamScatter).update(self.param, imp, self.data.trials, self.selected,
                                            self.param in self.data.searched_log)
        self.query_one("#sweep-importance", Static).update(
            importance_text(self.data.ranking, short_names(self.params()), self.param))

    # --- events and actions -----------------------------------------------------------------------

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        run_id = event.row_key.value if event.row_key is not None else None
        if run_id != self.selected:
            self.selected = run_id
            self.draw()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.app.open_run(event.row_key.value)

    def action_param(self, step: int) -> None:
        params = self.params()
        if not params:
            return
        at = params.index(self.param) if self.param in params else -step
        self.param = params[(at + step) % len(params)]
        self.draw()


def _status_rank(value: str) -> int:
    return STATUS_ORDER.index(value) if value in STATUS_ORDER else len(STATUS_ORDER)
