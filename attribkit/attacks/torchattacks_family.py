"""Attacks that torchattacks implements as we want them, called once per grid point."""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch


def per_point(make: Callable[[torch.nn.Module, Mapping[str, float], Mapping], Callable]) -> Callable:
    """An attack ``run`` from ``make(model, point, settings) -> torchattacks.Attack``."""

    def run(model, images: torch.Tensor, labels: torch.Tensor, grid: Sequence[Mapping[str, float]],
            settings: Mapping) -> list[torch.Tensor]:
        return [make(model, point, settings)(images, labels).detach() for point in grid]

    return run


def bim(model, point, s):
    import torchattacks

    return torchattacks.BIM(model, eps=point["eps"], alpha=s["alpha"], steps=int(s["steps"]))


def mifgsm(model, point, s):
    import torchattacks

    return torchattacks.MIFGSM(model, eps=point["eps"], alpha=s["alpha"], steps=int(s["steps"]), decay=s["decay"])


def deepfool(model, point, s):
    import torchattacks

    return torchattacks.DeepFool(model, steps=int(s["steps"]), overshoot=point["overshoot"])


def square(model, point, s):
    import torchattacks

    return torchattacks.Square(model, norm="Linf", eps=point["eps"], n_queries=int(s["n_queries"]),
                               p_init=s["p_init"], seed=int(s["seed"]))
