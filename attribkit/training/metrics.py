"""Attribution metrics in the paper's units: accuracy, and RMSE in ε×255 / κ."""

from __future__ import annotations

import math

import torch

from .. import figures
from ..model.heads import attributed_value
from .data import AttributionData, quantize
from .models import Member, heads_of, predict, signatures


def _rmse(pred: torch.Tensor, truth: torch.Tensor) -> float | None:
    ok = torch.isfinite(truth) & torch.isfinite(pred)
    return round(math.sqrt(float(((pred[ok] - truth[ok]) ** 2).mean())), 4) if ok.any() else None


def _accuracy(pred: torch.Tensor, truth: torch.Tensor) -> float | None:
    return round(float((pred == truth).float().mean()), 6) if len(truth) else None


def evaluate_members(members: dict[str, Member], data: AttributionData, quantized: bool,
                     outputs: dict[str, torch.Tensor] | None = None) -> dict:
    """Metrics of the members on ``data``; ``outputs`` are their predictions if already made."""
    if outputs is None:
        outputs = predict(members, quantize(data.images) if quantized else data.images)
    sig = signatures(members, outputs)
    ls = data.label_spaces
    truth_hp = attributed_value(data.labels["hp"])
    result: dict = {"examples": len(data)}
    for name in ("attack", "victim"):
        if name in sig:
            result[f"{name}_accuracy"] = _accuracy(sig[name], data.labels[name])
    if "hp" in sig:
        result["hp_rmse"] = _rmse(sig["hp"], truth_hp)
        result["hp_rmse_per_attack"] = {a: _rmse(sig["hp"][data.labels["attack"] == i], truth_hp[data.labels["attack"] == i])
                                        for i, a in enumerate(ls["attack"])}
    # every other classification head (single-label's combination, third-party plugins): its own target
    for name, head in heads_of(members).items():
        if name in ("attack", "victim", "hyperparameter") or head.task != "classification":
            continue
        target, mask = head.target(data.batch(torch.arange(len(data))))
        correct = (outputs[name].argmax(1) == target) & mask
        result[f"{name}_accuracy"] = round(float(correct.float().mean()), 6)  # unseen classes count as wrong
        sig[f"{name}_correct"] = correct
    result["_signatures"] = sig
    return result


def cross_table(sig: dict, data: AttributionData, metric: str) -> dict[str, dict[str, float | None]]:
    """Per attack × per victim, like the paper's Tables 2–5."""
    name = metric.removesuffix("_accuracy")
    if f"{name}_correct" in sig:
        values, rmse = sig[f"{name}_correct"].float(), False
    elif metric == "hp_rmse" and "hp" in sig:
        values, rmse = sig["hp"] - attributed_value(data.labels["hp"]), True
    elif metric != "hp_rmse" and name in sig:
        values, rmse = (sig[name] == data.labels[name]).float(), False
    else:  # the model has no such signature
        values, rmse = torch.full((len(data),), float("nan")), False
    table = figures.per_cell(values, data.labels, data.label_spaces, rmse)
    return {a: {v: None if x is None else round(x, 4 if rmse else 6) for v, x in row.items()} for a, row in table.items()}
