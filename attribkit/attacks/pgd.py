from __future__ import annotations

from typing import Mapping, Sequence

import torch


def pgd(model, images: torch.Tensor, labels: torch.Tensor, grid: Sequence[Mapping[str, float]],
        settings: Mapping) -> list[torch.Tensor]:
    """L∞ PGD through torchattacks, one call per ε (its reference semantics:
    random start, step α, projection onto the ε-ball and [0, 1])."""
    import torchattacks

    out = []
    for point in grid:
        attack = torchattacks.PGD(model, eps=point["eps"], alpha=settings["alpha"], steps=int(settings["steps"]),
                                  random_start=bool(settings["random_start"]))
        out.append(attack(images, labels).detach())
    return out
