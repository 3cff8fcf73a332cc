from __future__ import annotations

import torch


def logit_margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Best other logit minus the true-class logit: > 0 means misclassified,
    ≥ κ means a C&W attack with confidence κ succeeded."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return others.max(dim=1).values - true
