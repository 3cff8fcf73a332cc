"""The paper's three signatures as head plugins: attack and victim classification,
attack-conditioned hyperparameter regression (eq. 7–8); and single-label's one
class per attack × victim × value combination (the paper's pre-experiment, refs
[21, 22]). They register like any third-party head and the core never names them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from attribkit.hookspecs import hookimpl
from attribkit.model.heads import ClassificationHead, Head, HeadContext, Score, masked_mean, predicted_class
from attribkit.records import Labels, LabelSpaces
from attribkit.specs import HeadSpec

NAN = float("nan")


def attributed_value(hp: torch.Tensor) -> torch.Tensor:
    """(B, n_hp) display values, NaN where an attack lacks the hyperparameter →
    (B,) the one value each example's attack was run with (NaN if none)."""
    return torch.nan_to_num(hp, nan=0.0).sum(1).where(torch.isfinite(hp).any(1), NAN)


def hyperparameter_score(values: torch.Tensor, labels: Labels) -> Score:
    """RMSE of the attributed value against the value the example was made with, overall and per attack."""
    return Score("hp_rmse", values - attributed_value(labels.hp), "rmse", "Hyperparameter RMSE",
                 "hyperparameter RMSE", signature=True, per_attack=True)


def hyperparameter_answer(spaces: LabelSpaces, attack: int, value: float) -> dict:
    """The ``hyperparameters`` field of an answer: the value, shown in the attack's first hyperparameter."""
    names = spaces.hyperparameters_of(spaces.attacks[attack])
    if not names or not math.isfinite(value):
        return {}
    info = spaces.hyperparameters[names[0]]
    return {"hyperparameters": {names[0]: {"value": value, "unit": info.unit, "natural": value / info.scale,
                                           "text": info.text(value)}}}


def shown_hyperparameter(answer: dict) -> dict[str, str]:
    found = answer.get("hyperparameters", {})
    return {"hyperparameter": ", ".join(v["text"] for v in found.values())} if found else {}


class SignatureHead(ClassificationHead):
    """The attack or the victim: a signature, its classes the data set's."""

    def __init__(self, context: HeadContext, column: str):
        classes = context.labels.attacks if column == "attack" else context.labels.victims
        super().__init__(column, list(classes), context.feature_dims[column], column, signature=True)


