"""The small protocols plugins implement: one dataclass per plugin kind.

A plugin builds one of these and hands it to the ``register`` callback of its
hook. Everything the core needs to know about a plugin's object is here, as
data, so the core never special-cases a built-in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

from .errors import AttribkitError


@dataclass(frozen=True)
class Hyperparameter:
    """An attack hyperparameter that attribution has to recover.

    Values are written in *display units*: ``natural = display / scale``.
    The paper's units are display units: ε in /255 (``scale=255``), κ as is.
    Regression targets are display values, so ε×255 and κ share one scale.
    """

    name: str
    grid: tuple[float, ...]  # default grid, display units
    unit: str = ""  # shown after the value: "/255" for ε
    scale: float = 1.0
    symbol: str = ""
    low: float = -math.inf  # admissible range, display units
    high: float = math.inf
    description: str = ""

    def __post_init__(self):
        if not self.name or not self.name.isidentifier():
            raise AttribkitError(f"hyperparameter name {self.name!r} is not an identifier")
        if not self.grid:
            raise AttribkitError(f"hyperparameter {self.name!r} declares an empty grid")
        if not (isinstance(self.scale, (int, float)) and self.scale > 0 and math.isfinite(self.scale)):
            raise AttribkitError(f"hyperparameter {self.name!r}: scale must be a positive number, got {self.scale!r}")
        if not isinstance(self.unit, str):
            raise AttribkitError(f"hyperparameter {self.name!r}: unit must be a string, got {self.unit!r}")
        self.check_values(self.grid)

    def check_values(self, values: Sequence[float]) -> None:
        for v in values:
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise AttribkitError(f"{self.name}: grid value {v!r} is not a finite number")
            if not self.low <= v <= self.high:
                raise AttribkitError(f"{self.name}: grid value {v} is outside [{self.low}, {self.high}]")

    def to_natural(self, display: float) -> float:
        return display / self.scale

    def format(self, display: float) -> str:
        sym = self.symbol or self.name
        return f"{sym} = {display:g}{self.unit}"


def misclassified(margin: torch.Tensor, values: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Untargeted success: some other class beats the true one."""
    return margin > 0


@dataclass(frozen=True)
class AttackSpec:
    """An attack algorithm.

    ``run(model, images, labels, grid, settings)`` attacks one clean batch at
    every grid point (a list of {hyperparameter: natural value}) and returns
    one adversarial batch in [0, 1] per grid point. Receiving the whole grid
    lets an attack share work between values (FGSM needs one gradient for
    all ε). ``settings`` are the fixed, non-attributed parameters (steps, α, c).

    ``success(margin, values)`` decides, from the victim's logit margin
    (best other class minus true class) on the returned image, whether the
    example achieved its hyperparameter and may carry its label. The core
    computes the margin, so no attack can mislabel a failure.
    """

    name: str
    run: Callable[..., list[torch.Tensor]]
    hyperparameters: tuple[Hyperparameter, ...]
    settings: Mapping[str, Any] = field(default_factory=dict)
    success: Callable[[torch.Tensor, Mapping[str, torch.Tensor]], torch.Tensor] = misclassified
    norm: str = "Linf"  # "Linf" | "L2" | "L0" | "L1"
    targeted: bool = False
    library: str = ""
    description: str = ""

    def __post_init__(self):
        if not callable(self.run):
            raise AttribkitError(f"attack {self.name!r}: run is not callable")
        if self.norm not in ("Linf", "L2", "L1", "L0"):
            raise AttribkitError(f"attack {self.name!r}: norm must be Linf, L2, L1 or L0, got {self.norm!r}")
        if not self.hyperparameters or not all(isinstance(h, Hyperparameter) for h in self.hyperparameters):
            raise AttribkitError(f"attack {self.name!r}: hyperparameters must be a non-empty tuple of Hyperparameter")

    def hyperparameter(self, name: str) -> Hyperparameter:
        for h in self.hyperparameters:
            if h.name == name:
                return h
        raise AttribkitError(f"attack {self.name!r} has no hyperparameter {name!r}")


