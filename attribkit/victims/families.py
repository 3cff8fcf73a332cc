"""Width-reduced members of the paper's five victim families, built with timm.

Full-width ImageNet architectures are needlessly slow on 28-px digits and on
CPU; a width multiplier keeps the topology (what attribution must tell apart)
while making each victim train in about a minute.
"""

from __future__ import annotations

import timm
import torch
from timm.models.inception_v3 import InceptionV3
from timm.models.vgg import VGG, cfgs as vgg_cfgs
from torch import nn


def _scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


def resnet(timm_name: str, num_classes: int, in_chans: int, width: float) -> nn.Module:
    return timm.create_model(
        timm_name, pretrained=False, num_classes=num_classes, in_chans=in_chans,
        channels=tuple(_scaled(c, width) for c in (64, 128, 256, 512)), stem_width=_scaled(64, width),
    )


def vgg(timm_name: str, num_classes: int, in_chans: int, width: float) -> nn.Module:
    # timm's create_model fixes cfg per name, so the VGG class is used directly.
    cfg = [c if c == "M" else _scaled(c, width) for c in vgg_cfgs[timm_name]]
    # The 4096-wide 7×7 ConvMlp dominates the cost at 32 px; shrink it 4× more than the convs.
    return VGG(cfg=cfg, num_classes=num_classes, in_chans=in_chans, mlp_ratio=width / 4)


def inception_v3(num_classes: int, in_chans: int, width: float) -> nn.Module:
    """timm's InceptionV3 with every conv width scaled.

    Its widths are hard-coded, but each block's input width is the sum of its
    predecessor's branch widths (all multiples of 16), so scaling every conv,
    norm and the classifier input by the same factor stays consistent.
    """
    net = InceptionV3(num_classes=num_classes, in_chans=in_chans)
    if width == 1.0:
        return net
    for name, module in list(net.named_modules()):
        if isinstance(module, nn.Conv2d):
            new = nn.Conv2d(
                in_chans if module.in_channels == in_chans and name.startswith("Conv2d_1a") else _scaled(module.in_channels, width),
                _scaled(module.out_channels, width), module.kernel_size, module.stride, module.padding,
                bias=module.bias is not None,
            )
        elif isinstance(module, nn.BatchNorm2d):
            _resize_norm(module, _scaled(module.num_features, width))  # in place: keeps timm's fused activation
            continue
        elif isinstance(module, nn.Linear):
            new = nn.Linear(_scaled(module.in_features, width), module.out_features)
        else:
            continue
        parent_name, _, attr = name.rpartition(".")
        setattr(net.get_submodule(parent_name) if parent_name else net, attr, new)
    net.num_features = net.head_hidden_size = _scaled(2048, width)
    return net


def _resize_norm(norm: nn.BatchNorm2d, features: int) -> None:
    norm.num_features = features
    norm.weight = nn.Parameter(torch.ones(features))
    norm.bias = nn.Parameter(torch.zeros(features))
    norm.running_mean = torch.zeros(features)
    norm.running_var = torch.ones(features)
