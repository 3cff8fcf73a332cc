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
from typing import Any, Protocol

import torch

from .errors import AttribkitError
from .plugins import Registry, registry as default_registry


class ProgressSink(Protocol):
    """Where the stages report progress: one context per step, entered around the
    step and yielding what that step reports to. The CLI's is
    :class:`attribkit.console.ConsoleProgress` (rich bars); a notebook may pass its own."""

    def victims(self, zoo) -> AbstractContextManager[dict]:
        """Yields ``on_start(arch) -> on_step`` and ``on_done(record, trained)`` for the zoo."""

    def generate(self) -> AbstractContextManager[Any]:
        """Yields an object with ``begin``, ``start_job``, ``advance``, ``end_job`` (or None)."""

    def train(self) -> AbstractContextManager[dict]:
        """Yields ``on_step(member, step, total, loss)`` and ``on_epoch(member, epoch, epochs, row)``."""


class Quiet:
    """The progress sink that reports nothing: the API's default."""

    def victims(self, zoo) -> Any:
        return nullcontext({})

    def generate(self) -> Any:
        return nullcontext(None)

    def train(self) -> Any:
        return nullcontext({})


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