class HyperparameterHead(Head):
    """Attack-conditioned hyperparameter regression (eq. 7–8).

    ``per-attack``: one output per (attack, hyperparameter) the data set
    declares, each trained only on that attack's examples (masked loss); the
    predicted attack's regressor answers. ``single``: the paper's one
    regressor with ε×255 and κ on one scale. Targets are standardised for
    the loss and answers are in display units. The attack is the one the
    ``attack`` head predicts (in another network for single-task and cnn).
    """

    task = "regression"
    branch = "attack"

    def __init__(self, context: HeadContext, name: str = "hyperparameter"):
        super().__init__(name)
        self.spaces = context.labels
        self.mode = context.regression
        self.hp_names = context.hyperparameters
        self.attacks = list(context.labels.attacks)
        self.attack_hps = {a: [h for h in context.labels.hyperparameters_of(a) if h in self.hp_names]
                           for a in self.attacks}
        if self.mode == "per-attack":
            self.pairs = [(a, h) for a in self.attacks for h in self.attack_hps[a]]
        else:
            self.pairs = [("*", "*")]
        self.uses_logits = context.joint and "attack" in context.heads  # eq. 7, when there is an attack head
        in_features = context.feature_dims[self.branch] + (len(self.attacks) if self.uses_logits else 0)
        self.fc = nn.Linear(in_features, len(self.pairs))
        stats = context.target_stats
        key = lambda h: "*" if self.mode == "single" else h
        self.register_buffer("mean", torch.tensor([stats[key(h)]["mean"] for _, h in self.pairs]))
        self.register_buffer("std", torch.tensor([stats[key(h)]["std"] for _, h in self.pairs]))
        # the output column answering each attack (-1: none); a buffer, so it lives where the attack indices do
        self.register_buffer("column_of_attack", torch.tensor(
            [next((j for j, (a, _) in enumerate(self.pairs) if a == attack), -1) for attack in self.attacks]),
            persistent=False)

    def forward(self, features, outputs):
        x = features[self.branch]
        if self.uses_logits:
            x = torch.cat([x, outputs["attack"]], dim=1)
        return self.fc(x)

    def _truth(self, labels: Labels) -> torch.Tensor:
        """(B, pairs) display-unit targets, NaN where a pair does not apply."""
        if self.mode == "single":
            return attributed_value(labels.hp)[:, None]
        cols = []
        for attack, h in self.pairs:
            col = labels.hp[:, self.hp_names.index(h)]
            cols.append(col.where(labels.attack == self.attacks.index(attack), NAN))
        return torch.stack(cols, 1)

    def target(self, labels):
        truth = self._truth(labels)
        return truth, torch.isfinite(truth)

    def loss(self, output, labels):
        truth, mask = self.target(labels)
        z = torch.where(mask, (truth - self.mean) / self.std, 0)
        return masked_mean((output.float() - z) ** 2, mask)

    def values(self, output: torch.Tensor, attack: torch.Tensor) -> torch.Tensor:
        """(B,) display-unit value of the first hyperparameter of ``attack`` per example."""
        display = output * self.std + self.mean
        if self.mode == "single":
            return display[:, 0]
        picked = self.column_of_attack[attack]
        out = display.gather(1, picked.clamp_min(0)[:, None]).squeeze(1)
        return out.where(picked >= 0, NAN)

    def _attack(self, outputs) -> torch.Tensor | None:
        return predicted_class(outputs["attack"])[1] if "attack" in outputs else None

    def scores(self, outputs, labels):
        attack = self._attack(outputs)
        if attack is None:
            attack = torch.zeros(len(labels), dtype=torch.long)
        return [hyperparameter_score(self.values(outputs[self.name], attack), labels)]

    def answer(self, outputs):
        attack = self._attack(outputs)
        if attack is None:  # nothing says which attack's hyperparameter the value would be
            return [{} for _ in range(len(outputs[self.name]))]
        values = self.values(outputs[self.name], attack)
        return [hyperparameter_answer(self.spaces, a, v) for a, v in zip(attack.tolist(), values.tolist())]

    def shown(self, answer):
        return shown_hyperparameter(answer)

    def report_figures(self, outputs, labels, spaces):
        from attribkit import figures

        attack = outputs["attack"].argmax(1) if "attack" in outputs else torch.zeros(len(labels), dtype=torch.long)
        truth = attributed_value(labels.hp)
        error = self.values(outputs[self.name], attack) - truth
        points, units = {}, {}
        for i, name in enumerate(self.attacks):
            if not self.attack_hps[name]:
                continue
            info = spaces.hyperparameters[self.attack_hps[name][0]]
            units[name] = f"{info.symbol} {info.unit}".strip()
            of_attack = labels.attack == i
            values = sorted(v for v in set(truth[of_attack].tolist()) if v == v)  # v == v: not NaN
            points[name] = [(v, float(error[of_attack & (truth == v)].pow(2).nanmean().sqrt()),
                             int((of_attack & (truth == v)).sum())) for v in values]
        return [
            figures.Figure(f"rmse_per_value_{self.name}", f"{self.name}: RMSE per true value",
                           "RMSE of the attributed value (attack predicted by the model) for each true value",
                           figures.rmse_per_value(points, units, "hyperparameter RMSE per true value")),
            figures.Figure(f"cells_{self.name}", f"{self.name}: RMSE per attack × victim",
                           "RMSE in display units (ε×255, κ) in each cell",
                           figures.cell_heatmap(figures.per_cell(error, labels, spaces, rmse=True),
                                                "hyperparameter RMSE", False)),
        ]


Combination = tuple[int, int, "tuple[float | None, ...] | None"]  # attack, victim, values (None: not part of the class)


def six_digits(values: torch.Tensor) -> torch.Tensor:
    """Values (float64) rounded to 6 significant digits, as %g shows them, on whatever device they are."""
    exponent = torch.floor(torch.log10(values.abs().clamp_min(1e-300)))
    scale = torch.pow(10.0, 5 - exponent)
    return torch.round(values * scale) / scale


def combination_of(attack: int, victim: int, hp_row: list[float], with_values: bool = True) -> Combination:
    """One example's class: values as the report shows them (%g), so equal-looking values are one class."""
    values = tuple(None if math.isnan(v) else float(f"{v:g}") for v in hp_row) if with_values else None
    return attack, victim, values


def _order(c: Combination) -> str:
    # the order classes have always had (and single-label's output units with it): "attack|victim|values"
    attack, victim, values = c
    return f"{attack}|{victim}|" + ("" if values is None else ",".join("-" if v is None else f"{v:g}" for v in values))


def combinations_of(labels: Labels, with_values: bool = True) -> list[Combination]:
    found = {combination_of(a, v, h, with_values)
             for a, v, h in zip(labels.attack.tolist(), labels.victim.tolist(), labels.hp.tolist())}
    return sorted(found, key=_order)


def fit_combinations(labels: Labels, spaces: LabelSpaces, config) -> list[list]:
    """The classes of single-label, as JSON: [attack, victim, values or null] for each combination in the
    training split."""
    return [[a, v, None if values is None else list(values)] for a, v, values in
            combinations_of(labels, config.label_values)]


def _from_state(entry) -> Combination:
    if isinstance(entry, str):  # a format-1 run kept each class as "attack|victim|values"
        attack, victim, values = entry.split("|")
        return int(attack), int(victim), tuple(None if v == "-" else float(v) for v in values.split(",")) if values else None
    attack, victim, values = entry
    return int(attack), int(victim), None if values is None else tuple(values)


