"""``attribkit evaluate``: the paper's metrics for a run on a data set.

Attack and victim accuracy, hyperparameter RMSE in the paper's units
(ε×255, κ) overall and per attack, per-attack × per-victim tables (Tables
2–5), Δ_MTL against one or more baseline runs (eq. 15), parameters and
FLOPs; written as JSON and Markdown, with the figures (see attribkit.report)
as PNGs and all of it in one self-contained report.html.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from . import storage
from .errors import AttribkitError
from .records import RunMeta
from .runtime import Runtime, runtime_of
from .report import html_report, metric_text, model_figures, row_delta, signed, write_figures
from .storage.dataset import MANIFEST
from .training.config import TrainConfig
from .training.data import AttributionData, load_attribution_data, narrow_attacks, quantize, split_validation
from .training.metrics import cross_table, scores_of, signature_metrics, summarise
from .training.models import Member, device_of, heads_of, predict_with_features
from .training.run import METRICS_JSON, RUN_FILE, load_run, read_run_meta
from .trust.report import trust_markdown, trust_report
from .trust.saving import SAVED_AS, parse_saved_as


def check_label_spaces(meta: RunMeta, data: AttributionData, run: str) -> None:
    problem = meta.label_spaces.matches(data.label_spaces)
    if problem:
        raise AttribkitError(f"the data set's {problem.replace('the run', f'run {run!r}')}")


def count_flops(members: dict[str, Member], in_chans: int, size: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(1, in_chans, size, size).to(device_of(members))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        for m in members.values():
            m.net.eval()(x)
    return int(counter.get_total_flops())


def delta_mtl(model: dict, baseline: dict, described: dict[str, dict]) -> float | None:
    """Eq. 15: the mean relative gain over the signatures both runs answer."""
    terms = []
    for metric, higher in signature_metrics(described):
        m, b = model.get(metric), baseline.get(metric)
        if m is None or b is None or b == 0:
            continue
        terms.append((m - b) / b if higher else -(m - b) / b)
    return round(100 * sum(terms) / len(terms), 3) if terms else None


def _evaluate_one(run: str, data: AttributionData, verify: bool, runtime: Runtime | None,
                  draw: bool = False) -> tuple[RunMeta, dict, dict, list, tuple]:
    """(run meta, metrics, what each metric is, the report's sections of figures if ``draw``, and
    (members, outputs, features) for the trust section: features only with ``draw``, one pass for both)."""
    meta, members = load_run(run, verify, runtime)
    check_label_spaces(meta, data, run)
    images = quantize(data.images) if TrainConfig.from_dict(meta.config).quantize else data.images
    outputs, features = predict_with_features(members, images, features=draw)
    scores = scores_of(members, data, outputs)
    result = summarise(scores, data)
    result["parameters_m"] = round(sum(sum(p.numel() for p in m.net.parameters()) for m in members.values()) / 1e6, 3)
    result["gflops"] = round(count_flops(members, meta.in_chans, meta.image_size) / 1e9, 4)
    result["tables"] = {s.key: cross_table(s, data) for s in scores if s.tabled}
    sections = []
    if draw:
        history = _history(Path(run), meta, verify)
        sections.append(("The model", model_figures(members, data, images, history, features=features)))
        sections += [(f"Head: {name}", head.report_figures(outputs, data.labels, data.label_spaces))
                     for name, head in heads_of(members).items()]
    return meta, result, {s.key: s.describe() for s in scores}, sections, (members, outputs, features)


def _validation_data(run, baselines: list, data_dir, verify: bool, stream: bool) -> AttributionData:
    """The run's own held-out images, which every baseline must have held out too."""
    meta = read_run_meta(run, verify)
    fraction = TrainConfig.from_dict(meta.config, where=str(run)).validation
    if fraction <= 0:
        raise AttribkitError(f"run {str(run)!r} was trained without a validation split; use --split test")
    for path in baselines:
        if TrainConfig.from_dict(read_run_meta(path, verify).config, where=str(path)).validation != fraction:
            raise AttribkitError(f"baseline {str(path)!r} held out another validation split than run {str(run)!r}, "
                                 f"so it trained on some of the images scored; use --split test")
    data = split_validation(load_attribution_data(data_dir, "train", verify, stream), fraction)[1]
    trained_on = meta.data.get("fingerprint")
    if trained_on and trained_on != data.fingerprint:
        raise AttribkitError(f"run {str(run)!r} was trained on another data set than {str(data_dir)!r}, so it has "
                             f"no validation split there; use --split test")
    return data


def _history(run: Path, meta: RunMeta, verify: bool) -> list[dict]:
    """The per-epoch metrics for the training curves; a run without them is evaluated without that figure."""
    if not (run / METRICS_JSON).exists():
        storage.notice(f"{str(run / METRICS_JSON)!r} is missing: the report has no training curves")
        return []
    expected = storage.recorded_file(meta.file_record, METRICS_JSON, str(run / "run.json")) if verify else None
    try:
        history = json.loads(storage.read_bytes(run / METRICS_JSON, expected, error=AttribkitError))["epochs"]
    except (ValueError, KeyError, TypeError):
        raise AttribkitError(f"{str(run / METRICS_JSON)!r} is not a run's metrics file") from None
    if not isinstance(history, list) or not all(isinstance(r, dict) and "member" in r and "epoch" in r for r in history):
        raise AttribkitError(f"{str(run / METRICS_JSON)!r} is not a run's metrics file")
    return history


def _check_out(out: Path) -> None:
    """The report's folder must not be a run's or a data set's, nor a data set's shards folder: its
    figures and files would mix with theirs. A folder inside a run (the default RUN/evaluation) is fine."""
    for folder, record in ((out, RUN_FILE), (out, MANIFEST), (out.parent, MANIFEST)):
        if (folder / record).exists():
            where = "a run or data set folder" if folder == out else "inside a data set"
            raise AttribkitError(f"--out {str(out)!r} is {where} (beside {record}); write the report to a folder "
                                 f"of its own")


