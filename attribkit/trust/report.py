"""``attribkit evaluate``'s trust section: calibration, clean images, unknown attacks, victims it
never saw, and images as they are saved.

* **Calibration:** the expected calibration error (15 equal-width bins) of each
  classification head, before and after the run's temperatures, and a
  reliability diagram.
* **Verdicts on the evaluated split:** how many known images the threshold
  calls unknown (the false rejections), and with a clean class its recall and
  the attack accuracy on the adversarial images alone.
* **``--unknown DATA``** (the test split of a data set made with attacks or
  victims outside the run): per attack and per victim, the AUROC of the
  unknown-attack score against the evaluated split, the share of unknown
  images accepted at 95 % of known ones accepted (FPR@95TPR), the share the
  run's threshold rejects, and what the images were called. A victim is
  matched to the run's by its *family* (architecture), so victims retrained
  from another seed or width get a family accuracy.
* **Saved as:** the signature metrics with the test images as float, 8-bit PNG
  and JPEG at several qualities (Pillow, in memory).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from .. import figures
from ..figures import Figure
from ..errors import AttribkitError
from ..records import CLEAN
from ..storage.dataset import read_manifest
from ..training.config import TrainConfig
from ..training.data import AttributionData, load_attribution_data, quantize
from ..training.metrics import scores_of, signature_metrics, summarise
from ..training.models import heads_of, predict_with_features
from ..training.run import load_trust
from .calibration import calibration_bins, expected_calibration_error, reliability_diagram
from .fitted import Trust, verdict
from .saving import as_saved

BINS = 15
SAVE_BATCH = 1024  # images re-encoded and predicted at a time
SHARES = ("rejected", "clean_recall", "adversarial_called_clean")  # saved-as entries shown in %


def families(data_dir: str | Path, verify: bool = True) -> dict[str, str]:
    """Each victim of a data set → its family: the architecture it was built from (zoo victims), else
    its timm model, else its name. Victims retrained from another seed or width share a family."""
    manifest = read_manifest(data_dir, verify)
    found = {name: record.get("architecture") or record.get("timm_name") or name
             for name, record in manifest.victims.items()}
    if manifest.label_spaces.clean:
        found[CLEAN] = CLEAN
    return found


class Answered:
    """A model's answers on a set of images: raw and calibrated outputs, unknown scores, merged answer
    rows and verdicts."""

    def __init__(self, members, heads, trust: Trust | None, images, clean_class: bool, seen: tuple | None = None):
        """``seen``: the (outputs, features) :func:`predict_with_features` already gave for ``images``."""
        self.raw, features = seen or predict_with_features(members, images, features=trust is not None)
        self.outputs = trust.calibrated(self.raw) if trust else self.raw
        self.scores = trust.scores(self.outputs, features).double() if trust else None
        answers = [head.answer(self.outputs) for head in heads.values()]
        self.rows = [{k: v for answer in answers for k, v in answer[i].items()} for i in range(len(images))]
        threshold = trust.threshold if trust else None
        self.verdicts = [verdict(row, None if self.scores is None else float(self.scores[i]), threshold, clean_class)
                         for i, row in enumerate(self.rows)]
        self.attacks = [row.get("attack") for row in self.rows]  # None where no head answers it
        self.victims = [row.get("victim") for row in self.rows]
        self.answers_attack = any(a is not None for a in self.attacks)  # a run without an attack head does not
        self.answers_victim = any(v is not None for v in self.victims)


def _said(verdicts: list[str], which: str) -> torch.Tensor:
    """(N,) bool: which images got the verdict ``which``."""
    return torch.tensor([v == which for v in verdicts], dtype=torch.bool)


def _share(mask: torch.Tensor) -> float | None:
    return round(float(mask.double().mean()), 6) if len(mask) else None


def _calibration(heads, answered: Answered, data: AttributionData, trust: Trust | None) -> tuple[dict, Figure | None]:
    result, curves = {}, {}
    for name, head in heads.items():
        if head.task != "classification":
            continue
        target, mask = head.target(data.labels)
        if not bool(mask.any()):
            continue
        entry = {"temperature": trust.temperatures.get(name) if trust else None}
        for key, outputs in (("ece_uncalibrated", answered.raw[name]), ("ece", answered.outputs[name])):
            prob, idx = outputs[mask].float().softmax(1).max(1)
            correct = idx == target[mask]
            entry[key] = expected_calibration_error(prob, correct, BINS)
            if key == "ece":
                curves[name] = calibration_bins(prob, correct, BINS)
        if trust is None:
            entry["ece"] = None  # nothing was calibrated: the uncalibrated figure is all there is
        result[name] = entry
    if not curves:
        return result, None
    title = "reliability (calibrated)" if trust else "reliability (uncalibrated: the run has no temperatures)"
    return result, Figure("reliability", "Calibration: reliability diagram",
                          f"accuracy against confidence in {BINS} equal-width bins of the evaluated split; the "
                          f"diagonal is perfect calibration", reliability_diagram(curves, title))


def _verdict_counts(verdicts: list[str]) -> dict[str, int]:
    counts = Counter(verdicts)
    return {v: counts.get(v, 0) for v in ("attributed", "clean", "unknown")}


def _on_known(answered: Answered, data: AttributionData, trust: Trust | None) -> dict:
    """Verdicts on the evaluated split: false rejections, and the clean class if the data has one."""
    spaces, labels = data.label_spaces, data.labels
    result: dict = {"verdicts": _verdict_counts(answered.verdicts)}
    if trust is not None:
        rejected = answered.scores > trust.threshold
        result["rejected"] = _share(rejected)
        result["rejected_per_attack"] = {a: _share(rejected[labels.attack == i]) for i, a in enumerate(spaces.attacks)}
    if spaces.clean and answered.answers_attack:
        clean_attack = spaces.clean_index[0]
        is_clean = labels.attack == clean_attack
        said_clean = _said(answered.verdicts, "clean")
        misclassified = is_clean & (labels.extra["pred"] != labels.extra["label"]) \
            if {"pred", "label"} <= set(labels.extra) else torch.zeros_like(is_clean)
        attack_right = torch.tensor([a == spaces.attacks[t] for a, t in zip(answered.attacks, labels.attack.tolist())])
        result["clean"] = {
            "examples": int(is_clean.sum()),
            "recall": _share(said_clean[is_clean]),
            "recall_misclassified": _share(said_clean[misclassified]),
            "misclassified_examples": int(misclassified.sum()),
            "called_unknown": _share(_said(answered.verdicts, "unknown")[is_clean]),
            "adversarial_called_clean": _share(said_clean[~is_clean]),
            "attack_accuracy_adversarial": _share(attack_right[~is_clean]),
        }
    return result


def _auroc(known: torch.Tensor, unknown: torch.Tensor) -> float | None:
    from sklearn.metrics import roc_auc_score

    if not len(known) or not len(unknown):
        return None
    truth = torch.cat([torch.zeros(len(known)), torch.ones(len(unknown))]).numpy()
    return round(float(roc_auc_score(truth, torch.cat([known, unknown]).numpy())), 6)


def _fpr_at_95(known: torch.Tensor, unknown: torch.Tensor) -> float | None:
    """The share of unknown images accepted when the threshold accepts 95 % of the known ones."""
    if not len(known) or not len(unknown):
        return None
    return _share(unknown <= torch.quantile(known, 0.95, interpolation="higher"))


def _group(answered: Answered, keep: torch.Tensor, known_scores, trust, truth_attack: str | None,
           truth_family: str | None, run_attacks, family_of_answer) -> dict:
    idx = torch.nonzero(keep).flatten().tolist()
    attacks = [answered.attacks[i] for i in idx]
    entry = {"examples": len(idx), "verdicts": _verdict_counts([answered.verdicts[i] for i in idx]),
             "called": dict(Counter(a for a in attacks).most_common())}
    if trust is not None:
        scores = answered.scores[keep]
        entry.update(auroc=_auroc(known_scores, scores), fpr_at_95_tpr=_fpr_at_95(known_scores, scores),
                     rejected=_share(scores > trust.threshold), mean_score=round(float(scores.mean()), 6) if idx else None)
    if truth_attack in run_attacks and answered.answers_attack:
        entry["attack_accuracy"] = _share(torch.tensor([a == truth_attack for a in attacks]))
    if truth_family is not None and truth_family in family_of_answer.values() and answered.answers_victim:
        named = [family_of_answer.get(answered.victims[i]) for i in idx]
        entry["victim_family_accuracy"] = _share(torch.tensor([f == truth_family for f in named]))
    return entry


def _on_unknown(path: str, members, heads, trust: Trust | None, quantized: bool, known: Answered, meta,
                run_families: dict[str, str], verify: bool, stream: bool) -> dict:
    data = load_attribution_data(path, "test", verify, stream)
    shape = tuple(data.images.shape[1:])
    if shape != (meta.in_chans, meta.image_size, meta.image_size):
        raise AttribkitError(f"--unknown {path!r} holds {shape[0]}×{shape[1]}×{shape[2]} images, but the run reads "
                             f"{meta.in_chans}×{meta.image_size}×{meta.image_size}")
    run_spaces = meta.label_spaces
    answered = Answered(members, heads, trust, quantize(data.images) if quantized else data.images, run_spaces.clean)
    theirs = families(path, verify)
    spaces, labels = data.label_spaces, data.labels
    known_scores = known.scores if trust is not None else None
    run_attacks = set(run_spaces.attacks)
    result = {"data": str(path), "split": "test", "examples": len(data),
              "verdicts": _verdict_counts(answered.verdicts), "per_attack": {}, "per_victim": {}}
    # the whole data set's numbers are over its examples of attacks the run does not know (per_attack has all)
    outside = torch.tensor([spaces.attacks[a] not in run_attacks for a in labels.attack.tolist()], dtype=torch.bool)
    result["outside_examples"] = int(outside.sum())
    if trust is not None:
        scores = answered.scores[outside]
        result.update(auroc=_auroc(known_scores, scores), fpr_at_95_tpr=_fpr_at_95(known_scores, scores),
                      rejected=_share(scores > trust.threshold))
    for i, attack in enumerate(spaces.attacks):
        keep = labels.attack == i
        if bool(keep.any()):
            result["per_attack"][attack] = _group(answered, keep, known_scores, trust, attack, None, run_attacks,
                                                  run_families)
    for j, victim in enumerate(spaces.victims):
        keep = labels.victim == j
        if bool(keep.any()):
            entry = _group(answered, keep, known_scores, trust, None, theirs.get(victim, victim), run_attacks,
                           run_families)
            entry["family"] = theirs.get(victim, victim)
            result["per_victim"][victim] = entry
    result["_scores"] = answered.scores  # for the figure; dropped from the JSON
    result["_attack_of"] = [spaces.attacks[a] for a in labels.attack.tolist()]
    return result


def _score_histogram(known: torch.Tensor, unknowns: list[dict], threshold: float, method: str) -> bytes:
    plt = figures._pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.2))
    groups = {"known (evaluated split)": known}
    for u in unknowns:
        for attack in dict.fromkeys(u["_attack_of"]):
            keep = torch.tensor([a == attack for a in u["_attack_of"]])
            groups[f"{attack} ({Path(u['data']).name})"] = u["_scores"][keep]
    values = torch.cat(list(groups.values())).double()
    low, high = float(values.min()), float(values.max())
    shift = 0.0 if low > 0 else 1e-6 - low  # a log axis needs positive values
    high = max(high, (low + shift) * 1.01 - shift + 1e-9)  # all equal: still a range to bin
    bins = torch.logspace(torch.log10(torch.tensor(low + shift)), torch.log10(torch.tensor(high + shift)), 40)
    for name, scores in groups.items():
        ax.hist((scores.double() + shift).numpy(), bins=bins.numpy(), histtype="step", density=True, label=name,
                linewidth=2 if name.startswith("known") else 1)
    ax.axvline(threshold + shift, color="black", linestyle="--", label="threshold")
    ax.set_xscale("log")
    ax.set_xlabel(f"unknown-attack score ({method})" + (f" + {shift:.3g}" if shift else ""))
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    return figures._png(fig)


def _saved_as(members, heads, trust: Trust | None, data: AttributionData, formats: list[str]) -> dict:
    """The signature metrics with the split's images saved in each format before they are answered, and
    the verdicts that move with it: the share rejected as unknown and, with a clean class, the clean
    recall and the share of adversarial images called clean (a re-encoding that washed the perturbation
    out would hide the attack)."""
    spaces = data.label_spaces
    result = {}
    for fmt in formats:
        raw, verdicts = [], []
        for start in range(0, len(data), SAVE_BATCH):
            answered = Answered(members, heads, trust, as_saved(data.images[start:start + SAVE_BATCH], fmt),
                                spaces.clean)
            raw.append(answered.raw)
            verdicts += answered.verdicts
        outputs = {k: torch.cat([c[k] for c in raw]) for k in raw[0]}
        scores = scores_of(members, data, outputs)
        metrics = summarise(scores, data)
        described = {s.key: s.describe() for s in scores}
        entry = {k: metrics[k] for k, _ in signature_metrics(described)}
        if trust is not None:
            entry["rejected"] = _share(_said(verdicts, "unknown"))
        if spaces.clean:
            is_clean = data.labels.attack == spaces.clean_index[0]
            said_clean = _said(verdicts, "clean")
            entry["clean_recall"] = _share(said_clean[is_clean])
            entry["adversarial_called_clean"] = _share(said_clean[~is_clean])
        result[fmt] = entry
    return result


def trust_report(run: str | Path, meta, members, data: AttributionData, data_dir: str | Path, unknown: list,
                 saved_as: list[str], verify: bool, stream: bool = False,
                 seen: tuple | None = None) -> tuple[dict, list[Figure]]:
    """The trust section of the report (JSON) and its figures, for a loaded run; ``seen`` is its
    (outputs, features) on ``data`` if already predicted."""
    trust = load_trust(run, meta, verify)
    heads = heads_of(members)
    quantized = TrainConfig.from_dict(meta.config).quantize
    answered = Answered(members, heads, trust, quantize(data.images) if quantized else data.images,
                        meta.label_spaces.clean, seen)
    calibration, reliability = _calibration(heads, answered, data, trust)
    result: dict = {"calibrated": trust is not None, "calibration": calibration}
    if trust is not None:
        result["unknown_score"] = {"method": trust.method, "threshold": trust.threshold,
                                   "false_rejection_asked": trust.false_rejection}
    result["evaluated_split"] = _on_known(answered, data, trust)
    found = [reliability] if reliability else []
    if unknown:
        # the run's own victims' families (the evaluated data set's records say what each was built from)
        run_families = {v: f for v, f in families(data_dir, verify).items() if v in meta.label_spaces.victims}
        checked = [_on_unknown(str(p), members, heads, trust, quantized, answered, meta, run_families, verify, stream)
                   for p in unknown]
        if trust is not None:
            found.append(Figure("unknown_scores", "Unknown-attack scores",
                                "the score of the evaluated split's known images against each unknown data set's "
                                "attacks; the dashed line is the run's threshold",
                                _score_histogram(answered.scores, checked, trust.threshold, trust.method)))
        result["unknown"] = [{k: v for k, v in u.items() if not k.startswith("_")} for u in checked]
    if saved_as:
        result["saved_as"] = _saved_as(members, heads, trust, data, saved_as)
    return result, found


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def trust_markdown(trust: dict) -> list[str]:
    """The trust section of evaluation.md."""
    lines = ["", "## Trust", ""]
    if not trust["calibrated"]:
        lines += ["The run has no temperatures and no unknown-attack threshold (trained without a validation split, "
                  "or by an attribkit before they existed): its probabilities are uncalibrated and no image is "
                  "called unknown.", ""]
    lines += ["| head | temperature | ECE (%) | ECE uncalibrated (%) |", "|---|---|---|---|"]
    for name, c in trust["calibration"].items():
        t = "–" if c["temperature"] is None else f"{c['temperature']:.3g}"
        lines.append(f"| {name} | {t} | {_pct(c['ece'])} | {_pct(c['ece_uncalibrated'])} |")
    known = trust["evaluated_split"]
    if "unknown_score" in trust:
        u = trust["unknown_score"]
        lines += ["", f"Unknown-attack score: {u['method']}, threshold {u['threshold']:.4g} (chosen for "
                      f"{100 * u['false_rejection_asked']:.0f} % false rejections on the validation split). "
                      f"Known images of the evaluated split called unknown: {_pct(known.get('rejected'))} %."]
    if "clean" in known:
        c = known["clean"]
        lines += ["", "| clean examples | clean recall (%) | of them misclassified by a victim: recall (%) | "
                      "clean called unknown (%) | adversarial called clean (%) | attack acc. on adversarial (%) |",
                  "|---|---|---|---|---|---|",
                  f"| {c['examples']} | {_pct(c['recall'])} | {_pct(c['recall_misclassified'])} "
                  f"({c['misclassified_examples']}) | {_pct(c['called_unknown'])} | "
                  f"{_pct(c['adversarial_called_clean'])} | {_pct(c['attack_accuracy_adversarial'])} |"]
    for u in trust.get("unknown", []):
        lines += ["", f"### Outside the run: `{u['data']}` ({u['examples']} test examples)", ""]
        if not u["outside_examples"]:
            lines += ["Every attack here is one the run knows, so nothing in it is an unknown attack: each row "
                      "compares these images (other victims, say) with the evaluated split.", ""]
        lines += ["| attack | examples | AUROC | FPR@95TPR (%) | rejected (%) | attack acc. (%) | called |",
                  "|---|---|---|---|---|---|---|"]
        for name, g in u["per_attack"].items():
            called = ", ".join(f"{k} {v}" for k, v in g["called"].items())
            auroc = "–" if g.get("auroc") is None else f"{g['auroc']:.3f}"
            lines.append(f"| {name} | {g['examples']} | {auroc} | {_pct(g.get('fpr_at_95_tpr'))} | "
                         f"{_pct(g.get('rejected'))} | {_pct(g.get('attack_accuracy'))} | {called} |")
        lines += ["", "| victim | family | examples | family acc. (%) | rejected (%) | mean score |", "|---|---|---|---|---|---|"]
        for name, g in u["per_victim"].items():
            mean = "–" if g.get("mean_score") is None else f"{g['mean_score']:.4g}"
            lines.append(f"| {name} | {g['family']} | {g['examples']} | {_pct(g.get('victim_family_accuracy'))} | "
                         f"{_pct(g.get('rejected'))} | {mean} |")
    if "saved_as" in trust:
        keys = list(next(iter(trust["saved_as"].values())))
        lines += ["", "Saved as (the evaluated split's images re-encoded before they are answered):", "",
                  "| saved as | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for fmt, metrics in trust["saved_as"].items():
            lines.append(f"| {fmt} | " + " | ".join(
                "–" if metrics[k] is None else (f"{100 * metrics[k]:.2f}" if k.endswith("accuracy") or k in SHARES
                                                else f"{metrics[k]:.3f}")
                for k in keys) + " |")
    return lines
