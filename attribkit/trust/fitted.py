"""What a run learns about its own trustworthiness after training, on the validation split.

    RUN/trust.safetensors   the unknown-attack scorer's tensors (class means, precision, …)
    RUN/run.json "trust"    temperatures, the scorer's name, the threshold and how it was chosen

* **Calibration:** one temperature per classification head (temperature
  scaling, :mod:`attribkit.trust.calibration`), fitted on the validation split:
  every probability attribkit reports is softmax(logits / T).
* **Unknown attacks:** a score per image (:mod:`attribkit.trust.unknown`),
  fitted on the training split's features; the threshold is the validation
  split's (1 − false_rejection) quantile, so about ``false_rejection`` of the
  known attacks' images (and clean ones, where the run has a clean class) are
  called unknown.
* **Verdict** of an image: ``unknown`` above the threshold, else ``clean``
  when the attack answer is the clean class, else ``attributed``.

The validation split is the one model selection uses (training/data.py): a
seeded share of the training split's clean images, never the test split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..errors import AttribkitError
from ..records import CLEAN, LabelSpaces
from .calibration import TEMPERATURE_RANGE, fit_temperature
from .unknown import DEFAULT_METHOD, METHODS, check_state, fit_scorer, unknown_scores

TRUST_FILE = "trust.safetensors"
FALSE_REJECTION = 0.05
VERDICTS = ("attributed", "clean", "unknown")
FEW_VALIDATION = 100  # validation images below which a 5 % quantile and a temperature are rough


@dataclass
class Trust:
    temperatures: dict[str, float]  # classification head → T
    method: str  # the unknown-attack score (unknown.METHODS)
    threshold: float  # a score above it is unknown
    false_rejection: float  # the share of known validation images above the threshold, as asked
    attack_head: str  # the head whose logits msp and energy read
    fitted: dict = field(default_factory=dict)  # how many examples of which split went into what
    state: dict[str, torch.Tensor] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"temperatures": self.temperatures, "unknown": {
            "method": self.method, "threshold": self.threshold, "false_rejection": self.false_rejection,
            "attack_head": self.attack_head}, "fitted": self.fitted}

    @classmethod
    def from_json(cls, data, state: dict[str, torch.Tensor], where: str) -> "Trust":
        """Read back and checked: a value no fit can give (a NaN threshold, an infinite temperature,
        a head the run lacks) is refused, since it would silently turn every verdict one way."""
        def bad(field: str, why: str) -> AttribkitError:
            return AttribkitError(f"{where}: the run's \"trust\" record is malformed: {field} {why}")

        def number(value, field: str, low: float, high: float) -> float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise bad(field, f"must be a finite number, not {value!r}")
            if not low <= value <= high:
                raise bad(field, f"must be within [{low:g}, {high:g}], not {value!r}")
            return float(value)

        if not isinstance(data, dict) or not isinstance(data.get("unknown"), dict) \
                or not isinstance(data.get("temperatures"), dict):
            raise bad("the record", "lacks its \"unknown\" or \"temperatures\" table")
        unknown = data["unknown"]
        low, high = TEMPERATURE_RANGE
        temperatures = {str(k): number(v, f"temperature {k!r}", low * 0.999, high * 1.001)  # a fit's rounding
                        for k, v in data["temperatures"].items()}
        method, head, fitted = unknown.get("method"), unknown.get("attack_head"), data.get("fitted") or {}
        if not isinstance(method, str) or method not in METHODS:
            raise bad("unknown.method", f"must be one of {', '.join(METHODS)}, not {method!r}")
        if not isinstance(head, str) or head not in temperatures:  # every classification head has a temperature
            raise bad("unknown.attack_head", f"{head!r} is not one of the run's calibrated heads "
                                             f"({', '.join(temperatures) or 'none'})")
        if not isinstance(fitted, dict):
            raise bad("fitted", f"must be a table, not {fitted!r}")
        trust = cls(temperatures, method, number(unknown.get("threshold"), "unknown.threshold", -math.inf, math.inf),
                    number(unknown.get("false_rejection"), "unknown.false_rejection", 0.0, 1.0), head, dict(fitted),
                    state)
        check_state(trust.method, state, where)
        return trust

    def calibrated(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The heads' outputs with each classification head's logits divided by its temperature:
        the probabilities change, the predicted classes do not."""
        return {k: v / self.temperatures[k] if k in self.temperatures else v for k, v in outputs.items()}

    def scores(self, calibrated: dict[str, torch.Tensor], features: torch.Tensor) -> torch.Tensor:
        return unknown_scores(self.method, self.state, features, calibrated[self.attack_head])


