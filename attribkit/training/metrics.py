"""Attribution metrics: every head's :class:`~attribkit.model.heads.Score`, as numbers and tables."""

from __future__ import annotations

import torch

from .. import figures
from ..model.heads import Score
from .data import AttributionData, quantize
from .models import Member, heads_of, predict


def scores_of(members: dict[str, Member], data: AttributionData, outputs: dict[str, torch.Tensor]) -> list[Score]:
    """Every head's scores on ``data``; a key scored twice (two members answering one signature) is kept once."""
    found: dict[str, Score] = {}
    for head in heads_of(members).values():
        for score in head.scores(outputs, data.labels):
            found.setdefault(score.key, score)
    return list(found.values())


def summarise(scores: list[Score], data: AttributionData) -> dict:
    """The metrics as metrics.json and evaluation.json hold them: each score's value, and per attack where asked."""
    result: dict = {"examples": len(data)}
    for score in scores:
        result[score.key] = score.value()
        if score.per_attack:
            result[f"{score.key}_per_attack"] = {a: score.value(data.labels.attack == i)
                                                 for i, a in enumerate(data.label_spaces.attacks)}
    return result


def signature_metrics(described: dict[str, dict]) -> list[tuple[str, bool]]:
    """(metric, higher is better) of every signature in ``described`` (key → ``Score.describe()``),
    accuracies first: the terms of Δ_MTL and the summary's columns, in an order that does not
    depend on which head came first."""
    found = [(k, d["kind"] == "accuracy") for k, d in described.items() if d["signature"]]
    return sorted(found, key=lambda t: (not t[1], t[0]))


def evaluate_members(members: dict[str, Member], data: AttributionData, quantized: bool,
                     outputs: dict[str, torch.Tensor] | None = None) -> dict:
    """Metrics of the members on ``data``; ``outputs`` are their predictions if already made."""
    if outputs is None:
        outputs = predict(members, quantize(data.images) if quantized else data.images)
    return summarise(scores_of(members, data, outputs), data)


def cross_table(score: Score, data: AttributionData) -> dict[str, dict[str, float | None]]:
    """Per attack × per victim, like the paper's Tables 2–5."""
    rmse = score.kind == "rmse"
    table = figures.per_cell(score.per_example, data.labels, data.label_spaces, rmse)
    return {a: {v: None if x is None else round(x, 4 if rmse else 6) for v, x in row.items()} for a, row in table.items()}
