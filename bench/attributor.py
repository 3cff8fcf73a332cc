"""Where does the attributor lose the perturbation? Train variants on one data set, compare on validation.

    python bench/attributor.py --data attribkit-demo/data --work bench/work/attributor \
        --study detail --seeds 0 1 2 [--test] [--plot docs/learning-curve.png] [--errors test]

Each study is a list of named variants (train options over TrainConfig's
defaults), each trained once per seed into WORK/STUDY/VARIANT/seed-N. A run
that already exists is reused, so an interrupted study continues where it
stopped. Variants are compared on the validation split, which every run on
the data set holds out the same way (never on test: that is for choosing
nothing). ``--test`` adds the test split's numbers, for the final report.
Prints a table (mean ± half the spread over seeds, n = seeds), and writes
bench/results/attributor-STUDY.json; ``--plot`` draws metric against a
variant's ``per_cell``. ``--test --test-data FOLDER`` scores the test split
of another data set of the same scenario instead (bench/scenarios/quick-widetest.toml:
the demo's scenario with 150 examples per test cell, from about 350 digits
instead of 41). The seconds per run are wall time on whatever else the
machine was doing: read them as rough.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import attribkit
from attribkit.pipeline import DEMO
from attribkit.training.config import TrainConfig
from attribkit.training.run import RUN_FILE
from attribkit.training.trainer import train
from machine import cpu_name

METRICS = ("attack_accuracy", "victim_accuracy", "hp_rmse")
PAPER_HEADS = ("attack", "victim", "hyperparameter")  # not whatever head plugins are installed
OLD = dict(stem="timm", input_scale=2)  # the attributor before this study
NEW = dict(stem="stride1", input_scale=1)
CONVNET = dict(backbone="convnet", width=0.5, input_scale=1)
DEMO_MTAA = {k: v for k, v in DEMO.items() if k != "victim_epochs"}

STUDIES = {
    # where the detail goes: stem reduction, upscale, width, the perturbation extractor
    "detail": {
        "stride-1 stem": dict(**NEW, epochs=12),
        "timm stem, upscale 2 (old default)": dict(**OLD, epochs=12),
        "cnn": dict(model="cnn", epochs=12),
        "timm stem, upscale 1": dict(stem="timm", input_scale=1, epochs=12),
        "stride-1 stem, no perturbation extractor": dict(**NEW, perturbation=False, epochs=12),
        "timm stem, upscale 4": dict(stem="timm", input_scale=4, epochs=12),
        "stride-1 stem, width 0.5": dict(**NEW, width=0.5, epochs=12),
        "convnet backbone, width 0.5": dict(backbone="convnet", width=0.5, input_scale=1, epochs=12),
        "convnet backbone, width 1": dict(backbone="convnet", width=1.0, input_scale=1, epochs=12),
    },
    # settings of the convnet backbone, which the detail study found to keep the perturbation
    "convnet": {
        "width 0.5, 12 epochs, cosine": dict(**CONVNET, epochs=12),
        "width 0.5, 12 epochs, one-cycle": dict(**CONVNET, epochs=12, schedule="onecycle"),
        "width 0.5, 12 epochs, no perturbation extractor": dict(**CONVNET, epochs=12, perturbation=False),
        "width 0.5, 8 epochs, one-cycle": dict(**CONVNET, epochs=8, schedule="onecycle"),
        "width 0.5, 8 epochs, one-cycle, batch 128, lr 2e-3": dict(**CONVNET, epochs=8, schedule="onecycle",
                                                                   batch_size=128, lr=2e-3),
    },
    # what the heads read: the mean of each feature map, or its mean and maximum
    "pool": {
        "mtaa (the demo's), avg pool": dict(DEMO_MTAA),
        "mtaa (the demo's), avg+max pool": dict(DEMO_MTAA, pool="avg+max"),
    },
    # the bar, on the demo's data set: MTAA as the demo trains it against the plain CNN
    # and against single-task with the same backbone; test numbers once, at the end (--test)
    "bar": {
        "mtaa (the demo's)": dict(DEMO_MTAA),
        "cnn (12 epochs, one network per signature)": dict(model="cnn", epochs=12),
        "mtaa, convnet width 1": dict(DEMO_MTAA, width=1.0),
        "mtaa, convnet width 1, 12 epochs (as the cnn)": dict(DEMO_MTAA, width=1.0, epochs=12),
        "single-task (the demo's backbone)": dict(DEMO_MTAA, model="single-task"),
        # longer training, which the capacity study found to help more than width (validation)
        "mtaa, convnet width 0.5, 24 epochs": dict(DEMO_MTAA, epochs=24),
        "mtaa, convnet width 1, 20 epochs": dict(DEMO_MTAA, width=1.0, epochs=20),
    },
    # the parts of MTAA around the shared features, for attack accuracy (the signature the CNN leads on)
    "attack": {
        "mtaa (the demo's)": dict(DEMO_MTAA),
        "summed loss": dict(DEMO_MTAA, loss="sum"),
        "no perturbation extractor": dict(DEMO_MTAA, perturbation=False),
        "one-cycle": dict(DEMO_MTAA, schedule="onecycle"),
    },
    # capacity and training length at the full data size (one seed: the costly ones take minutes each)
    "capacity": {
        "convnet width 0.25, 12 epochs": dict(DEMO_MTAA, width=0.25, epochs=12),
        "convnet width 0.5, 6 epochs": dict(DEMO_MTAA, epochs=6),
        "convnet width 0.5, 12 epochs": dict(DEMO_MTAA, epochs=12),
        "convnet width 0.5, 24 epochs": dict(DEMO_MTAA, epochs=24),
        "convnet width 1, 12 epochs": dict(DEMO_MTAA, width=1.0, epochs=12),
        "resnet18 width 0.25 (old default), 12 epochs": dict(**OLD, epochs=12),
        "resnet50 width 0.25, upscale 2, 12 epochs": dict(**OLD, backbone="resnet50", epochs=12),
    },
    # examples per cell, MTAA against single-task with the same backbone
    "learning-curve": {
        f"{model} {n}/cell": dict(DEMO_MTAA, model=model, per_cell=n)
        for model in ("mtaa", "single-task") for n in (9, 18, 36, 72)
    },
}


def run_variant(data: Path, folder: Path, options: dict, seed: int) -> dict:
    run = folder / f"seed-{seed}"
    if not (run / RUN_FILE).exists():
        config = replace(TrainConfig(), **{"heads": PAPER_HEADS, **options}, seed=seed)
        start = time.time()
        train(data, config, run)
        print(f"  trained {run} in {time.time() - start:.0f} s", flush=True)
    return json.loads((run / RUN_FILE).read_text())


def variant_folder(work: Path, study: str, name: str) -> Path:
    return work / study / name.replace(" ", "_").replace("/", "-")


def evaluated(run: Path, data) -> tuple[dict, list[dict]]:
    """A run's metrics on ``data`` and every head's answer for each example, on the images as the run
    was trained to see them."""
    from attribkit.evaluation import check_label_spaces
    from attribkit.training.data import quantize
    from attribkit.training.metrics import scores_of, summarise
    from attribkit.training.models import heads_of, predict

    meta, members = attribkit.load_run(run)
    check_label_spaces(meta, data, str(run))
    outputs = predict(members, quantize(data.images) if TrainConfig.from_dict(meta.config).quantize else data.images)
    answers: list[dict] = [{} for _ in range(len(data))]
    for head in heads_of(members).values():
        for row, answer in zip(answers, head.answer(outputs)):
            row.update(answer)
    return summarise(scores_of(members, data, outputs), data), answers


def score(run: Path, data_dir: Path) -> dict:
    """A run's metrics on another data set's test split, which must have the run's label spaces."""
    return evaluated(run, attribkit.load_data(data_dir, "test"))[0]


