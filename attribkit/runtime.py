"""Where and how the work runs: one :class:`Runtime`, made once by the CLI or by
the caller of the Python API and handed down through generate, train,
attribute and evaluate.

It holds what every stage must agree on and that no single stage owns: the
plugin registry to look names up in, the device tensors live on and the
numerics they are computed with (TF32, mixed precision), this worker's rank
among how many, and where progress is reported.
"""

from __future__ import annotations

import os
import re
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Iterator, Protocol

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


DEVICE_HELP = ("cpu, cuda, cuda:N, or auto: a GPU if there is one (under torchrun, each worker takes the GPU of "
               "its LOCAL_RANK), else the CPU")
PRECISIONS = ("fp32", "bf16", "fp16")
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(spec: str | torch.device) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` as a device that exists here; anything else is one clear error."""
    text = str(spec).strip().lower()
    if text == "auto":
        return _local_gpu() if torch.cuda.is_available() else torch.device("cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
        raise AttribkitError(f"device {str(spec)!r}: expected {DEVICE_HELP}")
    if text == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise AttribkitError(f"device {str(spec)!r}: no CUDA GPU is usable here (torch {torch.__version__}, CUDA "
                             f"{torch.version.cuda or 'not built in'}); use --device cpu or auto")
    if text == "cuda":
        return _local_gpu()
    index, count = int(text.split(":")[1]), torch.cuda.device_count()
    if index >= count:
        raise AttribkitError(f"device {str(spec)!r}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}")
    return torch.device("cuda", index)


def _local_gpu() -> torch.device:
    # torchrun starts one worker per GPU and tells each its LOCAL_RANK
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` (worker i of n, from 0) as (rank, world_size)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match or not int(match[1]) < int(match[2]):
        raise AttribkitError(f"--shard {text!r}: expected i/n with 0 ≤ i < n, e.g. 0/4 for the first of four workers")
    return int(match[1]), int(match[2])


def worker_from_env() -> tuple[int, int]:
    """(rank, world_size) as torchrun sets them (RANK, WORLD_SIZE), or (0, 1) outside torchrun."""
    rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
    if rank is None or world is None:
        return 0, 1
    try:
        return parse_shard(f"{rank}/{world}")
    except AttribkitError:
        raise AttribkitError(f"RANK={rank!r} and WORLD_SIZE={world!r} do not name a worker (0 ≤ RANK < "
                             f"WORLD_SIZE); are they left over from another launcher?") from None


@dataclass(frozen=True)
class Runtime:
    """``device`` takes anything :func:`resolve_device` does (``"auto"`` too);
    ``precision`` is training's autocast (fp32: none); ``tf32`` lets CUDA
    matrix products and convolutions round to TensorFloat-32, off by default
    so that a GPU computes what the CPU does, to float32 rounding;
    ``stream`` reads a data set's images from their files a batch at a time
    instead of loading them (for data larger than memory; same values)."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"
    tf32: bool = False
    stream: bool = False
    rank: int = 0
    world_size: int = 1
    progress: ProgressSink = field(default_factory=Quiet)
    registry: Registry | None = None  # None: what is installed (attribkit.plugins.registry())

    def __post_init__(self):
        object.__setattr__(self, "device", resolve_device(self.device))
        if self.precision not in PRECISIONS:
            raise AttribkitError(f"precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}")
        if self.precision == "fp16" and self.device.type == "cpu":
            raise AttribkitError("precision fp16 needs a GPU (the CPU has no fast float16); use bf16 or fp32 on the CPU")
        for name in ("rank", "world_size"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), int):
                raise AttribkitError(f"{name} must be an integer, got {getattr(self, name)!r}")
        if not 0 <= self.rank < self.world_size:
            raise AttribkitError(f"worker {self.rank} of {self.world_size}: a rank must be in [0, world_size)")

    @property
    def plugins(self) -> Registry:
        return self.registry if self.registry is not None else default_registry()

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def numerics(self) -> dict:
        """What decides the bytes of a float computation here, as recorded in manifests and runs."""
        return {"device": _device_name(self.device), "dtype": "float32", "tf32": self.tf32 and self.is_cuda,
                "precision": self.precision}

    @contextmanager
    def numerics_in_effect(self) -> Iterator[None]:
        """TF32 on or off, as asked, for the duration of a stage (torch's flags are process-wide)."""
        if not self.is_cuda:
            yield
            return
        before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.cuda.set_device(self.device)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self.tf32
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        """A batch read on the CPU, on this runtime's device: through pinned memory to a GPU, so
        the copy does not make the host wait."""
        if not self.is_cuda:
            return batch
        return batch.pin_memory().to(self.device, non_blocking=True)

    def autocast(self) -> AbstractContextManager:
        """Mixed precision for training's forward pass, as ``precision`` asks (fp32: none)."""
        if self.precision == "fp32":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=_AUTOCAST[self.precision])


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{device.index} ({torch.cuda.get_device_name(device)})"
    return "cpu"


def runtime_of(runtime: Runtime | None) -> Runtime:
    """The runtime a stage was handed, or the default one: CPU, one worker, quiet, what is installed."""
    return runtime if runtime is not None else Runtime()
