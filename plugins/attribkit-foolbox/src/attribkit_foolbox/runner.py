"""Calling a foolbox attack the way attribkit expects: one batch per grid point."""

from __future__ import annotations

import os
from typing import Callable, Mapping, Sequence

import torch

Make = Callable[[object, Mapping[str, float], Mapping], tuple[object, float | None]]


def _foolbox():
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")  # foolbox imports GitPython, which wants git
    import foolbox

    return foolbox


def foolbox_attack(make: Make) -> Callable:
    """An attribkit attack ``run`` from ``make(foolbox, point, settings) -> (attack, epsilon)``.

    ``epsilon`` is the bound of a fixed-ε attack, or None for a minimisation
    attack (C&W, DeepFool, Boundary), which foolbox runs unbounded.
    """

    def run(model, images: torch.Tensor, labels: torch.Tensor, grid: Sequence[Mapping[str, float]],
            settings: Mapping) -> list[torch.Tensor]:
        fb = _foolbox()
        # attribkit chooses the device: the model and the batch already live on it
        fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=images.device)
        out = []
        for point in grid:
            attack, epsilon = make(fb, point, settings)
            _, clipped, _ = attack(fmodel, images, labels.to(images.device), epsilons=epsilon)
            out.append(black_as_clean(images, clipped.detach().clamp(0, 1)))
        return out

    return run


def black_as_clean(images: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """foolbox's C&W returns an all-black image where it found nothing (its
    "best" starts from zeros), and a black image may well be misclassified,
    even with margin κ. Hand those back as the clean image, which the victim
    classifies correctly (attribkit only attacks such images): attribkit's
    success check then records them as failed, never as adversarial. Other
    failures (a PGD that did not flip the label) are real attack outputs and
    stay as they are."""
    black = (adv.flatten(1).amax(1) == 0) & (images.flatten(1).amax(1) > 0)
    return torch.where(black.view(-1, 1, 1, 1), images, adv)
