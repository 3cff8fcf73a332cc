"""The perturbation extraction module (paper §3.3.2, Table 6, eq. 4).

An auto-encoder on the backbone's stride-2 feature map learns
G(R(fm_adv)) ≈ fm_adv − fm_clean. Attribution needs only R(fm_adv): the
clean image enters the loss, never the prediction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PerturbationAutoEncoder(nn.Module):
    def __init__(self, channels: int, width: float = 1.0):
        super().__init__()
        wide, narrow = max(8, int(512 * width)), max(8, int(256 * width))
        # Table 6; on a 14×14 map (28-px MNIST) the sizes are exactly the paper's: 8, 4, 3, 2 → 5, 11, 14
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, wide, 2, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(2, stride=2),
            nn.Conv2d(wide, narrow, 2, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(2, stride=1),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(narrow, wide, 3, stride=2), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(wide, narrow, 5, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(narrow, channels, 6, stride=1, padding=1),
        )
        self.latent_channels = narrow

    def encode(self, fm: torch.Tensor) -> torch.Tensor:
        if min(fm.shape[-2:]) < 8:  # the encoder's four reductions need room
            fm = F.interpolate(fm, size=(14, 14), mode="bilinear", align_corners=False)
        return self.encoder(fm)

    def decode(self, latent: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        out = self.decoder(latent)
        return out if out.shape[-2:] == size else F.interpolate(out, size=size, mode="bilinear", align_corners=False)

    def loss(self, latent: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Eq. 4: reconstruct the feature-level perturbation fm_adv − fm_clean (given detached,
        so the backbone cannot lower the loss by shrinking the perturbation)."""
        return F.mse_loss(self.decode(latent, target.shape[-2:]), target)
