from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import DataError


@dataclass(frozen=True)
class Split:
    """Indices of clean images; the two sets never share an image."""

    train: torch.Tensor
    test: torch.Tensor


def split_dataset(labels: torch.Tensor, test_fraction: float, seed: int) -> Split:
    """Stratified, seeded split of clean images, made before any attack runs,
    so no clean image can reach both splits of the adversarial data set."""
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    gen = torch.Generator().manual_seed(seed)
    train, test = [], []
    for cls in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == cls).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    train_idx, test_idx = torch.cat(train).sort().values, torch.cat(test).sort().values
    if len(train_idx) == 0 or len(test_idx) == 0:
        raise DataError(f"split with test_fraction={test_fraction} leaves an empty split ({len(labels)} images)")
    return Split(train_idx, test_idx)
