from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F


def fgsm(model, images: torch.Tensor, labels: torch.Tensor, grid: Sequence[Mapping[str, float]],
         settings: Mapping) -> list[torch.Tensor]:
    """FGSM at every ε from ONE gradient.

    The sign of the gradient does not depend on ε, so this equals calling
    torchattacks.FGSM once per ε bit for bit (tested), at the cost of one.
    """
    x = images.clone().detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), labels)  # torchattacks' FGSM uses the mean loss
    step = torch.autograd.grad(loss, x)[0].sign()
    return [torch.clamp(images + point["eps"] * step, min=0, max=1).detach() for point in grid]
