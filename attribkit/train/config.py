from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from ..errors import AttribkitError

MODELS = ("mtaa", "single-task", "single-label")


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
    epochs: int = 24
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-3
    seed: int = 0
    quantize: bool = True  # train on 8-bit images: real adversarial images arrive as PNG
    heads: tuple[str, ...] = ()  # restrict to these head plugins; () = every one that applies
    label_values: bool = True  # single-label: classes include the hyperparameter value (Table 4) or not (Table 2)

    def __post_init__(self):
        if self.model not in MODELS:
            raise AttribkitError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.loss not in ("uncertainty", "sum"):
            raise AttribkitError(f"loss must be 'uncertainty' or 'sum', got {self.loss!r}")
        if self.regression not in ("per-attack", "single"):
            raise AttribkitError(f"regression must be 'per-attack' or 'single', got {self.regression!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise AttribkitError(f"{name} must be ≥ 1")
        if not (0 < self.width <= 4 and self.lr > 0 and self.weight_decay >= 0):
            raise AttribkitError("width must be in (0, 4], lr > 0, weight_decay ≥ 0")

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise AttribkitError(f"train config: unknown key {unknown[0]!r}")
        data = dict(data)
        if "heads" in data:
            data["heads"] = tuple(data["heads"])
        return cls(**data)
