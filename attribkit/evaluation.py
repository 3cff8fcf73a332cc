"""``attribkit evaluate``: the paper's metrics for a run on a data set.

Attack and victim accuracy, hyperparameter RMSE in the paper's units
(ε×255, κ) overall and per attack, per-attack × per-victim tables (Tables
2–5), Δ_MTL against one or more baseline runs (eq. 15), parameters and
FLOPs; written as JSON and Markdown, with the figures (see attribkit.report)
as PNGs and all of it in one self-contained report.html.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from . import figures, storage
from .errors import AttribkitError
from .report import html_report, model_figures, num, pct, row_delta, signed, write_figures
from .train.config import TrainConfig
from .train.data import AttributionData, load_attribution_data, quantize, split_validation
from .train.metrics import cross_table, evaluate_members
from .train.models import Member, heads_of, predict
from .train.run import METRICS_JSON, load_run, read_run_meta

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


def _evaluate_one(run: str, data: AttributionData, verify: bool, draw: bool = False) -> tuple[dict, dict, list]:
    """(run meta, metrics, the report's sections of figures if ``draw``)."""
    meta, members = load_run(run, verify)
    check_label_spaces(meta, data, run)
    images = quantize(data.images) if TrainConfig.from_dict(meta["config"]).quantize else data.images
    outputs = predict(members, images)
    result = evaluate_members(members, data, False, outputs)
    sig = result.pop("_signatures")
    result["parameters_m"] = round(sum(sum(p.numel() for p in m.net.parameters()) for m in members.values()) / 1e6, 3)
    result["gflops"] = round(count_flops(members, meta["input"]["in_chans"], meta["input"]["image_size"]) / 1e9, 4)
    metrics = [m for m, _ in TASK_METRICS] + (["combination_accuracy"] if "combination_correct" in sig else [])
    result["tables"] = {metric: cross_table(sig, data, metric) for metric in metrics}
    sections = []
    if draw:
        history = _history(Path(run), meta, verify)
        sections.append(("The model", model_figures(members, data, images, history) + _signature_confusions(
            sig, data, heads_of(members))))
        sections += [(f"Head: {name}", head.report_figures(outputs, data.labels, data.label_spaces))
                     for name, head in heads_of(members).items()]
    return meta, result, sections


def _signature_confusions(sig: dict, data: AttributionData, heads: dict) -> list:
    """Attack and victim confusion matrices for models with no head of that name (single-label
    decodes both from its combination class)."""
    found = []
    for name in ("attack", "victim"):
        if name in sig and name not in heads:
            png = figures.confusion(data.labels[name], sig[name], data.label_spaces[name], f"{name} attribution")
            if png:
                found.append(figures.Figure(f"confusion_{name}", f"{name}: confusion matrix",
                                            f"true {name} (rows) against attributed (columns), decoded", png))
    return found


def _validation_data(run, baselines: list, data_dir, verify: bool) -> AttributionData:
    """The run's own held-out images, which every baseline must have held out too."""
    meta = read_run_meta(run, verify)
    fraction = TrainConfig.from_dict(meta["config"], where=str(run)).validation
    if fraction <= 0:
        raise AttribkitError(f"run {str(run)!r} was trained without a validation split; use --split test")
    for path in baselines:
        if TrainConfig.from_dict(read_run_meta(path, verify)["config"], where=str(path)).validation != fraction:
            raise AttribkitError(f"baseline {str(path)!r} held out another validation split than run {str(run)!r}, "
                                 f"so it trained on some of the images scored; use --split test")
    data = split_validation(load_attribution_data(data_dir, "train", verify), fraction)[1]
    trained_on = meta.get("data", {}).get("fingerprint")
    if trained_on and trained_on != data.fingerprint:
        raise AttribkitError(f"run {str(run)!r} was trained on another data set than {str(data_dir)!r}, so it has "
                             f"no validation split there; use --split test")
    return data


def _history(run: Path, meta: dict, verify: bool) -> list[dict]:
    """The per-epoch metrics for the training curves; a run without them is evaluated without that figure."""
    if not (run / METRICS_JSON).exists():
        storage.notice(f"{str(run / METRICS_JSON)!r} is missing: the report has no training curves")
        return []
    expected = storage.recorded_file(meta, METRICS_JSON, str(run / "run.json")) if verify else None
    try:
        history = json.loads(storage.read_bytes(run / METRICS_JSON, expected, error=AttribkitError))["epochs"]
    except (ValueError, KeyError, TypeError):
        raise AttribkitError(f"{str(run / METRICS_JSON)!r} is not a run's metrics file") from None
    if not isinstance(history, list) or not all(isinstance(r, dict) and "member" in r and "epoch" in r for r in history):
        raise AttribkitError(f"{str(run / METRICS_JSON)!r} is not a run's metrics file")
    return history


def evaluate(run: str | Path, data_dir: str | Path, baseline: str | Path | list | tuple | None = None,
             out: str | Path | None = None, split: str = "test", verify: bool = True) -> dict:
    """``baseline`` is one run or several: each gets a row and a Δ_MTL; the first is
    the report's ``baseline``. ``verify=False`` reads the run(s) and data set without
    checking their recorded hashes."""
    baselines = [baseline] if isinstance(baseline, (str, Path)) else list(baseline or [])
    if split == "validation":
        data = _validation_data(run, baselines, data_dir, verify)
    else:
        data = load_attribution_data(data_dir, split, verify)
    meta, result, sections = _evaluate_one(str(run), data, verify, draw=True)
    report = {"run": str(run), "model": meta["config"]["model"], "data": str(data_dir), "split": split, **result}
    rows = []
    for path in baselines:
        base_meta, base, _ = _evaluate_one(str(path), data, verify)
        base.pop("tables")
        rows.append({"run": str(path), "model": base_meta["config"]["model"], **base,
                     "delta_mtl_percent": delta_mtl(result, base)})
    if rows:
        report["baselines"] = rows
        report["baseline"] = rows[0]
        report["delta_mtl_percent"] = rows[0]["delta_mtl_percent"]
    out = Path(out) if out else Path(run) / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    report["plots"] = write_figures(out, sections)
    storage.write_json(out / "evaluation.json", report)
    storage.write_text(out / "evaluation.md", markdown(report))
    storage.write_text(out / "report.html", html_report(report, sections))
    report["out"] = str(out)
    return report


def markdown(report: dict) -> str:
    lines = [f"# Evaluation of `{report['run']}` ({report['model']})", "",
             f"Data: `{report['data']}` ({report['split']} split, {report['examples']} examples).", "",
             "| model | params (M) | GFLOPs | attack acc (%) | victim acc (%) | hyperparameter RMSE | Δ_MTL (%) |",
             "|---|---|---|---|---|---|---|"]
    baselines = report.get("baselines", [])
    rows = [report] + baselines
    for i, r in enumerate(rows):
        lines.append(f"| {r['model']} | {r['parameters_m']:.2f} | {r['gflops']:.4f} | {pct(r.get('attack_accuracy'))} | "
                     f"{pct(r.get('victim_accuracy'))} | {num(r.get('hp_rmse'))} | "
                     f"{signed(row_delta(report, i))} |")
    if len(baselines) > 1:
        lines += ["", f"Δ_MTL (%) of {report['model']} against each baseline: " + ", ".join(
            f"{b['model']} (`{b['run']}`) {signed(b['delta_mtl_percent'])}" for b in baselines) + "."]
    if report.get("hp_rmse_per_attack"):
        lines += ["", "Hyperparameter RMSE per attack (ε×255 for L∞ attacks, κ for C&W):", "",
                  "| attack | RMSE |", "|---|---|"]
        lines += [f"| {a} | {num(v)} |" for a, v in report["hp_rmse_per_attack"].items()]
    others = {k: v for k, v in report.items() if k.endswith("_accuracy") and k not in dict(TASK_METRICS)}
    if others:  # heads from plugins, and single-label's exact class
        lines += ["", "Other heads:", "", "| head | accuracy (%) |", "|---|---|"]
        lines += [f"| {k.removesuffix('_accuracy')} | {pct(v)} |" for k, v in others.items()]
    titles = {"attack_accuracy": "Attack accuracy (%)", "victim_accuracy": "Victim accuracy (%)",
              "hp_rmse": "Hyperparameter RMSE", "combination_accuracy": "Exact single-label class accuracy (%)"}
    for metric, table in report["tables"].items():
        victims = list(next(iter(table.values())).keys()) if table else []
        fmt = num if metric == "hp_rmse" else pct
        lines += ["", f"### {titles[metric]} per attack × victim", "",
                  "| attack | " + " | ".join(victims) + " |", "|---" * (len(victims) + 1) + "|"]
        lines += [f"| {a} | " + " | ".join(fmt(row[v]) for v in victims) + " |" for a, row in table.items()]
    for p in report.get("plots", []):
        lines += ["", f"![{Path(p).stem}]({Path(p).name})"]
    return "\n".join(lines) + "\n"
