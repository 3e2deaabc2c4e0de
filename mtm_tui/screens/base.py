"""What every screen shares: polling the store in a worker thread (the UI never blocks on I/O)
and a confirmation dialog."""

from __future__ import annotations

import time
from abc import abstractmethod
from typing import Any, Callable, Generic, TypeVar

from textual import work
from textual.app import ComposeResult
from textual.containers import Grid
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.suggester import Suggester
from textual.widgets import Button, Input, Label, OptionList
from textual.worker import get_current_worker

from mtm_engine.errors import MtmError

Data = TypeVar("Data")   # what a screen's fetch returns: a frozen dataclass of its own (RunsData, RunData, ...)


class Fetched(Message, Generic[Data]):
    """Fresh data from the store, of the screen's own type (posted from the polling thread), or why there is none."""

    def __init__(self, data: Data | None, error: str | None = None):
        super().__init__()
        self.data, self.error = data, error


class PollingScreen(Screen, Generic[Data]):
    """A screen whose `fetch()` (plain I/O, no widgets) runs in a thread every POLL_S seconds and returns a
    frozen dataclass of what it read, its Data (compared with the last, to post only changes); a change is
    posted as `Fetched[Data]`, and `show()` updates the widgets on the UI thread."""

    POLL_S = 1.0
    polled = False   # whether a first poll's data (or its error) has been shown

    @abstractmethod
    def fetch(self) -> Data:
        """Read the store (in the polling thread: no widgets here)."""

    @abstractmethod
    def show(self, data: Data) -> None:
        """Put what fetch read into the widgets (on the UI thread)."""

    def on_mount(self) -> None:
        self.poll()

    def refetch(self) -> None:
        """Poll now (after an action), rather than at the next tick."""
        self.poll()

    @work(thread=True, exclusive=True, group="poll")
    def poll(self) -> None:
        worker = get_current_worker()
        last: Any = object()
        while not worker.is_cancelled:
            try:
                data, error = self.fetch(), None
            except MtmError as exc:
                data, error = None, str(exc)
            if error is not None or data != last:
                last = data
                self.post_message(Fetched[Data](data, error))
            deadline = time.monotonic() + self.POLL_S
            while time.monotonic() < deadline and not worker.is_cancelled:
                time.sleep(0.05)

    def on_fetched(self, message: Fetched[Data]) -> None:
        self.polled = True
        if message.error is not None:
            self.notify(message.error, severity="error", timeout=8)
            return
        self.show(message.data)

    @work(thread=True, group="jobs")
    def run_job(self, job: Callable[[Any, str], Any], run_id: str, done: str) -> None:
        """A job action (mtm_tui.services.jobs: stop, resume, delete) off the UI thread; its outcome, or its
        one-line refusal, comes back as a notification, and the store is polled again."""
        try:
            said = job(self.app.store, run_id)
        except MtmError as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error", timeout=8)
            return
        # A job that says what it did (stop: out of the queue, or already ended) is quoted.
        self.app.call_from_thread(self.notify, f"run {run_id[:8]}: {said}" if isinstance(said, str)
                                  else f"{done} run {run_id[:8]}")
        self.app.call_from_thread(self.refetch)


class ConfirmScreen(ModalScreen[bool]):
    """Yes/no; y and n answer too."""

    BINDINGS = [("y", "answer(True)", "Yes"), ("n,escape", "answer(False)", "No")]

    def __init__(self, question: str):
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Grid(id="confirm"):
            yield Label(self.question, id="question")
            yield Button("Yes (y)", variant="error", id="yes")
            yield Button("No (n)", variant="primary", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class PromptScreen(ModalScreen[str | None]):
    """One line of text (a run's tags or note); enter answers, escape cancels (None)."""

    BINDINGS = [("escape", "cancel", "Cancel")]

    def __init__(self, question: str, value: str = "", suggester: Suggester | None = None):
        super().__init__()
        self.question, self.value, self.suggester = question, value, suggester

    def compose(self) -> ComposeResult:
        with Grid(id="prompt"):
            yield Label(self.question, id="question")
            yield Input(self.value, id="answer", suggester=self.suggester)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ChoiceScreen(ModalScreen[str | None]):
    """Pick one of a few labelled options (the Runs screen's sort column); escape cancels."""

    BINDINGS = [("escape", "cancel", "Cancel")]

    def __init__(self, question: str, options: list[str], current: str | None = None):
        super().__init__()
        self.question, self.options, self.current = question, options, current

    def compose(self) -> ComposeResult:
        with Grid(id="choice"):
            yield Label(self.question, id="question")
            yield OptionList(*self.options, id="options")

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        if self.current in self.options:
            options.highlighted = self.options.index(self.current)
        options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.options[event.option_index])

    def action_cancel(self) -> None:
        self.dismiss(None)