@dataclass(frozen=True)
class VictimSpec:
    """A victim architecture that ``attribkit victims train`` can build.

    ``build(num_classes, in_chans, width)`` returns the bare network; the
    core wraps it with resizing and normalization (see victims.model).
    """

    name: str
    build: Callable[..., torch.nn.Module]
    family: str = ""
    timm_name: str = ""
    min_size: int = 1  # the smallest input side the architecture accepts
    default_width: float = 0.25
    lr: float = 2e-3  # the learning rate it trains well with (VGG without BN needs less)
    description: str = ""


@dataclass(frozen=True)
class BackboneSpec:
    """A feature extractor for the attribution model: a timm model by name, or
    ``create(in_chans=…, **kwargs)`` returning a module shaped like one (top-level
    stage children named in ``feature_info``, and ``forward_features``)."""

    name: str
    timm_name: str = ""
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    width_kwargs: Callable[[float], Mapping[str, Any]] | None = None  # width multiplier → timm kwargs
    description: str = ""
    create: Callable[..., torch.nn.Module] | None = None

    def create_kwargs(self, width: float) -> dict:
        if width == 1.0:
            return dict(self.kwargs)
        if self.width_kwargs is None:
            raise AttribkitError(f"backbone {self.name!r} has no width multiplier; use width 1")
        return {**self.kwargs, **self.width_kwargs(width)}


@dataclass(frozen=True)
class HeadSpec:
    """A task head of the attribution model.

    ``applies(label_columns)`` says whether the data set has what the head
    predicts; ``build(context)`` returns the head module (an
    :class:`attribkit.Head` whose ``name`` and ``task`` are this spec's).
    ``models`` are the model kinds the head joins: MTAA, single-task and the
    CNN baseline train one network per head or all heads in one; single-label
    trains only heads made for it. ``fit(labels, label_spaces, config)``, if
    given, learns something from the training labels before training (a class
    list, a scale); it must return JSON, which the run keeps and hands back as
    ``context.state`` when the head is built again.
    """

    name: str
    task: str  # "classification" | "regression"
    applies: Callable[[Sequence[str]], bool]
    build: Callable[..., torch.nn.Module]
    description: str = ""
    models: tuple[str, ...] = ("mtaa", "single-task", "cnn")
    fit: Callable[..., Any] | None = None

    def __post_init__(self):
        if self.task not in ("classification", "regression"):
            raise AttribkitError(f"head {self.name!r}: task must be 'classification' or 'regression', got {self.task!r}")
        if not callable(self.build) or not callable(self.applies):
            raise AttribkitError(f"head {self.name!r}: applies and build must be callable")


@dataclass
class Dataset:
    """Clean images in [0, 1] with their class labels."""

    name: str
    images: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    labels: torch.Tensor  # (N,) int64
    num_classes: int
    class_names: tuple[str, ...] = ()

    def __post_init__(self):
        if self.images.ndim != 4:
            raise AttribkitError(f"dataset {self.name!r}: images must be (N, C, H, W), got {tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise AttribkitError(f"dataset {self.name!r}: {len(self.images)} images but {len(self.labels)} labels")
        # in chunks: isfinite's temporaries are 1.7× its input, 50 GB for 50,000 ImageNet images at once
        if not all(torch.isfinite(chunk).all() for chunk in self.images.split(256)):
            raise AttribkitError(f"dataset {self.name!r}: images contain NaN or infinity")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])


@dataclass(frozen=True)
class DatasetSpec:
    """A source of clean images. ``load(argument)`` returns a :class:`Dataset`.

    ``argument`` is what follows the colon in ``folder:PATH`` (or None).
    """

    name: str
    load: Callable[[str | None], Dataset]
    takes_argument: bool = False
    description: str = ""


SPEC_TYPES = {
    "attacks": AttackSpec,
    "victims": VictimSpec,
    "backbones": BackboneSpec,
    "heads": HeadSpec,
    "datasets": DatasetSpec,
}
