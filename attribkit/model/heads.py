"""Task heads: the classification & regression module (paper §3.3.4).

A head reads one branch's features (and, for regression, the other heads'
outputs: eq. 7 joins the attack logits), knows its own target in a batch, its
loss, and how to state its answer. The trainer builds one head for every
registered head plugin that applies to the data set's label columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


def attributed_value(hp: torch.Tensor) -> torch.Tensor:
    """(B, n_hp) display values, NaN where an attack lacks the hyperparameter →
    (B,) the one value each example's attack was run with (NaN if none)."""
    return torch.nan_to_num(hp, nan=0.0).sum(1).where(torch.isfinite(hp).any(1), torch.tensor(float("nan")))


@dataclass
class HeadContext:
    """What a head plugin may need to build itself."""

    label_spaces: dict  # the data set manifest's label_spaces
    feature_dims: dict[str, int]  # branch name → feature width
    target_stats: dict[str, dict[str, float]] = field(default_factory=dict)  # hp → mean/std (display units)
    regression: str = "per-attack"  # or "single": the paper's one regressor on one scale
    attack_logits: bool = True  # eq. 7; the single-task baseline has no attack head to read

    @property
    def hyperparameters(self) -> list[str]:
        return list(self.label_spaces["hyperparameters"])


class Head(nn.Module):
    """Base class. ``task`` is "classification" or "regression"; ``branch``
    names the features it reads ("attack" or "victim")."""

    task = "classification"
    branch = "attack"

    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def target(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(target, mask of examples that have one)."""
        raise NotImplementedError

    def forward(self, features: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, output: torch.Tensor, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def answer(self, output: torch.Tensor, outputs: dict[str, torch.Tensor]) -> list[dict]:
        """Per-example answer, as shown by ``attribkit attribute``."""
        raise NotImplementedError

    def report_figures(self, outputs: dict[str, torch.Tensor], labels: dict[str, torch.Tensor],
                       label_spaces: dict) -> list:
        """This head's section of ``attribkit evaluate``'s report: a list of
        :class:`attribkit.figures.Figure`, drawn from every head's outputs on the
        evaluated split and its labels (the columns of ``AttributionData.labels``)."""
        return []


class ClassificationHead(Head):
    def __init__(self, name: str, classes: list[str], in_features: int, branch: str, column: str | None = None):
        super().__init__(name)
        self.classes = list(classes)
        self.branch = branch
        self.column = column or name
        self.fc = nn.Linear(in_features, len(self.classes))

    def target(self, batch):
        y = batch[self.column]
        return y, torch.ones_like(y, dtype=torch.bool)

    def forward(self, features, outputs):
        return self.fc(features[self.branch])

    def loss(self, output, batch):
        y, mask = self.target(batch)
        return F.cross_entropy(output[mask], y[mask]) if mask.any() else output.sum() * 0

    def report_figures(self, outputs, labels, label_spaces):
        from .. import figures

        target, mask = self.target(labels)
        predicted = outputs[self.name].argmax(1)
        correct = ((predicted == target) & mask).float()
        found = []
        png = figures.confusion(target[mask], predicted[mask], self.classes, f"{self.name} attribution")
        if png:
            found.append(figures.Figure(f"confusion_{self.name}", f"{self.name}: confusion matrix",
                                        f"true {self.name} (rows) against attributed (columns)", png))
        found.append(figures.Figure(
            f"cells_{self.name}", f"{self.name}: accuracy per attack × victim",
            f"accuracy (%) of the {self.name} head in each cell of the evaluated split",
            figures.cell_heatmap(figures.per_cell(correct, labels, label_spaces), f"{self.name} accuracy (%)", True)))
        return found

    def answer(self, output, outputs):
        prob = output.softmax(1)
        p, idx = prob.max(1)
        return [{self.name: self.classes[i], f"{self.name}_probability": round(float(q), 4)}
                for i, q in zip(idx.tolist(), p.tolist())]


class HyperparameterHead(Head):
    """Attack-conditioned hyperparameter regression (eq. 7–8).

    ``per-attack``: one output per (attack, hyperparameter) the data set
    declares, each trained only on that attack's examples (masked loss); the
    predicted attack's regressor answers. ``single``: the paper's one
    regressor with ε×255 and κ on one scale. Targets are standardised for
    the loss and answers are in display units.
    """

    task = "regression"
    branch = "attack"

    def __init__(self, context: HeadContext, name: str = "hyperparameter"):
        super().__init__(name)
        self.mode = context.regression
        self.hp_names = context.hyperparameters
        self.attacks = list(context.label_spaces["attack"])
        info = context.label_spaces["attack_info"]
        self.attack_hps = {a: [h for h in info[a]["hyperparameters"] if h in self.hp_names] for a in self.attacks}
        if self.mode == "per-attack":
            self.pairs = [(a, h) for a in self.attacks for h in self.attack_hps[a]]
        elif self.mode == "single":
            self.pairs = [("*", "*")]
        else:
            raise ValueError(f"regression must be 'per-attack' or 'single', got {self.mode!r}")
        self.uses_logits = context.attack_logits
        in_features = context.feature_dims[self.branch] + (len(self.attacks) if self.uses_logits else 0)
        self.fc = nn.Linear(in_features, len(self.pairs))
        stats = context.target_stats
        key = lambda h: "*" if self.mode == "single" else h
        self.register_buffer("mean", torch.tensor([stats[key(h)]["mean"] for _, h in self.pairs]))
        self.register_buffer("std", torch.tensor([stats[key(h)]["std"] for _, h in self.pairs]))

    def forward(self, features, outputs):
        x = features[self.branch]
        if self.uses_logits:
            x = torch.cat([x, outputs["attack"]], dim=1)
        return self.fc(x)

    def _truth(self, batch) -> torch.Tensor:
        """(B, pairs) display-unit targets, NaN where a pair does not apply."""
        hp = batch["hp"]  # (B, n_hp) in display units, NaN where the attack lacks it
        if self.mode == "single":
            return attributed_value(hp)[:, None]
        cols = []
        for attack, h in self.pairs:
            col = hp[:, self.hp_names.index(h)]
            cols.append(col.where(batch["attack"] == self.attacks.index(attack), torch.tensor(float("nan"))))
        return torch.stack(cols, 1)

    def target(self, batch):
        truth = self._truth(batch)
        return truth, torch.isfinite(truth)

    def loss(self, output, batch):
        truth, mask = self.target(batch)
        if not mask.any():
            return output.sum() * 0
        z = (truth - self.mean) / self.std
        return F.mse_loss(output[mask], z[mask])

    def values(self, output: torch.Tensor, attack: torch.Tensor) -> torch.Tensor:
        """(B,) display-unit value of the first hyperparameter of ``attack`` per example."""
        display = output * self.std + self.mean
        if self.mode == "single":
            return display[:, 0]
        column = torch.tensor([next((j for j, (a, _) in enumerate(self.pairs) if a == self.attacks[i]), -1)
                               for i in range(len(self.attacks))])
        picked = column[attack]
        out = display.gather(1, picked.clamp_min(0)[:, None]).squeeze(1)
        return out.where(picked >= 0, torch.tensor(float("nan")))

    def report_figures(self, outputs, labels, label_spaces):
        from .. import figures

        attack = outputs["attack"].argmax(1) if "attack" in outputs else torch.zeros(len(labels["attack"]), dtype=torch.long)
        truth = attributed_value(labels["hp"])
        error = self.values(outputs[self.name], attack) - truth
        points, units = {}, {}
        for i, name in enumerate(self.attacks):
            if not self.attack_hps[name]:
                continue
            info = label_spaces["hyperparameters"][self.attack_hps[name][0]]
            units[name] = f"{info.get('symbol', '')} {info.get('unit', '')}".strip()
            of_attack = labels["attack"] == i
            values = sorted(v for v in set(truth[of_attack].tolist()) if v == v)  # v == v: not NaN
            points[name] = [(v, float(error[of_attack & (truth == v)].pow(2).nanmean().sqrt()),
                             int((of_attack & (truth == v)).sum())) for v in values]
        return [
            figures.Figure(f"rmse_per_value_{self.name}", f"{self.name}: RMSE per true value",
                           "RMSE of the attributed value (attack predicted by the model) for each true value",
                           figures.rmse_per_value(points, units, "hyperparameter RMSE per true value")),
            figures.Figure(f"cells_{self.name}", f"{self.name}: RMSE per attack × victim",
                           "RMSE in display units (ε×255, κ) in each cell",
                           figures.cell_heatmap(figures.per_cell(error, labels, label_spaces, rmse=True),
                                                "hyperparameter RMSE", False)),
        ]

    def answer(self, output, outputs):
        attack = outputs["attack"].argmax(1) if "attack" in outputs else torch.zeros(len(output), dtype=torch.long)
        display = output * self.std + self.mean
        rows = []
        for i, a in enumerate(attack.tolist()):
            name = self.attacks[a]
            if self.mode == "single":  # one scale: the value belongs to the predicted attack's hyperparameter
                found = {self.attack_hps[name][0]: float(display[i, 0])} if self.attack_hps[name] else {}
            else:
                found = {h: float(display[i, j]) for j, (pa, h) in enumerate(self.pairs) if pa == name}
            rows.append({"hyperparameters": {h: round(v, 3) for h, v in found.items()}})
        return rows