def attack_errors(data_dir: Path, runs: dict[str, list[Path]], split: str) -> str:
    """Each variant's misattributed attacks on ``split`` (true → predicted, victim, value) and the clean
    images they were made from. Few distinct clean images stand behind a split (the generator shares
    one clean-image order across cells), so an error that recurs across seeds is usually one hard digit."""
    from collections import Counter

    import torch

    from attribkit.evaluation import _validation_data

    test = attribkit.load_data(data_dir, "test") if split == "test" else None
    lines = []
    for name, folders in runs.items():
        # evaluate's own rule: the runs must have held out the same images of this data set
        data = test if test is not None else _validation_data(folders[0], folders[1:], data_dir, True)
        spaces = data.label_spaces
        if not lines:
            lines = [f"attack errors on {split}: {len(data)} examples made from "
                     f"{len(torch.unique(data.clean_index))} distinct clean images", ""]
        per_image, kinds = Counter(), Counter()
        for folder in folders:
            said = [answer["attack"] for answer in evaluated(folder, data)[1]]
            for i, attack in enumerate(said):
                truth = spaces.attacks[int(data.labels.attack[i])]
                if attack == truth:
                    continue
                hp = next(round(float(x)) for x in data.labels.hp[i] if x == x)
                kinds[(truth, attack, spaces.victims[int(data.labels.victim[i])], hp)] += 1
                per_image[int(data.clean_index[i])] += 1
        lines.append(f"{name} ({len(folders)} seeds): {sum(kinds.values())} errors from {len(per_image)} clean "
                     f"images {dict(per_image.most_common())}")
        lines += [f"    {a} → {b} on {v} at {hp}: {n}" for (a, b, v, hp), n in kinds.most_common()]
    return "\n".join(lines)


