from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..errors import AttribkitError
from ..model import STEMS
from ..trust.unknown import DEFAULT_METHOD, METHODS

# the allowed modes; TrainConfig is the one place that checks them
MODELS = ("mtaa", "single-task", "single-label", "cnn")
POOLS = ("avg", "avg+max")
SCHEDULES = ("cosine", "onecycle")
LOSSES = ("uncertainty", "sum")
REGRESSIONS = ("per-attack", "single")
# what a run.json written before a key existed was trained with: a new default
# must not change what an old run is
LEGACY = {"stem": "timm", "pool": "avg", "schedule": "cosine", "validation": 0.0, "per_cell": 0}
_KINDS = {"str": (str, "a string"), "int": (int, "an integer"), "float": ((int, float), "a number"),
          "bool": (bool, "true or false"), "tuple[str, ...]": ((list, tuple), "a list of names")}


def _option(default, help: str = "", **cli) -> Any:
    """A field that is also an ``attribkit train`` option (built from these
    fields by cli.py), so the default, help and allowed values live here only.

    ``help`` documents the option; for a bool that defaults to True that is
    its ``--no-NAME`` flag. ``choices`` are the allowed values; ``min``,
    ``max`` (and ``min_open``, ``max_open``) bound a number, and ``must`` words the bound
    in the error; ``option`` names an option other than ``--NAME``.
    """
    return field(default=default, metadata={"help": help, **cli})


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a trained model. Defaults are the paper's
    optimiser settings (§4.1): Adam, cosine LR, lr 1e-3, weight decay 1e-3, batch 64."""

    model: str = _option("mtaa", "MTAA; one network per signature; one class per attack×victim×value combination; "
                                  "or the plain 4-layer CNN baseline, one per signature (it ignores the backbone, "
                                  "width, input scale and stem).", choices=MODELS)
    backbone: str = _option("resnet18", "See `attribkit list backbones`.")
    width: float = _option(0.25, "Backbone width (1.0 = paper's, slow on CPU).")
    perturbation: bool = _option(True, "Drop the auto-encoder perturbation extractor (ablation).")
    task_specific: bool = _option(True, "Share the last stage between branches (ablation).")
    fusion: bool = _option(True, "Drop high-low feature fusion (ablation).")
    loss: str = _option("uncertainty", "Uncertainty-weighted (eq. 14) or plain sum of task losses.", choices=LOSSES)
    regression: str = _option("per-attack", "One regressor per attack hyperparameter, or the paper's single "
                                             "regressor.", choices=REGRESSIONS)
    ae_weight: float = _option(1.0, "Weight of the perturbation auto-encoder's reconstruction loss in the training "
                                    "loss.")
    # nearest upscale before the backbone: its 4× stem averages 28-px perturbations away
    input_scale: int = _option(2, "Nearest-neighbour upscale before the backbone (1 = none).", min=1)
    stem: str = _option("timm", "The backbone's stem as timm builds it (4× reduction), or stride 1 with no stem "
                                "pooling: keeps every pixel of small images such as 28-px MNIST.",
                        choices=STEMS)  # see model/backbone.py
    pool: str = _option("avg", "What the heads read of each feature map: its mean, or its mean and maximum.",
                        choices=POOLS)
    epochs: int = _option(24, min=1)
    batch_size: int = _option(64, min=1)
    lr: float = _option(1e-3)
    weight_decay: float = _option(1e-3)
    schedule: str = _option("cosine", "Learning-rate schedule: cosine annealing (the paper's) or one-cycle (warm-up, "
                                      "then anneal).", choices=SCHEDULES)
    seed: int = _option(0, min=-(2 ** 63), max=2 ** 64 - 1, must="in [-2^63, 2^64)")  # what torch.manual_seed takes
    # held out of the training clean images (see training/data.py)
    validation: float = _option(0.1, "Fraction of the training split's clean images held out as a validation split "
                                     "(the same for every run on a data set); per-epoch metrics are measured on it, "
                                     "never on test. 0 = none.", min=0, max=1, max_open=True,
                                must="a fraction in [0, 1)")
    # learning curves
    per_cell: int = _option(0, "Train on at most this many examples per attack × victim × value cell (0 = all).",
                            min=0, must="≥ 0 (0 = all)")
    # real adversarial images arrive as PNG
    quantize: bool = _option(True, "Train on the generated images as they are, not rounded to 8 bits as an image "
                                   "file would hold them.")
    # real adversarial images arrive as JPEG too, which rounds a perturbation away (docs/trust.md)
    jpeg: float = _option(0.0, "Re-encode this share of the training images as JPEG, at a quality drawn from "
                               "50–95 per image, so the model answers images saved as JPEG (0 = never).",
                          min=0, max=1, must="a share in [0, 1]")
    unknown_score: str = _option(DEFAULT_METHOD, "How unlike the known attacks an image is (docs/trust.md): "
                                                "Mahalanobis distance of its features to the nearest attack, "
                                                "distance to its k-th nearest training example, 1 − the maximum "
                                                "softmax, or the energy of the attack logits.",
                                 choices=tuple(METHODS))
    false_rejection: float = _option(0.05, "Share of the validation split's known images the unknown-attack "
                                           "threshold may call unknown.", min=0, max=1, min_open=True,
                                     max_open=True, must="a share in (0, 1)")
    heads: tuple[str, ...] = _option((), "Only these head plugins (default: all that apply).", option="--head")
    # held-out attacks: train on some, score the others as unknown (bench/trust.py's leave-one-family-out)
    attacks: tuple[str, ...] = _option((), "Train on this attack of the data set only; repeat for several (and "
                                           "'clean', if named; at least two classes in all); "
                                           "evaluate --unknown on the same data set scores the others as attacks "
                                           "the run never saw. Default: all.", option="--attack")
    # single-label: classes include the hyperparameter value (Table 4) or not (Table 2)
    label_values: bool = _option(True, "single-label: one class per attack×victim combination, without the "
                                       "hyperparameter value (the paper's Table 2; by default Table 4's, with it).")

    def __post_init__(self):
        for f in fields(self):  # a config read back from run.json may hold anything
            value, (kind, what) = getattr(self, f.name), _KINDS[f.type]
            if not isinstance(value, kind) or (isinstance(value, bool) and f.type != "bool"):
                raise AttribkitError(f"{f.name} must be {what}, got {value!r}")
        for name in ("heads", "attacks"):
            if not all(isinstance(h, str) for h in getattr(self, name)):
                raise AttribkitError(f"{name} must be a list of names, got {list(getattr(self, name))!r}")
        for f in fields(self):  # the choices and bounds the CLI offers, for every other caller too
            value, meta = getattr(self, f.name), f.metadata
            if "choices" in meta and value not in meta["choices"]:
                raise AttribkitError(f"{f.name} must be one of {', '.join(meta['choices'])}, got {value!r}")
            low, high = meta.get("min"), meta.get("max")
            # written as what must hold, so NaN fails it
            if not ((low is None or (value > low if meta.get("min_open") else value >= low)) and
                    (high is None or (value < high if meta.get("max_open") else value <= high))):
                must = meta.get("must") or (f"≥ {low}" if high is None else f"in [{low}, {high}]")
                raise AttribkitError(f"{f.name} must be {must}, got {value}")
        if not 0 < self.width <= 4:  # NaN fails every comparison, so it is refused too
            raise AttribkitError(f"width must be in (0, 4], got {self.width}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise AttribkitError(f"lr must be a finite number > 0, got {self.lr}")
        for name in ("weight_decay", "ae_weight"):
            if not (getattr(self, name) >= 0 and math.isfinite(getattr(self, name))):
                raise AttribkitError(f"{name} must be a finite number ≥ 0, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict, where: str = "train config") -> "TrainConfig":
        """A config as read back from a file; every problem is one error naming ``where``."""
        if not isinstance(data, dict):
            raise AttribkitError(f"{where}: the train config must be an object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise AttribkitError(f"{where}: unknown key {unknown[0]!r} in the train config")
        data = {**{k: v for k, v in LEGACY.items() if k not in data}, **data}
        for name in ("heads", "attacks"):
            if isinstance(data.get(name), list):
                data[name] = tuple(data[name])
        try:
            return cls(**data)
        except AttribkitError as exc:
            raise AttribkitError(f"{where}: {exc}") from None
