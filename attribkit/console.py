"""Rich progress bars and tables shared by the CLI commands (and by `attribkit.pipeline` callers who want them)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

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


class ConsoleProgress:
    """Rich bars for each step of a pipeline, one set of bars per step: the
    ``progress`` that :func:`attribkit.pipeline.demo` takes, and what the
    CLI's own ``victims train``, ``generate`` and ``train`` show."""

    @contextmanager
    def victims(self, zoo: str | Path):
        with make_progress() as progress:
            tasks = {}

            def on_start(arch):
                tasks[arch] = progress.add_task(f"train {arch}", total=1, info="")
                return lambda step, total, loss: progress.update(tasks[arch], total=total, completed=step,
                                                                 info=f"loss {loss:.3f}")

            def on_done(record, trained):
                if trained:
                    progress.update(tasks[record.architecture], info=f"test acc {record.test_accuracy:.2%}")
                else:
                    err_console.print(f"{record.name}: already in {zoo} (use --force to retrain)")

            yield {"on_start": on_start, "on_done": on_done}

    @contextmanager
    def generate(self):
        with make_progress() as progress:
            yield GenerateProgress(progress)

    @contextmanager
    def train(self):
        with make_progress() as progress:
            tasks = {}

            def on_step(member, step, total, loss):
                if member not in tasks:
                    tasks[member] = progress.add_task(f"train {member}", total=total, info="")
                progress.update(tasks[member], completed=step)

            def on_epoch(member, epoch, epochs, row):
                shown = " ".join(f"{k.removesuffix('_accuracy')} {v:.1%}" if k.endswith("_accuracy") else f"{k} {v:.3g}"
                                 for k, v in row.items() if k.endswith(("_accuracy", "_rmse")) and v is not None)
                progress.update(tasks[member], info=f"ep {epoch}/{epochs} loss {row['train_loss']:.3f} {shown}")

            yield {"on_step": on_step, "on_epoch": on_epoch}
