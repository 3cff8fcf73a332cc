"""Task heads: the classification & regression module (paper §3.3.4), and the
protocol every head plugin implements.

A head owns its whole life: from the labels it computes its target and loss,
from its output its metrics (:class:`Score`), its answer for ``attribkit
attribute`` and its section of ``attribkit evaluate``'s report. The core
trains, scores and answers through these methods only, so the paper's three
heads (registered by ``attribkit.builtins.heads``) take exactly the path a
third-party head does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..records import Labels, LabelSpaces

Task = Literal["classification", "regression"]
Branch = Literal["attack", "victim"]


@dataclass
class HeadContext:
    """What a head plugin may need to build itself."""

    labels: LabelSpaces
    feature_dims: dict[str, int]  # branch name → feature width
    target_stats: dict[str, dict[str, float]] = field(default_factory=dict)  # hp → mean/std (display units)
    regression: str = "per-attack"  # or "single": how regressors share outputs (TrainConfig.regression)
    joint: bool = True  # one network with the other heads, whose outputs it may read (eq. 7); False: alone
    heads: tuple[str, ...] = ()  # the names of the heads built into the same network (itself included)
    config: Any = None  # the run's TrainConfig
    state: Any = None  # what HeadSpec.fit learnt from the training labels (JSON), saved with the run

    @property
    def hyperparameters(self) -> list[str]:
        return self.labels.hp_names


@dataclass
class Score:
    """One metric of a head on a set of examples, from one value per example.

    ``per_example`` is 1/0 (right/wrong) for an accuracy, the signed error for
    an RMSE, and NaN where the metric does not apply to an example. A
    *signature* is one of the attribution's answers (attack, victim,
    hyperparameter): it gets a column in ``evaluate``'s summary and a term in
    Δ_MTL. ``table``: also one value per attack × victim cell. ``per_attack``:
    also one value per true attack, under ``KEY_per_attack``.
    """

    key: str  # e.g. "attack_accuracy", the name in metrics.json and evaluation.json
    per_example: torch.Tensor
    kind: Literal["accuracy", "rmse"]
    title: str  # "Attack accuracy (%)"
    column: str = ""  # the summary column: "attack acc (%)"
    signature: bool = False
    table: bool | None = None  # None: when it is a signature
    per_attack: bool = False

    @property
    def higher_is_better(self) -> bool:
        return self.kind == "accuracy"

    @property
    def tabled(self) -> bool:
        return self.signature if self.table is None else self.table

    def value(self, keep: torch.Tensor | None = None) -> float | None:
        values = self.per_example if keep is None else self.per_example[keep]
        values = values[torch.isfinite(values)]
        if not len(values):
            return None
        if self.kind == "rmse":
            return round(math.sqrt(float((values ** 2).mean())), 4)
        return round(float(values.mean()), 6)

    def describe(self) -> dict:
        return {"title": self.title, "column": self.column or self.title, "kind": self.kind,
                "signature": self.signature}


class Head(nn.Module):
    """Base class. ``task`` is "classification" or "regression"; ``branch``
    names the features it reads ("attack" or "victim")."""

    task: Task = "classification"
    branch: Branch = "attack"

    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def target(self, labels: Labels) -> tuple[torch.Tensor, torch.Tensor]:
        """(target, mask of examples that have one)."""
        raise NotImplementedError

    def forward(self, features: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, output: torch.Tensor, labels: Labels) -> torch.Tensor:
        raise NotImplementedError

    def scores(self, outputs: dict[str, torch.Tensor], labels: Labels) -> list[Score]:
        """This head's metrics on examples with these labels; ``outputs`` are every head's
        outputs (a regressor may score the value of the attack another head predicts)."""
        return []

    def answer(self, outputs: dict[str, torch.Tensor]) -> list[dict]:
        """Per example, the JSON fields ``attribkit attribute`` reports for this head."""
        raise NotImplementedError

    def shown(self, answer: dict) -> dict[str, str]:
        """Column title → text for ``attribkit attribute``'s table, from one answer."""
        return {self.name: str(answer.get(self.name, "–"))}

    def report_figures(self, outputs: dict[str, torch.Tensor], labels: Labels, spaces: LabelSpaces) -> list:
        """This head's section of ``attribkit evaluate``'s report: a list of
        :class:`attribkit.figures.Figure` drawn from every head's outputs on the
        evaluated split and its labels."""
        return []


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` where ``mask`` holds, 0 (still part of the graph) where it never does.

    Written so that the host never waits for the device: a boolean index
    (``values[mask]``) or an ``if mask.any()`` asks a GPU how many are true,
    once per head and training step. Where ``mask`` is false, ``values`` must
    still be finite (replace a NaN target before computing them): 0 × NaN
    would reach the gradient."""
    weight = mask.to(values.dtype)
    return (values * weight).sum() / weight.sum().clamp_min(1)


def predicted_class(output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(probability, index) of each example's most likely class."""
    return output.softmax(1).max(1)


class ClassificationHead(Head):
    """One class per entry of ``classes``, read from one branch; its target is the
    label column ``column`` (default: the head's name) unless a subclass says otherwise."""

    def __init__(self, name: str, classes: list[str], in_features: int, branch: Branch, column: str | None = None,
                 signature: bool = False):
        super().__init__(name)
        self.classes = list(classes)
        self.branch = branch
        self.column = column or name
        self.signature = signature
        self.fc = nn.Linear(in_features, len(self.classes))

    def target(self, labels):
        y = labels.column(self.column)
        return y, torch.ones_like(y, dtype=torch.bool)

    def forward(self, features, outputs):
        return self.fc(features[self.branch])

    def loss(self, output, labels):
        y, mask = self.target(labels)
        return masked_mean(F.cross_entropy(output, torch.where(mask, y, 0), reduction="none"), mask)

    def correct(self, output: torch.Tensor, labels: Labels) -> torch.Tensor:
        target, mask = self.target(labels)
        return (predicted_class(output)[1] == target) & mask  # a class never trained on counts as wrong

    def scores(self, outputs, labels):
        return [Score(f"{self.name}_accuracy", self.correct(outputs[self.name], labels).float(), "accuracy",
                      f"{self.name.capitalize()} accuracy (%)", f"{self.name} acc (%)", signature=self.signature)]

    def answer(self, outputs):
        p, idx = predicted_class(outputs[self.name])
        return [{self.name: self.classes[i], f"{self.name}_probability": round(float(q), 4)}
                for i, q in zip(idx.tolist(), p.tolist())]

    def shown(self, answer):
        return {self.name: f"{answer[self.name]} ({answer[f'{self.name}_probability']:.0%})"}

    def report_figures(self, outputs, labels, spaces):
        from .. import figures

        target, mask = self.target(labels)
        predicted = outputs[self.name].argmax(1)
        found = []
        png = figures.confusion(target[mask], predicted[mask], self.classes, f"{self.name} attribution")
        if png:
            found.append(figures.Figure(f"confusion_{self.name}", f"{self.name}: confusion matrix",
                                        f"true {self.name} (rows) against attributed (columns)", png))
        correct = ((predicted == target) & mask).float()
        found.append(figures.Figure(
            f"cells_{self.name}", f"{self.name}: accuracy per attack × victim",
            f"accuracy (%) of the {self.name} head in each cell of the evaluated split",
            figures.cell_heatmap(figures.per_cell(correct, labels, spaces), f"{self.name} accuracy (%)", True)))
        return found


class RegressionHead(Head):
    """One number per example, read from one branch: the label column ``column``
    (a shard's ``linf``, ``l2``, …), learnt standardised by ``mean`` and ``std``
    and answered in the column's own units."""

    task = "regression"

    def __init__(self, name: str, column: str, in_features: int, branch: Branch, mean: float, std: float,
                 unit: str = "", signature: bool = False):
        super().__init__(name)
        self.column, self.branch, self.unit, self.signature = column, branch, unit, signature
        self.fc = nn.Linear(in_features, 1)
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std) if std > 0 else 1.0))

    def target(self, labels):
        y = labels.column(self.column).float()
        return y, torch.isfinite(y)

    def forward(self, features, outputs):
        return self.fc(features[self.branch]).squeeze(1)

    def values(self, output: torch.Tensor) -> torch.Tensor:
        return output * self.std + self.mean

    def loss(self, output, labels):
        y, mask = self.target(labels)
        z = torch.where(mask, (y - self.mean) / self.std, 0)
        return masked_mean((output.float() - z) ** 2, mask)

    def scores(self, outputs, labels):
        y, mask = self.target(labels)
        error = (self.values(outputs[self.name]) - y).where(mask, float("nan"))
        return [Score(f"{self.name}_rmse", error, "rmse", f"{self.name} RMSE", f"{self.name} RMSE",
                      signature=self.signature)]

    def answer(self, outputs):
        return [{self.name: round(float(v), 6)} for v in self.values(outputs[self.name]).tolist()]

    def shown(self, answer):
        return {self.name: f"{answer[self.name]:.4g}{self.unit}"}