def attack_head_of(heads: dict, spaces: LabelSpaces) -> str:
    """The classification head over the attack labels (MTAA's and single-task's ``attack``), else the
    first classification head (single-label's combinations, which decode to an attack)."""
    classifiers = [name for name, h in heads.items() if h.task == "classification"]
    if not classifiers:
        raise AttribkitError("the run has no classification head to score unknown attacks with")
    exact = [name for name in classifiers if list(getattr(heads[name], "classes", [])) == list(spaces.attacks)]
    return (exact or classifiers)[0]


def fit_trust(heads: dict, spaces: LabelSpaces, train: tuple, validation: tuple, *, method: str = DEFAULT_METHOD,
              false_rejection: float = FALSE_REJECTION) -> Trust:
    """``train`` and ``validation`` are (outputs, features, labels) of each split."""
    if not 0 < false_rejection < 1:
        raise AttribkitError(f"false rejection rate must be in (0, 1), got {false_rejection}")
    outputs, features, labels = validation
    temperatures = {}
    for name, head in heads.items():
        if head.task != "classification":
            continue
        target, mask = head.target(labels)
        temperatures[name] = fit_temperature(outputs[name][mask], target[mask]) if bool(mask.any()) else 1.0
    attack_head = attack_head_of(heads, spaces)
    state = fit_scorer(method, train[1], train[2].attack)
    trust = Trust(temperatures, method, 0.0, false_rejection, attack_head, state=state)
    known = trust.scores(trust.calibrated(outputs), features).double()
    # "higher": a threshold at a score some validation image has, so at most false_rejection lie above it
    trust.threshold = float(torch.quantile(known, 1 - false_rejection, interpolation="higher"))
    trust.fitted = {"scorer": {"split": "train", "examples": len(train[2])},
                    "temperatures_and_threshold": {"split": "validation", "examples": len(labels)},
                    "validation_rejected": round(float((known > trust.threshold).double().mean()), 6)}
    return trust


def trust_warnings(trust: Trust) -> list[str]:
    """What makes a fitted trust record rough, said when it is fitted rather than found out later."""
    found = []
    examples = trust.fitted["temperatures_and_threshold"]["examples"]
    if examples < FEW_VALIDATION:
        found.append(f"the unknown-attack threshold and the temperatures were fitted on {examples} validation "
                     f"images: the false-rejection rate they give is rough (more training data, or a larger "
                     f"--validation, helps)")
    low, high = TEMPERATURE_RANGE
    for head, t in trust.temperatures.items():
        if not low * 1.01 < t < high * 0.99:
            found.append(f"head {head!r}: its temperature reached the search bound ({t:g}): its probabilities "
                         f"could not be calibrated on the validation split; read them with care")
    return found


def verdict(row: dict, score: float | None, threshold: float | None, clean_class: bool = True) -> str:
    """``unknown`` above the threshold (or where the score is not a number: a scorer that cannot say
    is not evidence of a known attack); else ``clean`` when the attack answered is the clean class
    (of a run that has one: ``clean_class``); else ``attributed``. ``row`` is one image's answers."""
    if score is not None and threshold is not None and not score <= threshold:  # a NaN score too: fail closed
        return "unknown"
    return "clean" if clean_class and row.get("attack") == CLEAN else "attributed"