class CombinationHead(ClassificationHead):
    """Single-label: one class per combination seen in training. It answers all three
    signatures by decoding its class, so it is scored and answered as they are."""

    def __init__(self, context: HeadContext):
        combinations = [_from_state(entry) for entry in context.state]
        n_hp = len(context.labels.hp_names)
        for attack, victim, values in combinations:
            if not (0 <= attack < len(context.labels.attacks) and 0 <= victim < len(context.labels.victims)) or (
                    values is not None and len(values) != n_hp):
                raise ValueError(f"single-label class {[attack, victim, values]} does not fit the label spaces")
        super().__init__("combination", [_order(c) for c in combinations], context.feature_dims["attack"], "attack")
        self.spaces = context.labels
        self.combinations = combinations
        self.with_values = combinations[0][2] is not None
        # each class as one row (attack, victim, values; NaN: no value), matched on the labels' device in
        # training, where a Python lookup per example would stop the host at every step
        keys = torch.tensor([[a, v, *((NAN if x is None else x for x in values) if self.with_values else ())]
                             for a, v, values in combinations], dtype=torch.float64)
        self.register_buffer("keys", torch.cat([keys[:, :2], six_digits(keys[:, 2:])], 1), persistent=False)

    def target(self, labels):
        parts = [labels.attack.double()[:, None], labels.victim.double()[:, None]]
        if self.with_values:
            parts.append(six_digits(labels.hp.double()))
        rows, keys = torch.cat(parts, 1)[:, None, :], self.keys.to(labels.attack.device)[None]
        match = ((rows == keys) | (rows.isnan() & keys.isnan())).all(2)  # (examples, classes)
        found = match.any(1)  # a combination never seen in training cannot be predicted
        return torch.where(found, match.to(torch.uint8).argmax(1), 0), found

    def decode(self, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(attack index, victim index, the attributed display value, probability)."""
        prob, idx = predicted_class(output)
        chosen = [self.combinations[i] for i in idx.tolist()]
        attack = torch.tensor([c[0] for c in chosen])
        victim = torch.tensor([c[1] for c in chosen])
        hp = torch.tensor([[NAN if v is None else v for v in (c[2] or (None,))] for c in chosen])
        return attack, victim, attributed_value(hp), prob

    def scores(self, outputs, labels):
        attack, victim, value, _ = self.decode(outputs[self.name])
        return [Score("attack_accuracy", (attack == labels.attack).float(), "accuracy", "Attack accuracy (%)",
                      "attack acc (%)", signature=True),
                Score("victim_accuracy", (victim == labels.victim).float(), "accuracy", "Victim accuracy (%)",
                      "victim acc (%)", signature=True),
                hyperparameter_score(value, labels),
                Score("combination_accuracy", self.correct(outputs[self.name], labels).float(), "accuracy",
                      "Exact single-label class accuracy (%)", "combination acc (%)", table=True)]

    def answer(self, outputs):
        attack, victim, value, prob = self.decode(outputs[self.name])
        return [{"attack": self.spaces.attacks[a], "attack_probability": round(p, 4),
                 "victim": self.spaces.victims[v], "victim_probability": round(p, 4),
                 **hyperparameter_answer(self.spaces, a, x)}
                for a, v, x, p in zip(attack.tolist(), victim.tolist(), value.tolist(), prob.tolist())]

    def shown(self, answer):
        return {"attack": f"{answer['attack']} ({answer['attack_probability']:.0%})",
                "victim": f"{answer['victim']} ({answer['victim_probability']:.0%})",
                **shown_hyperparameter(answer)}

    def report_figures(self, outputs, labels, spaces):
        from attribkit import figures

        attack, victim, _, _ = self.decode(outputs[self.name])
        found = []
        for name, truth, predicted, classes in (("attack", labels.attack, attack, spaces.attacks),
                                                ("victim", labels.victim, victim, spaces.victims)):
            png = figures.confusion(truth, predicted, list(classes), f"{name} attribution")
            if png:
                found.append(figures.Figure(f"confusion_{name}", f"{name}: confusion matrix",
                                            f"true {name} (rows) against attributed (columns), decoded", png))
        return found + super().report_figures(outputs, labels, spaces)


@hookimpl
def register_heads(register):
    register(HeadSpec("attack", "classification", lambda cols: "attack" in cols,
                      lambda context: SignatureHead(context, "attack"),
                      description="which attack algorithm (attack/hyperparameter branch)"))
    register(HeadSpec("victim", "classification", lambda cols: "victim" in cols,
                      lambda context: SignatureHead(context, "victim"),
                      description="which victim model (victim branch)"))
    register(HeadSpec("hyperparameter", "regression", lambda cols: any(c.startswith("hp_") for c in cols),
                      HyperparameterHead,
                      description="attack-conditioned regression of each attack's hyperparameters (eq. 7)"))
    register(HeadSpec("combination", "classification", lambda cols: "attack" in cols and "victim" in cols,
                      CombinationHead, models=("single-label",), fit=fit_combinations,
                      description="single-label: one class per attack × victim × value seen in training"))
