"""Uncertainty-weighted multi-task loss (paper §3.4, eq. 14; Kendall et al. 2018)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn


class UncertaintyWeighting(nn.Module):
    """One learnable log σ per task:

        regression      1/(2σ²)·L + log σ
        classification  1/σ²·L   + log σ

    A noisy task raises its σ and lowers its weight; the log σ term keeps σ
    from growing without bound. ``mode="sum"`` is the plain sum (Table 13).
    """

    def __init__(self, tasks: dict[str, str], mode: Literal["uncertainty", "sum"] = "uncertainty"):
        super().__init__()
        self.mode = mode
        self.tasks = dict(tasks)  # name → "classification" | "regression"
        self.log_sigma = nn.ParameterDict({name: nn.Parameter(torch.zeros(())) for name in tasks})

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.mode == "sum":
            return sum(losses.values())
        total = 0.0
        for name, loss in losses.items():
            s = self.log_sigma[name]
            scale = 0.5 if self.tasks[name] == "regression" else 1.0
            total = total + scale * torch.exp(-2 * s) * loss + s
        return total

    def sigmas(self) -> dict[str, float]:
        return {k: float(torch.exp(v.detach())) for k, v in self.log_sigma.items()}
