"""The plain-CNN baseline: the simple thing a reviewer tries first.

Four 3×3 convolutions (64, 64, 128, 128 channels) with BatchNorm and ReLU,
a 2×2 max-pool after the second and the fourth, a global average pool, and
the head on top (about 0.26 M parameters before the head). It sees the
image at full resolution, with no stem to average the perturbation away.
``attribkit train --model cnn`` trains one per signature, like single-task.
"""

from __future__ import annotations

import torch
from torch import nn

from .convnet import conv_pair
from .heads import HeadContext
from .net import HeadedNet

CHANNELS = (64, 128)  # each a pair of convolutions: 64, 64, 128, 128


class PlainCNN(HeadedNet):
    def __init__(self, in_chans: int, head_builders: list, context: HeadContext):
        super().__init__()
        a, b = CHANNELS
        self.body = nn.Sequential(*conv_pair(in_chans, a), nn.MaxPool2d(2), *conv_pair(a, b), nn.MaxPool2d(2))
        self._build_heads(head_builders, context, {"attack": b, "victim": b})

    def features(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        pooled = self.body(x).mean(dim=(2, 3))
        return {"attack": pooled, "victim": pooled}, {}