def _listed(value, name: str, what: str) -> list:
    """A list argument of the API as a list: None is none; a lone string is refused, since iterating it
    would take each character for an entry."""
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        raise AttribkitError(f"{name} must be a list of {what}, got the single value {str(value)!r}: "
                             f"write [{str(value)!r}]")
    return list(value)


def evaluate(run: str | Path, data_dir: str | Path, baseline: str | Path | list | tuple | None = None,
             out: str | Path | None = None, split: str = "test", verify: bool = True,
             runtime: Runtime | None = None, *, unknown: list | tuple = (),
             saved_as: list | tuple = SAVED_AS) -> dict:
    """``baseline`` is one run or several: each gets a row and a Δ_MTL; the first is
    the report's ``baseline``. ``verify=False`` reads the run(s) and data set without
    checking their recorded hashes. With the runtime's ``stream``, images are read
    from the data set's files a batch at a time.

    The report's ``trust`` section (:mod:`attribkit.trust.report`) has the calibration,
    the verdicts on the split (clean recall, false rejections), for each data set in
    ``unknown`` (attacks or victims outside the run) how well its images are told from
    known ones, and the signature metrics with the images saved in each of ``saved_as``."""
    unknown, saved_as = _listed(unknown, "unknown", "data set folders"), _listed(saved_as, "saved_as", "formats")
    if out is not None:
        _check_out(Path(out))
    for fmt in saved_as:
        parse_saved_as(fmt)  # a typo fails before any work
    rt = runtime_of(runtime)
    with rt.numerics_in_effect():
        return _evaluate(run, data_dir, baseline, out, split, verify, rt, list(unknown), list(saved_as))


def _evaluate(run, data_dir, baseline, out, split: str, verify: bool, rt: Runtime, unknown: list,
              saved_as: list) -> dict:
    baselines = [baseline] if isinstance(baseline, (str, Path)) else list(baseline or [])
    if split == "validation":
        data = _validation_data(run, baselines, data_dir, verify, rt.stream)
    else:
        data = load_attribution_data(data_dir, split, verify, rt.stream)
    trained_on = TrainConfig.from_dict(read_run_meta(run, verify).config, where=str(Path(run) / RUN_FILE)).attacks
    if trained_on:  # a run of some of the data set's attacks is scored on those (the rest: --unknown)
        data = narrow_attacks(data, trained_on)
    meta, result, described, sections, (members, outputs, features) = _evaluate_one(str(run), data, verify, rt,
                                                                                     draw=True)
    report = {"run": str(run), "model": meta.config["model"], "data": str(data_dir), "split": split, **result}
    rows = []
    for path in baselines:
        base_meta, base, base_described, *_ = _evaluate_one(str(path), data, verify, rt)
        base.pop("tables")
        described = {**base_described, **described}
        rows.append({"run": str(path), "model": base_meta.config["model"], **base,
                     "delta_mtl_percent": delta_mtl(result, base, described)})
    report["scores"] = described
    report["trust"], found = trust_report(run, meta, members, data, data_dir, unknown, saved_as, verify, rt.stream,
                                          seen=(outputs, features))
    sections.append(("Trust: calibration and unknown attacks", found))
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
    described = report["scores"]
    columns = signature_metrics(described)
    value = lambda key, v: metric_text(described, key, v)
    lines = [f"# Evaluation of `{report['run']}` ({report['model']})", "",
             f"Data: `{report['data']}` ({report['split']} split, {report['examples']} examples).", "",
             "| model | params (M) | GFLOPs | " + " | ".join(described[k]["column"] for k, _ in columns) + " | Δ_MTL (%) |",
             "|---" * (len(columns) + 4) + "|"]
    baselines = report.get("baselines", [])
    rows = [report] + baselines
    for i, r in enumerate(rows):
        lines.append(f"| {r['model']} | {r['parameters_m']:.2f} | {r['gflops']:.4f} | "
                     + "".join(f"{value(k, r.get(k))} | " for k, _ in columns) + f"{signed(row_delta(report, i))} |")
    if len(baselines) > 1:
        lines += ["", f"Δ_MTL (%) of {report['model']} against each baseline: " + ", ".join(
            f"{b['model']} (`{b['run']}`) {signed(b['delta_mtl_percent'])}" for b in baselines) + "."]
    for key, d in described.items():
        if isinstance(report.get(f"{key}_per_attack"), dict):
            lines += ["", f"{d['title']} per attack:", "", "| attack | value |", "|---|---|"]
            lines += [f"| {a} | {value(key, v)} |" for a, v in report[f"{key}_per_attack"].items()]
    others = [k for k, d in described.items() if not d["signature"] and k in report]
    if others:  # heads from plugins, and single-label's exact class
        lines += ["", "Other heads:", "", "| metric | value |", "|---|---|"]
        lines += [f"| {described[k]['title']} | {value(k, report[k])} |" for k in others]
    for metric, table in report["tables"].items():
        victims = list(next(iter(table.values())).keys()) if table else []
        lines += ["", f"### {described[metric]['title']} per attack × victim", "",
                  "| attack | " + " | ".join(victims) + " |", "|---" * (len(victims) + 1) + "|"]
        lines += [f"| {a} | " + " | ".join(value(metric, row[v]) for v in victims) + " |" for a, row in table.items()]
    if "trust" in report:
        lines += trust_markdown(report["trust"])
    for p in report.get("plots", []):
        lines += ["", f"![{Path(p).stem}]({Path(p).name})"]
    return "\n".join(lines) + "\n"
