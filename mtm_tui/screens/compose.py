"""The Compose screen: a form over every configuration key, validated by the engine's own
validator as you type; save it as TOML, launch a run, or launch a sweep."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, get_type_hints

from rich.markup import escape
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.suggester import SuggestFromList
from textual.widgets import Button, Footer, Header, Input, Label, Select, Static

from mtm_engine.atomic import atomic_write
from mtm_engine.catalogue import DATASETS, default_r
from mtm_engine.config import (
    FOLDER_PREFIX,
    SECTIONS,
    Spec,
    choices,
    quickstart_path,
    spec_from_dict,
    spec_to_toml,
)
from mtm_engine.data_files import missing_dataset
from mtm_engine.errors import MtmError
from mtm_engine.records import Status, flatten_spec
from mtm_engine.reference import one_line
from mtm_engine.runner import create_run
from mtm_engine.store import writing
from mtm_engine.sweep_spec import TuneSpec, load_sweep, paper_space, validate_sweep
from mtm_tui.screens.base import ConfirmScreen, PromptScreen
from mtm_tui.services import jobs

# The [tune] keys the form offers; the search space comes from the preset (or the paper's).
TUNE_KEYS = {"num_samples": int, "max_epochs": int, "search": ("hyperopt", "random"), "scheduler": ("asha", "none")}


def presets(root: Path) -> list[tuple[str, str]]:
    """(label, path) of the quick start and every experiment file under ROOT/experiments."""
    found = [("quickstart (built in)", str(quickstart_path()))]
    folder = root / "experiments"
    if folder.is_dir():
        found += [(str(p.relative_to(root)), str(p)) for p in sorted(folder.rglob("*.toml"))
                  if p.name != "quickstart.toml"]
    return found


def _field_id(key: str) -> str:
    return "f-" + key.replace(".", "--")


class ComposeScreen(Screen):
    # The name has focus from the first moment: keys typed while the form loads land in it. The
    # preset never overwrites it; its placeholder shows the preset's name, used when it is empty.
    AUTO_FOCUS = "#f-name"
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("ctrl+s", "save", "Save TOML"),
        Binding("ctrl+l", "launch", "Launch run"),
        Binding("ctrl+r", "sweep", "Launch sweep"),   # not ctrl+k: every Input deletes to the end of the line with it
        Binding("ctrl+g", "go_to", "Go to key"),
        # The app's q, where focus is not in a text field (a dropdown, a button), would lose the form: ask first
        Binding("q", "quit", "Quit", show=False),
    ]

    def __init__(self, from_run: tuple[str, dict[str, Any]] | None = None):
        """from_run: (run id, its stored spec) to start from, to change and launch again; else a preset."""
        super().__init__()
        self.from_run = from_run
        self.spec: Spec | None = None
        self.tune: TuneSpec | None = None
        self.space: dict[str, Any] = {}
        self.preset_name = "experiment"
        self.loss_name = ""   # the loss the form shows (its r follows the loss's default_r when the loss changes)
        self.unchanged: dict[str, str] = {}   # the form as last loaded or saved: Esc asks before losing changes

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="preset-bar"):
            yield Label("preset ")
            if self.from_run is None:
                yield Select(presets(Path.cwd()), id="preset", allow_blank=False, value=str(quickstart_path()),
                             compact=True)
            else:   # blank, its prompt naming the run; picking a preset replaces the run's spec
                yield Select(presets(Path.cwd()), id="preset", prompt=f"from run {self.from_run[0][:8]}", compact=True)
        with VerticalScroll(id="form", can_focus=False):   # no focus stop of its own: Tab goes field to field
            yield from self._row("name", Input(id=_field_id("name"), compact=True))
            for section, cls in SECTIONS.items():
                yield Static(f"[b]\\[{section}][/b]", classes="section")
                for key, kind in get_type_hints(cls).items():
                    yield from self._row(f"{section}.{key}", self._widget(f"{section}.{key}", kind))
            yield Static("[b]\\[tune][/b] (for a sweep; the search space comes from the preset)", classes="section")
            for key, kind in TUNE_KEYS.items():
                widget = (Select([(v, v) for v in kind], allow_blank=False, compact=True, id=_field_id(f"tune.{key}"))
                          if isinstance(kind, tuple) else Input(id=_field_id(f"tune.{key}"), type="integer", compact=True))
                yield from self._row(f"tune.{key}", widget)
        yield Static("", id="field-help")
        yield Static("", id="verdict")
        with Horizontal(id="compose-buttons"):
            yield Button("Save TOML (ctrl+s)", id="save", compact=True)
            yield Button("Launch run (ctrl+l)", id="launch", variant="success", compact=True)
            yield Button("Launch sweep (ctrl+r)", id="sweep", variant="primary", compact=True)
        yield Footer(compact=True)

    def _row(self, key: str, widget) -> ComposeResult:
        with Horizontal(classes="field"):
            yield Label(key, classes="key")
            yield widget

    def _widget(self, key: str, kind: Any):
        # Compact widgets (no borders): one line per key, so a form fits an 80x24 terminal.
        if key in choices():
            return Select([(v, v) for v in choices()[key]], allow_blank=False, compact=True, id=_field_id(key))
        if kind is bool:
            return Select([("true", "true"), ("false", "false")], allow_blank=False, compact=True, id=_field_id(key))
        suggestions = {"data.dataset": [*DATASETS, "folder:"], "train.device": ["auto", "cpu", "cuda", "mps"]}
        suggester = SuggestFromList(suggestions[key]) if key in suggestions else None
        return Input(id=_field_id(key), suggester=suggester, compact=True)

    def on_descendant_focus(self, event) -> None:
        """The focused field's key and meaning (the configuration reference's line), under the form."""
        widget_id = getattr(event.widget, "id", None) or ""
        key = widget_id[2:].replace("--", ".") if widget_id.startswith("f-") else None
        self.query_one("#field-help", Static).update(f"[b]{key}[/b]: {escape(one_line(key))}" if key else "")

    def action_go_to(self) -> None:
        """Jump to a field by typing its key (completed as typed): its last part (lr), or any part only one key has."""
        keys = list(self.values())
        self.app.push_screen(PromptScreen("Go to which key? (e.g. train.lr; tab completes)", "",
                                          suggester=SuggestFromList(keys, case_sensitive=False)), self._go_to)

    def _go_to(self, typed: str | None) -> None:
        if not typed:
            return
        keys, typed = list(self.values()), typed.strip().lower()
        # the key itself, else the key's last part (lr: train.lr), else the keys that contain what was typed
        matches = ([k for k in keys if k == typed] or [k for k in keys if k.rsplit(".", 1)[-1] == typed]
                   or [k for k in keys if typed in k])
        if len(matches) != 1:
            self.notify(f"{typed!r}: {'no key has it' if not matches else 'several keys have it: ' + ', '.join(matches)}",
                        severity="warning")
            return
        widget = self.query_one(f"#{_field_id(matches[0])}")
        widget.focus()
        widget.scroll_visible(animate=False)

    def on_mount(self) -> None:
        if self.from_run is None:
            self.load_preset(str(quickstart_path()))
            return
        run_id, stored = self.from_run
        try:   # the run's own [tune] is not kept: a sweep from here searches the paper's space
            spec = spec_from_dict(stored)
            self.load(spec, validate_sweep(spec, TuneSpec(space=paper_space(spec))), f"run {run_id[:8]}'s")
        except MtmError as exc:
            self.notify(f"run {run_id[:8]}: {exc}", severity="error", timeout=8)

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.value != event.select.value:   # stale: a Select's first option, posted at mount, after the preset set it
            return
        if event.select.id == "preset" and event.value != Select.BLANK:
            self.load_preset(str(event.value))
            return
        if event.select.id == _field_id("loss.name"):
            self._follow_loss_default(str(event.value))
        self.check()

    def _follow_loss_default(self, loss: str) -> None:
        """A new loss brings its own default r (catalogue.default_r), unless r was edited away from the old one's."""
        field = self.query_one(f"#{_field_id('loss.r')}", Input)
        try:
            at_default = float(field.value) == default_r(self.loss_name)
        except ValueError:
            at_default = False
        if at_default:
            with self.prevent(Input.Changed):
                field.value = str(default_r(loss))
        self.loss_name = loss

    def on_input_changed(self, event: Input.Changed) -> None:
        self.check()

    def load_preset(self, path: str) -> None:
        try:
            spec, tune = load_sweep(path)
        except MtmError as exc:
            self.notify(str(exc), severity="error", timeout=8)
            return
        self.load(spec, tune, "the preset's")

    def load(self, spec: Spec, tune: TuneSpec, whose: str) -> None:
        """Fill the form from a spec and its sweep settings; an empty name means the spec's own."""
        self.space = tune.space
        self.preset_name, self.loss_name = spec.name, spec.loss.name
        self.query_one(f"#{_field_id('name')}", Input).placeholder = f"{spec.name} ({whose})"
        values = {**flatten_spec(spec.to_dict()),
                  **{f"tune.{k}": getattr(tune, k) for k in TUNE_KEYS}}
        with self.prevent(Input.Changed, Select.Changed):
            for key, value in values.items():
                widget = self.query_one(f"#{_field_id(key)}")
                if isinstance(value, bool):
                    value = "true" if value else "false"
                widget.value = value if isinstance(widget, Select) else (
                    ", ".join(map(str, value)) if isinstance(value, list) else str(value))
        self.check()
        self.unchanged = self.values()

    def values(self) -> dict[str, str]:
        out = {}
        for widget in self.query(".field > Input, .field > Select"):
            out[widget.id[2:].replace("--", ".")] = str(widget.value)
        return out

    def check(self) -> bool:
        """Validate with the engine; show the verdict; keep the valid spec."""
        values = self.values()
        verdict = self.query_one("#verdict", Static)
        try:
            overrides = [f"{k}={v}" for k, v in values.items() if not k.startswith("tune.") and k != "name"]
            overrides.append(f"name={values['name'] or self.preset_name}")
            self.spec = spec_from_dict({}, overrides)
            self.tune = validate_sweep(self.spec, TuneSpec(
                num_samples=int(values["tune.num_samples"] or 0), max_epochs=int(values["tune.max_epochs"] or 0),
                search=values["tune.search"], scheduler=values["tune.scheduler"], space=dict(self.space)))
        except (MtmError, ValueError) as exc:
            self.spec = None
            verdict.update(f"[b red]✗[/] {exc}")
            return False
        summary = f"{self.spec.data.dataset}, {self.spec.model.backbone}, {self.spec.loss.name}, {self.spec.train.epochs} epochs"
        missing = missing_dataset(self.spec.data)
        folder = self.spec.data.dataset.startswith(FOLDER_PREFIX)   # an image folder is never downloaded
        if missing and (folder or not self.spec.data.download):
            verdict.update(f"[b red]✗[/] {escape(missing)}; " + ("give the folder of your images" if folder else
                           "set data.root to the folder that holds it, or data.download = true"))
            self.spec = None
            return False
        if missing:   # launchable: the run downloads it, where the network allows
            verdict.update(f"[b yellow]![/] {summary}; {escape(missing)}: the run will try to download it")
            return True
        verdict.update(f"[b green]✓[/] valid: {summary}; the data is there")
        return True

    def on_button_pressed(self, event: Button.Pressed) -> None:
        {"save": self.action_save, "launch": self.action_launch, "sweep": self.action_sweep}[event.button.id]()

    def _toml(self) -> str:
        tune = dataclasses.asdict(self.tune)
        return spec_to_toml(self.spec, tune)

    def action_back(self) -> None:
        self._unless_changed(self.app.pop_screen, "Leave Compose? The changed form is not saved.")

    def action_quit(self) -> None:
        self._unless_changed(self.app.exit, "Quit mtm? The changed form is not saved.")

    def _unless_changed(self, then: Callable[[], Any], question: str) -> None:
        """Do `then` at once where the form is as loaded or saved; else only once the user says yes."""
        if self.values() == self.unchanged:
            then()
        else:
            self.app.push_screen(ConfirmScreen(question), lambda yes: yes and then())

    def action_save(self) -> None:
        if not self.check():
            return
        path, text, values = Path("experiments") / f"{self.spec.name}.toml", self._toml(), self.values()
        if path.exists():   # with an empty name, that is the preset's own file
            self.app.push_screen(ConfirmScreen(f"{path.resolve()} exists. Overwrite it?"),
                                 lambda yes: yes and self.save(path, text, values))
        else:
            self.save(path, text, values)

    def action_launch(self) -> None:
        if self.check():
            self.launch_run(self.spec)

    def action_sweep(self) -> None:
        if self.check():
            path = self.app.store.home / "composed" / f"{self.spec.name}-{time.strftime('%Y%m%d-%H%M%S')}.toml"
            self.launch_sweep(path, self._toml())

    def _write(self, path: Path, text: str) -> bool:
        """Write a TOML file off the UI thread; a failure (a folder that cannot be made, a full disk)
        is a notification, never a crash."""
        try:
            with writing(path):
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(path, text)
        except MtmError as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error", timeout=10)
            return False
        return True

    @work(thread=True, group="compose")
    def save(self, path: Path, text: str, values: dict[str, str]) -> None:
        if self._write(path, text):
            self.app.call_from_thread(setattr, self, "unchanged", values)
            self.app.call_from_thread(self.notify, f"saved {path.resolve()}")

    @work(thread=True, group="compose")
    def launch_run(self, spec: Spec) -> None:
        store = self.app.store
        try:
            run_id = create_run(store, spec, status=Status.QUEUED)
            jobs.enqueue(store, run_id)
        except MtmError as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error", timeout=10)
            return
        self.app.call_from_thread(self.notify, f"run {run_id[:8]} queued in the background")
        self.app.call_from_thread(self.app.pop_screen)

    @work(thread=True, group="compose")
    def launch_sweep(self, path: Path, text: str) -> None:
        if not self._write(path, text):
            return
        log = jobs.launch_sweep(self.app.store, path)
        self.app.call_from_thread(self.notify, f"sweep launched; its trials appear on the Runs screen (log {log})")
        self.app.call_from_thread(self.app.pop_screen)
