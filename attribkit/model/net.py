"""The attribution network: MTAA (Figure 5) and, with parts switched off, its baselines."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import StagedBackbone
from .heads import Head, HeadContext
from .perturbation import PerturbationAutoEncoder


@dataclass(frozen=True)
class Architecture:
    """Which parts of Figure 5 are on. All on is MTAA; the ablation (Table 13)
    and the baselines switch them off."""

    backbone: str = "resnet18"
    width: float = 0.25  # of the backbone; 1.0 is the paper's full width (slow on CPU)
    perturbation: bool = True  # the auto-encoder perturbation extractor
    task_specific: bool = True  # per-branch copies of the last stage
    fusion: bool = True  # high-low feature fusion in the attack branch
    ae_width: float = 0.125  # of Table 6's 512/256 channels
    input_scale: int = 1
    stem: str = "timm"  # or "stride1": see StagedBackbone
    pool: str = "avg"  # or "avg+max": each feature map's mean and its maximum reach the heads

    def to_dict(self) -> dict:
        return asdict(self)


class HeadedNet(nn.Module):
    """A feature extractor with task heads on top: the attribution network and the baselines.
    Subclasses give ``features`` (branch name → pooled features) and ``forward_train``."""

    def _build_heads(self, head_builders: list, context: HeadContext, feature_dims: dict[str, int]) -> None:
        context.feature_dims = feature_dims
        heads = [build(context) for build in head_builders]
        # classification heads first: regressors read the attack logits (eq. 7)
        self.heads = nn.ModuleDict({h.name: h for h in sorted(heads, key=lambda h: h.task != "classification")})

    def features(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features, _ = self.features(x)
        return self.run_heads(features)

    def forward_train(self, x: torch.Tensor, clean: torch.Tensor | None) -> tuple[dict, torch.Tensor | None]:
        """Outputs plus an auxiliary loss (None: the network has none)."""
        return self(x), None

    def run_heads(self, features) -> dict[str, torch.Tensor]:
        outputs: dict[str, torch.Tensor] = {}
        for name, head in self.heads.items():
            outputs[name] = head(features, outputs)
        return outputs

    def head_list(self) -> list[Head]:
        return list(self.heads.values())


class AttributionNet(HeadedNet):
    def __init__(self, arch: Architecture, backbone_spec, in_chans: int, image_size: int,
                 head_builders: list, context: HeadContext):
        super().__init__()
        self.arch = arch
        self.backbone = StagedBackbone(backbone_spec, in_chans, image_size * arch.input_scale, arch.width,
                                       stem=arch.stem)
        last = self.backbone.last_stage
        del self.backbone.last_stage  # it lives on in the branches
        self.branches = nn.ModuleDict(
            {"attack": last, "victim": copy.deepcopy(last)} if arch.task_specific else {"shared": last})
        ch = self.backbone.channels
        self.ae = PerturbationAutoEncoder(ch["pe"], arch.ae_width) if arch.perturbation else None
        pe_dim = self.ae.latent_channels if self.ae else 0
        k = 2 if arch.pool == "avg+max" else 1
        self._build_heads(head_builders, context, {"attack": k * (ch["last"] + (ch["low"] if arch.fusion else 0) + pe_dim),
                                                   "victim": k * (ch["last"] + pe_dim)})

    def upscale(self, x: torch.Tensor) -> torch.Tensor:
        # nearest-neighbour copies pixels: no perturbation detail is invented or lost,
        # but the backbone's 4× stem no longer averages it away on small images
        return x if self.arch.input_scale == 1 else F.interpolate(x, scale_factor=self.arch.input_scale, mode="nearest")

    def _pool(self, t: torch.Tensor) -> torch.Tensor:
        # the mean says how much of a pattern there is; the maximum, how strong it gets (an L∞ budget)
        if self.arch.pool == "avg+max":
            return torch.cat([t.mean(dim=(2, 3)), t.amax(dim=(2, 3))], dim=1)
        return t.mean(dim=(2, 3))

    def features(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        taps = self.backbone(self.upscale(x))
        pool = self._pool
        if self.arch.task_specific:
            high = {b: pool(self.branches[b](taps["shared"])) for b in ("attack", "victim")}
        else:
            shared = pool(self.branches["shared"](taps["shared"]))
            high = {"attack": shared, "victim": shared}
        extra = {"attack": [], "victim": []}
        if self.arch.fusion:
            extra["attack"].append(pool(taps["low"]))
        if self.ae is not None:
            taps["latent"] = self.ae.encode(taps["pe"])
            for b in extra:
                extra[b].append(pool(taps["latent"]))
        return {b: torch.cat([high[b], *extra[b]], dim=1) for b in high}, taps

    def forward_train(self, x: torch.Tensor, clean: torch.Tensor | None) -> tuple[dict, torch.Tensor | None]:
        """Outputs plus the perturbation loss (eq. 4), which needs the clean image."""
        features, taps = self.features(x)
        ae_loss = None
        if self.ae is not None and clean is not None:
            target = self.backbone.stem_features(self.upscale(x)) - self.backbone.stem_features(self.upscale(clean))
            ae_loss = self.ae.loss(taps["latent"], target)
        return self.run_heads(features), ae_loss
