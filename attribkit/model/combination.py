"""The single-label baseline's head: one class per attack × victim × hyperparameter
combination (the paper's pre-experiment, refs [21, 22])."""

from __future__ import annotations

import math

import torch

from .heads import ClassificationHead


def combination_key(attack: int, victim: int, hp_row: list[float], with_values: bool = True) -> str:
    """"attack|victim|values"; without values, the paper's attack+victim classes (Table 2)."""
    values = ",".join("-" if math.isnan(v) else f"{v:g}" for v in hp_row) if with_values else ""
    return f"{attack}|{victim}|{values}"


def combinations_of(labels: dict[str, torch.Tensor], with_values: bool = True) -> list[str]:
    keys = {combination_key(a, v, h, with_values) for a, v, h in zip(labels["attack"].tolist(),
                                                                    labels["victim"].tolist(), labels["hp"].tolist())}
    return sorted(keys)


class CombinationHead(ClassificationHead):
    def __init__(self, combinations: list[str], in_features: int):
        super().__init__("combination", combinations, in_features, "attack")
        self.index = {k: i for i, k in enumerate(combinations)}
        self.with_values = not combinations[0].endswith("|")

    def target(self, batch):
        keys = [combination_key(a, v, h, self.with_values)
                for a, v, h in zip(batch["attack"].tolist(), batch["victim"].tolist(), batch["hp"].tolist())]
        y = torch.tensor([self.index.get(k, -1) for k in keys], dtype=torch.long)
        return y.clamp_min(0), y >= 0  # a combination never seen in training cannot be predicted

    def decode(self, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(attack index, victim index, hp display values (B, n_hp), probability)."""
        prob, idx = output.softmax(1).max(1)
        parts = [self.classes[i].split("|") for i in idx.tolist()]
        attack = torch.tensor([int(p[0]) for p in parts])
        victim = torch.tensor([int(p[1]) for p in parts])
        hp = torch.tensor([[float("nan") if v in ("-", "") else float(v) for v in p[2].split(",")] for p in parts])
        return attack, victim, hp, prob
