"""Rich progress bars and tables shared by the CLI commands (and by `attribkit.pipeline` callers who want them)."""

from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

err_console = Console(stderr=True)


class LazyProgress(Progress):
    """Starts drawing at its first task, so a command that fails before doing
    any work leaves nothing but its one error line."""

    _started = False

    def add_task(self, *args, **kwargs):
        if not self._started:
            self._started = True
            self.start()
        return super().add_task(*args, **kwargs)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._started:
            self.stop()


def make_progress() -> Progress:
    return LazyProgress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=err_console,
    )


class ConsoleProgress:
    """The CLI's progress sink (:class:`attribkit.runtime.ProgressSink`): rich bars
    on stderr, drawn while a stage runs; notes printed above them."""

    def __init__(self):
        self._bars: Progress | None = None

    @contextmanager
    def stage(self, name: str):
        with make_progress() as bars:
            self._bars = bars
            try:
                yield
            finally:
                self._bars = None

    def task(self, description: str, total: int, completed: int = 0):
        if self._bars is None:  # a task outside a stage: nothing to draw it in
            from .runtime import Quiet

            return Quiet().task(description, total, completed)
        return _Bar(self._bars, self._bars.add_task(description, total=total, completed=completed, info=""))

    def note(self, message: str) -> None:
        (self._bars.console if self._bars is not None else err_console).print(message, highlight=False)


class _Bar:
    def __init__(self, bars: Progress, task_id):
        self.bars, self.id = bars, task_id

    def update(self, *, advance=0, completed=None, total=None, info=None) -> None:
        changes = {k: v for k, v in (("completed", completed), ("total", total), ("info", info)) if v is not None}
        self.bars.update(self.id, advance=advance or None, **changes)

    def done(self, info=None, keep=True) -> None:
        self.bars.update(self.id, **({"info": info} if info is not None else {}), visible=keep)
