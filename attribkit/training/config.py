from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields

from ..errors import AttribkitError

MODELS = ("mtaa", "single-task", "single-label", "cnn")
STEMS = ("timm", "stride1")
POOLS = ("avg", "avg+max")
SCHEDULES = ("cosine", "onecycle")
# what a run.json written before a key existed was trained with: a new default
# must not change what an old run is
LEGACY = {"stem": "timm", "pool": "avg", "schedule": "cosine", "validation": 0.0, "per_cell": 0}
_KINDS = {"str": (str, "a string"), "int": (int, "an integer"), "float": ((int, float), "a number"),
          "bool": (bool, "true or false"), "tuple[str, ...]": ((list, tuple), "a list of names")}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a trained model. Defaults are the paper's
    optimiser settings (§4.1): Adam, cosine LR, lr 1e-3, weight decay 1e-3, batch 64."""

    model: str = "mtaa"
    backbone: str = "resnet18"
    width: float = 0.25
    perturbation: bool = True
    task_specific: bool = True
    fusion: bool = True
    loss: str = "uncertainty"  # or "sum"
    regression: str = "per-attack"  # or "single"
    ae_weight: float = 1.0
    input_scale: int = 2  # nearest upscale before the backbone: its 4× stem averages 28-px perturbations away
    stem: str = "timm"  # "stride1": no stem reduction, for small images (see model/backbone.py)
    pool: str = "avg"  # "avg+max": the heads also see each feature map's maximum
    epochs: int = 24
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-3
    schedule: str = "cosine"  # or "onecycle" (warm-up then anneal)
    seed: int = 0
    validation: float = 0.1  # fraction of the training clean images held out (see train/data.py)
    per_cell: int = 0  # train on at most this many examples per cell (0 = all): learning curves
    quantize: bool = True  # train on 8-bit images: real adversarial images arrive as PNG
    heads: tuple[str, ...] = ()  # restrict to these head plugins; () = every one that applies
    label_values: bool = True  # single-label: classes include the hyperparameter value (Table 4) or not (Table 2)

    def __post_init__(self):
        for f in fields(self):  # a config read back from run.json may hold anything
            value, (kind, what) = getattr(self, f.name), _KINDS[f.type]
            if not isinstance(value, kind) or (isinstance(value, bool) and f.type != "bool"):
                raise AttribkitError(f"{f.name} must be {what}, got {value!r}")
        if not all(isinstance(h, str) for h in self.heads):
            raise AttribkitError(f"heads must be a list of names, got {list(self.heads)!r}")
        if self.model not in MODELS:
            raise AttribkitError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.loss not in ("uncertainty", "sum"):
            raise AttribkitError(f"loss must be 'uncertainty' or 'sum', got {self.loss!r}")
        for name, allowed in (("stem", STEMS), ("pool", POOLS), ("schedule", SCHEDULES)):
            if getattr(self, name) not in allowed:
                raise AttribkitError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if not 0 <= self.validation < 1:
            raise AttribkitError(f"validation must be a fraction in [0, 1), got {self.validation}")
        if self.per_cell < 0:
            raise AttribkitError(f"per_cell must be ≥ 0 (0 = all), got {self.per_cell}")
        if self.regression not in ("per-attack", "single"):
            raise AttribkitError(f"regression must be 'per-attack' or 'single', got {self.regression!r}")
        for name in ("epochs", "batch_size", "input_scale"):
            if getattr(self, name) < 1:
                raise AttribkitError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if not 0 < self.width <= 4:  # NaN fails every comparison, so it is refused too
            raise AttribkitError(f"width must be in (0, 4], got {self.width}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise AttribkitError(f"lr must be a finite number > 0, got {self.lr}")
        for name in ("weight_decay", "ae_weight"):
            if not (getattr(self, name) >= 0 and math.isfinite(getattr(self, name))):
                raise AttribkitError(f"{name} must be a finite number ≥ 0, got {getattr(self, name)}")
        if not -(2 ** 63) <= self.seed < 2 ** 64:  # what torch.manual_seed takes
            raise AttribkitError(f"seed must be in [-2^63, 2^64), got {self.seed}")

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
        if isinstance(data.get("heads"), list):
            data["heads"] = tuple(data["heads"])
        try:
            return cls(**data)
        except AttribkitError as exc:
            raise AttribkitError(f"{where}: {exc}") from None
