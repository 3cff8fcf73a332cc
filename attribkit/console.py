"""Rich progress bars and tables shared by the CLI commands."""

from __future__ import annotations

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


class GenerateProgress:
    """Overall bar plus one bar for the running (victim, attack, split) job."""

    def __init__(self, progress: Progress):
        self.p = progress
        self.overall = None
        self.job = None

    def begin(self, total: int, done: int) -> None:
        self.overall = self.p.add_task("all cells", total=total, completed=done, info="")

    def start_job(self, label: str, total: int) -> None:
        self.job = self.p.add_task(label, total=total, info="")

    def advance(self, n: int) -> None:
        self.p.advance(self.job, n)
        self.p.advance(self.overall, n)

    def end_job(self, skipped: int) -> None:
        # cells that ran out of clean images or attempts will not fill: close the bars
        if skipped:
            self.p.update(self.job, info=f"[yellow]{skipped} short")
            self.p.advance(self.overall, skipped)
        self.p.update(self.job, completed=self.p.tasks[self.job].total, visible=False)
