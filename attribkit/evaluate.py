"""``attribkit evaluate``: the paper's metrics for a run on a data set.

Attack and victim accuracy, hyperparameter RMSE in the paper's units
(ε×255, κ) overall and per attack, per-attack × per-victim tables (Tables
2–5), Δ_MTL against a baseline run (eq. 15), parameters and FLOPs, and
confusion matrices; written as JSON, Markdown and PNG.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from . import storage
from .errors import AttribkitError
from .train.config import TrainConfig
from .train.data import AttributionData, load_attribution_data
from .train.metrics import cross_table, evaluate_members
from .train.models import Member
from .train.run import load_run

# (metric, higher is better) for Δ_MTL, eq. 15
TASK_METRICS = (("attack_accuracy", True), ("victim_accuracy", True), ("hp_rmse", False))


def check_label_spaces(meta: dict, data: AttributionData, run: str) -> None:
    ours, theirs = meta["label_spaces"], data.label_spaces
    for key in ("attack", "victim"):
        if ours[key] != theirs[key]:
            raise AttribkitError(f"the data set's {key} labels {theirs[key]} do not match run {run!r}'s {ours[key]}")
    if list(ours["hyperparameters"]) != list(theirs["hyperparameters"]):
        raise AttribkitError(f"the data set's hyperparameters {list(theirs['hyperparameters'])} do not match "
                             f"run {run!r}'s {list(ours['hyperparameters'])}")


def count_flops(members: dict[str, Member], in_chans: int, size: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(1, in_chans, size, size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        for m in members.values():
            m.net.eval()(x)
    return int(counter.get_total_flops())


def delta_mtl(model: dict, baseline: dict) -> float | None:
    terms = []
    for metric, higher in TASK_METRICS:
        m, b = model.get(metric), baseline.get(metric)
        if m is None or b is None or b == 0:
            continue
        terms.append((m - b) / b if higher else -(m - b) / b)
    return round(100 * sum(terms) / len(terms), 3) if terms else None


def _evaluate_one(run: str, data: AttributionData, verify: bool) -> tuple[dict, dict, dict]:
    meta, members = load_run(run, verify)
    check_label_spaces(meta, data, run)
    result = evaluate_members(members, data, TrainConfig.from_dict(meta["config"]).quantize)  # a default if absent
    sig = result.pop("_signatures")
    result["parameters_m"] = round(sum(sum(p.numel() for p in m.net.parameters()) for m in members.values()) / 1e6, 3)
    result["gflops"] = round(count_flops(members, meta["input"]["in_chans"], meta["input"]["image_size"]) / 1e9, 4)
    metrics = [m for m, _ in TASK_METRICS] + (["combination_accuracy"] if "combination_correct" in sig else [])
    result["tables"] = {metric: cross_table(sig, data, metric) for metric in metrics}
    return meta, result, sig


def evaluate(run: str | Path, data_dir: str | Path, baseline: str | Path | None = None,
             out: str | Path | None = None, split: str = "test", verify: bool = True) -> dict:
    """``verify=False`` reads the run(s) and data set without checking their recorded hashes."""
    data = load_attribution_data(data_dir, split, verify)
    meta, result, sig = _evaluate_one(str(run), data, verify)
    report = {"run": str(run), "model": meta["config"]["model"], "data": str(data_dir), "split": split, **result}
    if baseline:
        base_meta, base, _ = _evaluate_one(str(baseline), data, verify)
        base.pop("tables")
        report["baseline"] = {"run": str(baseline), "model": base_meta["config"]["model"], **base}
        report["delta_mtl_percent"] = delta_mtl(result, base)
    out = Path(out) if out else Path(run) / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    report["plots"] = _confusion_plots(sig, data, out)
    storage.write_json(out / "evaluation.json", report)
    storage.write_text(out / "evaluation.md", markdown(report))
    report["out"] = str(out)
    return report


def _confusion_plots(sig: dict, data: AttributionData, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    written = []
    for name in ("attack", "victim"):
        if name not in sig:
            continue
        labels = data.label_spaces[name]
        if len(labels) < 2:  # one class: nothing to confuse
            continue
        fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 2, 1.2 * len(labels) + 1.5))
        ConfusionMatrixDisplay.from_predictions(data.labels[name].numpy(), sig[name].numpy(),
                                                labels=list(range(len(labels))), display_labels=labels,
                                                ax=ax, colorbar=False, xticks_rotation=45)
        ax.set_title(f"{name} attribution ({len(data)} test examples)")
        fig.tight_layout()
        path = out / f"confusion_{name}.png"
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=110)
        plt.close(fig)
        storage.write_bytes(path, png.getvalue())
        written.append(str(path))
    return written


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


def _num(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def markdown(report: dict) -> str:
    lines = [f"# Evaluation of `{report['run']}` ({report['model']})", "",
             f"Data: `{report['data']}` ({report['split']} split, {report['examples']} examples).", "",
             "| model | params (M) | GFLOPs | attack acc (%) | victim acc (%) | hyperparameter RMSE | Δ_MTL (%) |",
             "|---|---|---|---|---|---|---|"]
    rows = [report] + ([report["baseline"]] if "baseline" in report else [])
    for i, r in enumerate(rows):
        delta = report.get("delta_mtl_percent") if i == 0 and "baseline" in report else (0.0 if i else None)
        lines.append(f"| {r['model']} | {r['parameters_m']:.2f} | {r['gflops']:.4f} | {_pct(r.get('attack_accuracy'))} | "
                     f"{_pct(r.get('victim_accuracy'))} | {_num(r.get('hp_rmse'))} | "
                     f"{'–' if delta is None else f'{delta:+.2f}'} |")
    if report.get("hp_rmse_per_attack"):
        lines += ["", "Hyperparameter RMSE per attack (ε×255 for L∞ attacks, κ for C&W):", "",
                  "| attack | RMSE |", "|---|---|"]
        lines += [f"| {a} | {_num(v)} |" for a, v in report["hp_rmse_per_attack"].items()]
    others = {k: v for k, v in report.items() if k.endswith("_accuracy") and k not in dict(TASK_METRICS)}
    if others:  # heads from plugins, and single-label's exact class
        lines += ["", "Other heads:", "", "| head | accuracy (%) |", "|---|---|"]
        lines += [f"| {k.removesuffix('_accuracy')} | {_pct(v)} |" for k, v in others.items()]
    titles = {"attack_accuracy": "Attack accuracy (%)", "victim_accuracy": "Victim accuracy (%)",
              "hp_rmse": "Hyperparameter RMSE", "combination_accuracy": "Exact single-label class accuracy (%)"}
    for metric, table in report["tables"].items():
        victims = list(next(iter(table.values())).keys()) if table else []
        fmt = _num if metric == "hp_rmse" else _pct
        lines += ["", f"### {titles[metric]} per attack × victim", "",
                  "| attack | " + " | ".join(victims) + " |", "|---" * (len(victims) + 1) + "|"]
        lines += [f"| {a} | " + " | ".join(fmt(row[v]) for v in victims) + " |" for a, row in table.items()]
    for p in report.get("plots", []):
        lines += ["", f"![{Path(p).stem}]({Path(p).name})"]
    return "\n".join(lines) + "\n"
