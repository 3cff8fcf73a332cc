from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class Victim(nn.Module):
    """A classifier that takes images in [0, 1] at the data set's size.

    Resizing and normalization live inside the module so that attacks, which
    work in pixel space, never need to know about them (torchattacks'
    ``set_normalization_used`` is then unnecessary).
    """

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float], resize_to: int | None = None):
        super().__init__()
        self.net = net
        self.resize_to = resize_to
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.resize_to and x.shape[-1] != self.resize_to:
            x = F.interpolate(x, size=(self.resize_to, self.resize_to), mode="bilinear", align_corners=False)
        return self.net((x - self.mean) / self.std)

    def freeze(self) -> "Victim":
        """Ready to attack: eval mode, no parameter gradients, channels-last weights.

        Attacks only need input gradients. Channels-last is oneDNN's fast path
        on CPU: forward+backward 1.3-1.6x faster on the width-0.25 victims
        (docs/performance.md); on CUDA it is what cuDNN prefers too.
        """
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self.to(memory_format=torch.channels_last)
