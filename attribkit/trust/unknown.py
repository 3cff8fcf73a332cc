"""Unknown-attack scores: how unlike the run's known attacks an image is.

Each method is fitted on the training split's features (what the heads read,
see :func:`attribkit.training.models.predict_with_features`) and their attack
labels, and scores an image: higher means less like anything known. The
threshold that turns a score into a decision is chosen elsewhere, on the
validation split (:mod:`attribkit.trust.fitted`). docs/trust.md has the
measurements behind the default.
"""

from __future__ import annotations

import torch

from ..errors import AttribkitError

SHRINKAGE = 0.01  # of the covariance towards its mean variance: features outnumber a small split's examples


def _mahalanobis_fit(features: torch.Tensor, classes: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each class's mean and one covariance shared by all (Lee et al., NeurIPS 2018), as its inverse."""
    x = features.double()
    found = torch.unique(classes)
    means = torch.stack([x[classes == c].mean(0) for c in found])
    centred = x - means[torch.searchsorted(found, classes)]
    cov = centred.T @ centred / max(1, len(x) - len(found))
    scale = cov.diagonal().mean().clamp_min(1e-12)
    cov = (1 - SHRINKAGE) * cov + SHRINKAGE * scale * torch.eye(len(cov), dtype=cov.dtype)
    return {"means": means, "precision": torch.linalg.inv(cov)}


def _mahalanobis_score(state: dict[str, torch.Tensor], features: torch.Tensor, outputs) -> torch.Tensor:
    """Squared distance to the nearest class mean."""
    means, precision = state["means"], state["precision"]
    x = features.double()
    # (x - m)ᵀ P (x - m) = xᵀPx − 2 xᵀPm + mᵀPm, for every class at once
    xp = x @ precision
    near = (xp * x).sum(1)[:, None] - 2 * xp @ means.T + ((means @ precision) * means).sum(1)[None]
    return near.min(1).values.float()


KNN_BANK = 20_000  # training examples kept: enough to cover every cell, small enough to store with the run
KNN_K = 10


def _knn_fit(features: torch.Tensor, classes: torch.Tensor) -> dict[str, torch.Tensor]:
    """A seeded sample of the training features, on the unit sphere (Sun et al., ICML 2022)."""
    keep = torch.randperm(len(features), generator=torch.Generator().manual_seed(0))[:KNN_BANK]
    return {"bank": torch.nn.functional.normalize(features[torch.sort(keep).values].float(), dim=1)}


def _knn_score(state: dict[str, torch.Tensor], features: torch.Tensor, outputs) -> torch.Tensor:
    """1 − cosine similarity to the k-th nearest training example."""
    bank = state["bank"]
    k = min(KNN_K, len(bank))
    query = torch.nn.functional.normalize(features.float(), dim=1)
    return torch.cat([1 - (query[i:i + 1024] @ bank.T).topk(k, 1).values[:, -1]
                      for i in range(0, len(query), 1024)]) if len(query) else torch.zeros(0)


def _no_state(features: torch.Tensor | None, classes: torch.Tensor) -> dict[str, torch.Tensor]:
    return {}


def _msp_score(state, features, outputs) -> torch.Tensor:
    """1 − the calibrated probability of the most likely attack (Hendrycks & Gimpel, ICLR 2017)."""
    return 1 - outputs.softmax(1).amax(1)


def _energy_score(state, features, outputs) -> torch.Tensor:
    """Minus the log-sum-exp of the calibrated attack logits (Liu et al., NeurIPS 2020)."""
    return -torch.logsumexp(outputs.float(), 1)


# name → (fit on (training features, attack labels), score (state, features, attack logits))
METHODS = {
    "mahalanobis": (_mahalanobis_fit, _mahalanobis_score),
    "knn": (_knn_fit, _knn_score),
    "msp": (_no_state, _msp_score),
    "energy": (_no_state, _energy_score),
}
DEFAULT_METHOD = "mahalanobis"


def method(name: str):
    if name not in METHODS:
        raise AttribkitError(f"unknown-attack score {name!r} is not one of {', '.join(METHODS)}")
    return METHODS[name]


def fit_scorer(name: str, features: torch.Tensor, classes: torch.Tensor) -> dict[str, torch.Tensor]:
    return method(name)[0](features, classes)


STATE = {"mahalanobis": ("means", "precision"), "knn": ("bank",), "msp": (), "energy": ()}  # what each keeps


def check_state(name: str, state: dict[str, torch.Tensor], where: str) -> None:
    """A scorer's tensors as read back: the ones its method needs, of consistent shapes."""
    missing = [k for k in STATE[name] if k not in state]
    if missing:
        raise AttribkitError(f"{where}: the {name} scorer lacks its {missing[0]!r} tensor")
    if any(state[k].ndim != 2 or not state[k].is_floating_point() for k in STATE[name]):
        raise AttribkitError(f"{where}: the {name} scorer's tensors must be 2-D float matrices")
    if any(not bool(torch.isfinite(state[k]).all()) for k in STATE[name]):
        raise AttribkitError(f"{where}: the {name} scorer's tensors hold NaN or infinite values")
    dims = {k: state[k].shape[-1] for k in STATE[name]}
    square = "precision" not in state or state["precision"].shape[0] == state["precision"].shape[1]
    if len(set(dims.values())) > 1 or not square:
        raise AttribkitError(f"{where}: the {name} scorer's tensors do not fit together "
                             f"({', '.join(f'{k} {tuple(state[k].shape)}' for k in STATE[name])})")


def unknown_scores(name: str, state: dict[str, torch.Tensor], features: torch.Tensor,
                   attack_logits: torch.Tensor) -> torch.Tensor:
    """(N,) scores, higher = less like the known attacks; ``attack_logits`` already calibrated."""
    expected = next((state[k].shape[-1] for k in STATE.get(name, ()) if k in state), None)
    if expected is not None and features.shape[-1] != expected:
        raise AttribkitError(f"the {name} scorer was fitted on {expected} features per image, the model gives "
                             f"{features.shape[-1]}: the run's trust.safetensors belongs to another model")
    return method(name)[1](state, features, attack_logits)
