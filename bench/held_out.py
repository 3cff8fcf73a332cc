"""Leave one attack family out: train on the others, score the held-out one as unknown (docs/trust.md).

    python bench/held_out.py [--seeds 3] [--work bench/results/held-out-work] [--zoo bench/results/trust-work/zoo]

One data set of twelve attacks, built-in and the foolbox plugin's, against two
of the quick scenario's victims (ResNet18 and VGG16: DeepFool against
InceptionV3 costs minutes per batch on 2 cores; `--victims` and `--device cuda`
add it on a GPU, though one H200 had not finished generating that data set after
5 minutes), three values each, 40 train /
10 test examples per cell. For each family below, one MTAA run (the demo's
attributor) per seed is trained on the other families' attacks (``train --attack``) and
``evaluate --unknown`` on the same data set scores every attack of the held-out
family: AUROC of the unknown score against the run's own test images, the
share its threshold rejects, and what they were called. Needs the foolbox
plugin installed (plugins/attribkit-foolbox). Resumes: finished shards, runs
and evaluations in --work are kept.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from attribkit.evaluation import evaluate
from attribkit.generation.engine import generate
from attribkit.generation.scenario import parse_scenario
from attribkit.pipeline import DEMO
from attribkit.runtime import Quiet, Runtime
from attribkit.training.config import TrainConfig
from attribkit.training.run import RUN_FILE
from attribkit.training.trainer import train
from attribkit.victims.train import train_zoo
from machine import cpu_name

ATTACKS = [
    {"name": "fgsm", "grid": {"eps": [40, 120, 200]}},
    {"name": "bim", "grid": {"eps": [40, 120, 200]}},
    {"name": "mifgsm", "grid": {"eps": [40, 120, 200]}},
    {"name": "pgd", "grid": {"eps": [40, 120, 200]}, "settings": {"steps": 20}},
    {"name": "fb_linf_pgd", "grid": {"eps": [20, 60, 100]}, "settings": {"steps": 20}},
    {"name": "fb_l2_pgd", "grid": {"eps_l2": [1, 2, 3]}, "settings": {"steps": 20}},
    {"name": "cw", "grid": {"kappa": [2, 6, 10]}, "settings": {"steps": 60}},
    {"name": "fb_l2_cw", "grid": {"kappa": [0, 4, 8]}, "settings": {"binary_search_steps": 2, "steps": 50}},
    {"name": "deepfool", "grid": {"overshoot": [0.02, 0.1, 0.5]}},
    {"name": "fb_deepfool", "grid": {"overshoot": [0.02, 0.1, 0.5]}},
    {"name": "square", "grid": {"eps": [40, 120, 200]}, "settings": {"n_queries": 300}},
    {"name": "fb_boundary", "grid": {"steps": [50, 200]}},
]
# by how they search: the sign of the gradient under an L∞ budget; a gradient step under an L2 budget;
# an optimised logit margin; the nearest boundary's linearisation; random search on scores; the label only
FAMILIES = {
    "Linf gradient sign": ["fgsm", "bim", "mifgsm", "pgd", "fb_linf_pgd"],
    "L2 gradient": ["fb_l2_pgd"],
    "L2 margin optimisation": ["cw", "fb_l2_cw"],
    "minimal L2 (DeepFool)": ["deepfool", "fb_deepfool"],
    "score-based": ["square"],
    "decision-based": ["fb_boundary"],
}
VICTIMS = ["resnet18", "vgg16"]
PAPER_HEADS = ("attack", "victim", "hyperparameter")


def log(message: str, start: float) -> None:
    print(f"[{(time.time() - start) / 60:6.1f} min] {message}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="bench/results/held-out-work")
    ap.add_argument("--zoo", default="bench/results/trust-work/zoo")
    ap.add_argument("--seeds", type=int, default=1, help="train each fold with seeds 0 … N-1; the table shows means")
    ap.add_argument("--out", default="bench/results/held-out.json")
    ap.add_argument("--victims", default=",".join(VICTIMS),
                    help="comma-separated victims of --zoo (inception_v3 too is for a GPU: DeepFool against it is slow "
                         "on a CPU)")
    ap.add_argument("--device", default="cpu", help="where it attacks, trains and evaluates")
    args = ap.parse_args()
    victims = args.victims.split(",")
    rt = lambda: Runtime(device=args.device, progress=Quiet())
    start = time.time()
    work = Path(args.work)
    from attribkit.data import load_dataset

    train_zoo(args.zoo, victims, load_dataset("mnist5k"), epochs=DEMO["victim_epochs"], runtime=rt())
    data = work / "data"
    scenario = {"name": "held-out", "dataset": "mnist5k", "seed": 0, "zoo": args.zoo, "victims": victims,
                "batch_size": 32, "max_attempts_factor": 3, "cells": {"train": 40, "test": 10}, "attacks": ATTACKS}
    if not (data / "manifest.json").exists() or json.loads((data / "manifest.json").read_text())["status"] != "complete":
        log("generate …", start)
        generate(parse_scenario(scenario), data, runtime=rt())
    base = dict(backbone=DEMO["backbone"], width=DEMO["width"], input_scale=DEMO["input_scale"], epochs=DEMO["epochs"],
                schedule=DEMO["schedule"], heads=PAPER_HEADS)
    everything = [a["name"] for a in ATTACKS]
    device = args.device if args.device == "cpu" else torch.cuda.get_device_name()
    result = {"families": FAMILIES, "machine": f"{cpu_name()} ({platform.machine()}), {torch.get_num_threads()} threads, "
                                               f"torch {torch.__version__}", "device": device,
              "victims": victims, "seeds": args.seeds, "folds": {}}
    for family, held in FAMILIES.items():
        folds = []
        for seed in range(args.seeds):
            run = work / "runs" / (family.replace(" ", "-").replace("(", "").replace(")", "") + f"-s{seed}")
            if not (run / RUN_FILE).exists():
                log(f"train without {family}, seed {seed} …", start)
                train(data, TrainConfig(attacks=tuple(a for a in everything if a not in held), seed=seed, **base), run,
                      runtime=rt())
            report_file = run / "evaluation" / "evaluation.json"
            if not report_file.exists():
                log(f"evaluate without {family}, seed {seed} …", start)
                evaluate(run, data, out=run / "evaluation", unknown=[data], saved_as=[], runtime=rt())
            folds.append(json.loads(report_file.read_text()))
        result["folds"][family] = fold_summary(folds, held)
        log(f"without {family}: " + ", ".join(f"{a} AUROC {g['auroc']:.3f}"
                                               for a, g in result["folds"][family]["held_out"].items()), start)
        result["minutes"] = round((time.time() - start) / 60, 1)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")  # each fold as it ends: a stopped run keeps them
    print(f"leave one family out ({result['machine']}, mean of {args.seeds} seed(s))")
    print("| held-out family | attack | AUROC | FPR@95TPR % | rejected % | called (all seeds) | known acc % | "
          "known rejected % |")
    print("|---|---|---|---|---|---|---|---|")
    for family, fold in result["folds"].items():
        for attack, g in fold["held_out"].items():
            called = ", ".join(f"{k} {v}" for k, v in g["called"].items())
            print(f"| {family} | {attack} | {g['auroc']:.3f} | {100 * g['fpr_at_95_tpr']:.1f} | "
                  f"{100 * g['rejected']:.1f} | {called} | {100 * fold['known_attack_accuracy']:.1f} | "
                  f"{100 * fold['known_rejected']:.1f} |")
    log(f"written {args.out}", start)


def fold_summary(reports: list[dict], held: list[str]) -> dict:
    """One family's fold over seeds: means of each held-out attack's numbers, its answers added up."""
    mean = lambda values: round(statistics.mean(values), 6) if values else None
    per_attack = {}
    for attack in held:
        groups = [r["trust"]["unknown"][0]["per_attack"][attack] for r in reports
                  if attack in r["trust"]["unknown"][0]["per_attack"]]
        if not groups:
            continue
        called: dict[str, int] = {}
        for g in groups:
            for name, count in g["called"].items():
                called[name] = called.get(name, 0) + count
        per_attack[attack] = {"examples": groups[0]["examples"],
                              **{k: mean([g[k] for g in groups if g.get(k) is not None])
                                 for k in ("auroc", "fpr_at_95_tpr", "rejected")},
                              "auroc_per_seed": [g.get("auroc") for g in groups],
                              "called": dict(sorted(called.items(), key=lambda kv: -kv[1]))}
    return {"known_attack_accuracy": mean([r["attack_accuracy"] for r in reports]),
            "known_rejected": mean([r["trust"]["evaluated_split"].get("rejected") for r in reports]),
            "held_out": per_attack}


if __name__ == "__main__":
    main()
