"""Where and how the work runs: one :class:`Runtime`, made once by the CLI or by
the caller of the Python API and handed down through generate, train,
attribute and evaluate.

It holds what every stage must agree on and that no single stage owns: the
plugin registry to look names up in, the device and precision tensors live
in, this worker's rank among how many, and where progress is reported. Today
attribkit runs on the CPU as one worker; the fields exist so that devices and
several workers (torchrun) arrive without another change to every signature.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Protocol

import torch

from .errors import AttribkitError
from .plugins import Registry, registry as default_registry


class ProgressTask(Protocol):
    """One bar: a victim being trained, a generation job, a model being fitted."""

    def update(self, *, advance: int = 0, completed: int | None = None, total: int | None = None,
               info: str | None = None) -> None:
        """Move the bar (by ``advance`` or to ``completed``), change its total, or its line of text."""

    def done(self, info: str | None = None, keep: bool = True) -> None:
        """The work is over (or will not fill: a cell short of examples); ``keep=False`` removes the bar."""


class ProgressSink(Protocol):
    """Where every stage reports progress, in one shape: a stage opens, its tasks
    advance and finish, and one-line notes say what a person should know. The
    CLI's sink draws rich bars (:class:`attribkit.console.ConsoleProgress`);
    the API's default, :class:`Quiet`, says nothing."""

    def stage(self, name: str) -> AbstractContextManager[None]:
        """Around one stage's work ("victims", "generate", "train")."""

    def task(self, description: str, total: int, completed: int = 0) -> ProgressTask:
        """A new bar, inside a stage."""

    def note(self, message: str) -> None:
        """A line for the person watching ("resnet18: already in zoo")."""


class SilentTask:
    """A task that shows nothing: what :class:`Quiet` hands out, and a base for a sink
    that only wants to know when each task is ``done``."""

    def update(self, *, advance=0, completed=None, total=None, info=None) -> None:
        pass

    def done(self, info=None, keep=True) -> None:
        pass


class Quiet:
    """The progress sink that reports nothing: the API's default."""

    def stage(self, name: str) -> AbstractContextManager[None]:
        return nullcontext()

    def task(self, description: str, total: int, completed: int = 0) -> ProgressTask:
        return SilentTask()

    def note(self, message: str) -> None:
        pass


@dataclass(frozen=True)
class Runtime:
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    rank: int = 0
    world_size: int = 1
    progress: ProgressSink = field(default_factory=Quiet)
    registry: Registry | None = None  # None: what is installed (attribkit.plugins.registry())

    def __post_init__(self):
        if isinstance(self.device, str):
            object.__setattr__(self, "device", torch.device(self.device))
        if self.device.type != "cpu":
            raise AttribkitError(f"device {str(self.device)!r}: this attribkit runs on the CPU only")
        if self.dtype != torch.float32:
            raise AttribkitError(f"dtype {self.dtype}: this attribkit computes in float32 only")
        if not (self.world_size == 1 and self.rank == 0):
            raise AttribkitError(f"worker {self.rank} of {self.world_size}: this attribkit runs as one worker")

    @property
    def plugins(self) -> Registry:
        return self.registry if self.registry is not None else default_registry()


def runtime_of(runtime: Runtime | None) -> Runtime:
    """The runtime a stage was handed, or the default one: CPU, one worker, quiet, what is installed."""
    return runtime if runtime is not None else Runtime()
