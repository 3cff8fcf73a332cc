"""A timm backbone cut at its feature stages.

The paper's adversarial-only extractor shares every stage but the last, and
gives each task branch its own copy of the last stage. timm's
``feature_info`` names the stage modules, so any timm model whose stages are
top-level children run in order (ResNet, ResNeXt, RegNet, …) can be cut the
same way, without subclassing.

``stem="stride1"`` is for small images (28-px MNIST): the first convolution
runs at stride 1 and a pooling layer between the stem and the first stage is
dropped, so the first stage sees every pixel. A timm stem reduces 4× before
the first stage, which averages a pixel-level perturbation away.
"""

from __future__ import annotations

import timm
import torch
from torch import nn

from ..errors import AttribkitError
from ..specs import BackboneSpec
from . import STEMS


class StagedBackbone(nn.Module):
    def __init__(self, spec: BackboneSpec, in_chans: int, image_size: int, width: float = 1.0, stem: str = "timm"):
        super().__init__()
        if spec.create is not None:
            net = spec.create(in_chans=in_chans, **spec.create_kwargs(width))
        else:
            net = timm.create_model(spec.timm_name, pretrained=False, in_chans=in_chans, num_classes=0,
                                    **spec.create_kwargs(width))
        info = [dict(i) for i in net.feature_info]
        children = dict(net.named_children())
        names = list(children)
        stage_names = [i["module"] for i in info]
        if len(info) < 3 or any(n not in children for n in stage_names):
            raise AttribkitError(f"backbone {spec.name!r}: model {spec.timm_name or spec.create!r} has no top-level feature "
                                 f"stages to split (feature_info modules: {stage_names})")
        if stem == "stride1":
            _stride1_stem(net, spec, names[names.index(stage_names[0]) + 1:names.index(stage_names[1])])
            children = dict(net.named_children())
        elif stem != "timm":
            raise AttribkitError(f"stem must be one of {', '.join(STEMS)}, got {stem!r}")
        last = names.index(stage_names[-1])
        self.trunk = nn.ModuleDict({n: children[n] for n in names[:last]})
        self.last_stage = children[stage_names[-1]]
        self.pe_tap, self.low_tap = stage_names[0], stage_names[1]
        self.channels = {"pe": info[0]["num_chs"], "low": info[1]["num_chs"], "last": info[-1]["num_chs"]}
        self._check(net, in_chans, image_size)

    @torch.no_grad()
    def _check(self, net, in_chans, image_size):
        # the cut must compute exactly what timm computes, or the split is wrong
        was_training = net.training
        net.eval()
        x = torch.rand(2, in_chans, image_size, image_size)
        ours = self.last_stage(self.forward(x)["shared"])
        if ours.shape != net.forward_features(x).shape or not torch.allclose(ours, net.forward_features(x), atol=1e-5):
            raise AttribkitError("backbone: running the stages in order does not reproduce forward_features")
        net.train(was_training)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        taps = {}
        for name, module in self.trunk.items():
            x = module(x)
            if name == self.pe_tap:
                taps["pe"] = x
            if name == self.low_tap:
                taps["low"] = x
        taps["shared"] = x
        return taps

    @torch.no_grad()
    def stem_features(self, x: torch.Tensor) -> torch.Tensor:
        """The perturbation extractor's feature map, with normalisation statistics
        frozen: a train-mode pass over clean images would pollute them."""
        was_training = self.training
        self.eval()
        for name, module in self.trunk.items():
            x = module(x)
            if name == self.pe_tap:
                break
        self.train(was_training)
        return x


def _stride1_stem(net: nn.Module, spec: BackboneSpec, between_stages: list[str]) -> None:
    """Stride 1 in the first convolution, and no pooling between the stem's
    output and the first stage (ResNet's max-pool)."""
    path = net.pretrained_cfg.get("first_conv") if hasattr(net, "pretrained_cfg") else None
    conv = net.get_submodule(path) if path else None
    if not isinstance(conv, nn.Conv2d):
        raise AttribkitError(f"backbone {spec.name!r}: timm does not name its first convolution, so it has no "
                             f"stride-1 stem; use --stem timm")
    conv.stride = (1, 1)
    for name in between_stages:
        if isinstance(getattr(net, name), (nn.MaxPool2d, nn.AvgPool2d)):
            setattr(net, name, nn.Identity())
