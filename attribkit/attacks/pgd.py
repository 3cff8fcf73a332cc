from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F


def pgd(model, images: torch.Tensor, labels: torch.Tensor, grid: Sequence[Mapping[str, float]],
        settings: Mapping, targeted: bool = False) -> list[torch.Tensor]:
    """L∞ PGD at every ε in one batch, with torchattacks.PGD's semantics
    (random start, step α, projection onto the ε-ball and [0, 1]).

    Each example carries its own ε. The loss is summed, not averaged, so an
    example's gradient does not depend on how many others share the batch;
    the random starts are drawn per ε in grid order, exactly as one
    torchattacks call per ε would draw them. The result equals torchattacks
    per ε bit for bit (tested). On a CPU this is no faster; on a GPU the
    larger batch is.

    ``targeted``: ``labels`` are target classes and the attack descends the
    loss towards them (torchattacks' targeted mode).
    """
    n = len(images)
    eps = torch.cat([torch.full((n,), float(p["eps"]), dtype=images.dtype, device=images.device)
                     for p in grid]).view(-1, 1, 1, 1)
    x = images.repeat(len(grid), 1, 1, 1)
    y = labels.repeat(len(grid))
    adv = x.clone()
    if settings["random_start"]:
        # drawn on the CPU (from the generator the caller seeded) and moved, so the random starts are
        # the same numbers whatever device attacks
        noise = torch.cat([torch.empty(images.shape, dtype=images.dtype).uniform_(-float(p["eps"]), float(p["eps"]))
                           for p in grid])
        if images.is_cuda:  # a copy from pageable memory makes the host wait for the GPU; from pinned it does not
            noise = noise.pin_memory()
        adv = torch.clamp(adv + noise.to(images.device, non_blocking=True), min=0, max=1)
    alpha = float(settings["alpha"])
    direction = -1.0 if targeted else 1.0
    for _ in range(int(settings["steps"])):
        adv.requires_grad_(True)
        loss = F.cross_entropy(model(adv), y, reduction="sum")
        grad = torch.autograd.grad(loss, adv)[0]
        adv = adv.detach() + direction * alpha * grad.sign()
        delta = torch.clamp(adv - x, min=-eps, max=eps)
        adv = torch.clamp(x + delta, min=0, max=1).detach()
    return list(adv.split(n))