def summarise(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "spread": (max(values) - min(values)) / 2, "n": len(values),
            "values": values}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--study", required=True, choices=sorted(STUDIES))
    ap.add_argument("--variants", nargs="*", help="only these variants of the study (default: all)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--test", action="store_true", help="also report the test split (final numbers only)")
    ap.add_argument("--plot", type=Path, help="PNG of each metric against per_cell (learning curves)")
    ap.add_argument("--test-data", type=Path,
                    help="with --test: score on this data set's test split instead (the same scenario and zoo "
                         "with more examples per test cell, so more distinct digits)")
    ap.add_argument("--errors", choices=("validation", "test"),
                    help="list each variant's attack errors on this split and the clean images they were made "
                         "from (trains nothing: the runs must exist)")
    args = ap.parse_args()

    variants = {k: v for k, v in STUDIES[args.study].items() if not args.variants or k in args.variants}
    if args.errors:
        print(attack_errors(args.data, {name: [variant_folder(args.work, args.study, name) / f"seed-{s}"
                                               for s in args.seeds] for name in variants}, args.errors))
        return
    rows = {}
    for name, options in variants.items():
        print(f"{args.study}: {name}", flush=True)
        metas = [run_variant(args.data, variant_folder(args.work, args.study, name), options, seed)
                 for seed in args.seeds]
        row = {"options": options, "seconds": summarise([m["seconds"] for m in metas]),
               "parameters_m": round(sum(metas[0]["parameters"].values()) / 1e6, 3),
               "train_examples": metas[0]["data"]["train"]}
        for split in ("validation", "test") if args.test else ("validation",):
            if split == "test" and args.test_data:
                finals = [score(variant_folder(args.work, args.study, name) / f"seed-{s}", args.test_data)
                          for s in args.seeds]
            else:
                finals = [m[f"final_{split}_metrics"] for m in metas]
            row[split] = {k: summarise([f[k] for f in finals]) for k in METRICS if all(f.get(k) is not None for f in finals)}
        rows[name] = row
    report = {"study": args.study, "data": str(args.data), "seeds": args.seeds, "machine": cpu_name(), "rows": rows,
              **({"test_data": str(args.test_data)} if args.test and args.test_data else {})}
    out = Path("bench/results") / f"attributor-{args.study}{'-test-data' if 'test_data' in report else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(table(report))
    if any("per_cell" in r["options"] for r in rows.values()):
        report["extrapolated_160_per_cell"] = extrapolate(report, 160)
        out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"\nextrapolated to 160 per cell (power law of the error against examples per cell, fitted to "
              f"the validation means): {json.dumps(report['extrapolated_160_per_cell'])}")
    if args.plot:
        plot(report, args.plot)
    print(f"wrote {out}")


