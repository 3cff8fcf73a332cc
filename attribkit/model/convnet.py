"""A plain convolutional backbone for small images, shaped like a timm model.

Three stages of two 3×3 convolutions with BatchNorm and ReLU, the second and
third behind a 2×2 max-pool: at width 1 the channels are 64, 128, 128, the
plain-CNN baseline's layers with one more stage for MTAA's task branches.
Every convolution of the first stage runs at the image's full resolution —
the perturbation's pixel-level detail is what attribution reads, and a
ResNet's stride-4 stem averages it away on 28-px digits. ``feature_info``,
top-level stage children and ``forward_features`` are what
:class:`attribkit.model.backbone.StagedBackbone` cuts a timm model by.
"""

from __future__ import annotations

import torch
from torch import nn

CHANNELS = (64, 128, 128)


def conv_pair(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class ConvNet(nn.Module):
    def __init__(self, in_chans: int = 3, width: float = 1.0, num_classes: int = 0, **_timm_kwargs):
        super().__init__()
        a, b, c = (max(8, int(ch * width)) for ch in CHANNELS)
        self.stem = nn.Sequential(*conv_pair(in_chans, a))
        self.stage1 = nn.Sequential(nn.MaxPool2d(2), *conv_pair(a, b))
        self.stage2 = nn.Sequential(nn.MaxPool2d(2), *conv_pair(b, c))
        self.feature_info = [{"module": "stem", "num_chs": a, "reduction": 1},
                             {"module": "stage1", "num_chs": b, "reduction": 2},
                             {"module": "stage2", "num_chs": c, "reduction": 4}]
        self.pretrained_cfg = {"first_conv": "stem.0"}
        self.num_features = c

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage2(self.stage1(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).mean(dim=(2, 3))