def _cell(stat: dict | None, percent: bool) -> str:
    if stat is None:
        return "–"
    scale = 100 if percent else 1
    if stat["n"] == 1:
        return f"{scale * stat['mean']:.2f}"
    return f"{scale * stat['mean']:.2f} ± {scale * stat['spread']:.2f}"


def table(report: dict) -> str:
    splits = [s for s in ("validation", "test") if any(s in r for r in report["rows"].values())]
    head = "| variant | params (M) | train ex. | s/run |" + "".join(
        f" {s} attack (%) | {s} victim (%) | {s} RMSE |" for s in splits)
    spread = "; mean ± half the spread over seeds" if len(report["seeds"]) > 1 else ""
    other = f"; test: the test split of {report['test_data']}" if "test_data" in report else ""
    lines = [f"{report['study']} on {report['data']}{other}, seeds {report['seeds']} ({report['machine']}){spread}", "",
             head, "|---" * (4 + 3 * len(splits)) + "|"]
    for name, r in report["rows"].items():
        cells = [_cell(r[s].get(m), m != "hp_rmse") for s in splits for m in METRICS]
        lines.append(f"| {name} | {r['parameters_m']:.2f} | {r['train_examples']} | {r['seconds']['mean']:.0f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def extrapolate(report: dict, to: int) -> dict:
    """Fit error = a · n^-b (accuracy's error is 1 - accuracy; RMSE is its own) per model and metric
    by least squares in log-log, and read it at ``to`` examples per cell. A rough guide, not a measurement."""
    import math

    found = {}
    for model in sorted({r["options"].get("model", "mtaa") for r in report["rows"].values()}):
        for metric in METRICS:
            pts = [(r["options"]["per_cell"], r["validation"][metric]["mean"]) for r in report["rows"].values()
                   if r["options"].get("model", "mtaa") == model and metric in r["validation"]]
            err = [(math.log(n), math.log(v if metric == "hp_rmse" else max(1e-4, 1 - v))) for n, v in pts]
            if len(err) < 2:
                continue
            mx, my = sum(x for x, _ in err) / len(err), sum(y for _, y in err) / len(err)
            slope = sum((x - mx) * (y - my) for x, y in err) / sum((x - mx) ** 2 for x, _ in err)
            at = math.exp(my + slope * (math.log(to) - mx))
            found.setdefault(model, {})[metric] = round(at if metric == "hp_rmse" else 1 - at, 4)
    return found


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["options"].get("model", "mtaa") for r in report["rows"].values()})
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, metric in zip(axes, METRICS):
        for model in models:
            pts = sorted((r["options"]["per_cell"], r["validation"][metric]) for r in report["rows"].values()
                         if r["options"].get("model", "mtaa") == model and metric in r["validation"])
            xs = [p for p, _ in pts]
            scale = 1 if metric == "hp_rmse" else 100
            ax.errorbar(xs, [scale * s["mean"] for _, s in pts], yerr=[scale * s["spread"] for _, s in pts],
                        marker="o", capsize=3, label=model)
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])  # the sizes trained, not powers of two
        ax.set_xlabel("training examples per cell (at most)")
        ax.set_title({"hp_rmse": "hyperparameter RMSE"}.get(metric, metric.replace("_", " ") + " (%)"))
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"validation split, mean and spread over seeds {report['seeds']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
