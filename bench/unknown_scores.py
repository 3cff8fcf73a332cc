"""Which unknown-attack score tells attacks a run never saw from its own? (docs/trust.md)

    python bench/unknown_scores.py RUN DATA UNKNOWN [--out bench/results/unknown-scores.json]

Fits every score of attribkit.trust.unknown on RUN's training split (its
features and attack labels), sets each one's threshold at the validation
split's 95th percentile (as training does), and reports, for the test split
of UNKNOWN (a data set of attacks outside the run) and for DATA's clean test
images (never attacked): the AUROC against DATA's test split and the share
the threshold rejects; and for DATA's test split, the share rejected (the
false rejections). The run keeps the method it was trained with; this only
compares them.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch
from sklearn.metrics import roc_auc_score

from attribkit.storage.dataset import CLEAN, read_data_file, read_manifest
from attribkit.training.config import TrainConfig
from attribkit.training.data import load_attribution_data, quantize, split_validation
from attribkit.training.models import predict_with_features
from attribkit.training.run import load_run, load_trust
from attribkit.trust.fitted import attack_head_of
from attribkit.trust.unknown import METHODS, fit_scorer, unknown_scores
from attribkit.training.models import heads_of
from machine import cpu_name

CLEAN_IMAGES = 500  # of DATA's test split, unattacked


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("data")
    ap.add_argument("unknown")
    ap.add_argument("--out", default="bench/results/unknown-scores.json")
    args = ap.parse_args()
    meta, members = load_run(args.run)
    config = TrainConfig.from_dict(meta.config)
    trust = load_trust(args.run, meta)
    temperatures = trust.temperatures if trust else {}
    head = attack_head_of(heads_of(members), meta.label_spaces)
    prepare = (lambda x: quantize(x)) if config.quantize else (lambda x: x)

    def seen(images):
        outputs, features = predict_with_features(members, prepare(images), features=True)
        return outputs[head] / temperatures.get(head, 1.0), features

    train, validation = split_validation(load_attribution_data(args.data, "train"), config.validation)
    test = load_attribution_data(args.data, "test")
    outside = load_attribution_data(args.unknown, "test")
    manifest = read_manifest(args.data)
    clean, _ = read_data_file(Path(args.data), manifest, CLEAN)
    groups = {"test (known)": seen(test.images)}
    for i, attack in enumerate(outside.label_spaces.attacks):
        keep = outside.labels.attack == i
        if bool(keep.any()):
            groups[attack] = seen(outside.images[keep])
    groups["clean images"] = seen(clean["images"][clean["test_index"][:CLEAN_IMAGES]])
    fit_logits, fit_features = seen(train.images)
    val_logits, val_features = seen(validation.images)
    result = {"run": args.run, "data": args.data, "unknown": args.unknown,
              "machine": f"{cpu_name()} ({platform.machine()}), torch {torch.__version__}", "methods": {}}
    for method in METHODS:
        state = fit_scorer(method, fit_features, train.labels.attack)
        threshold = torch.quantile(unknown_scores(method, state, val_features, val_logits).double(), 0.95,
                                   interpolation="higher")
        scores = {name: unknown_scores(method, state, f, logits).double() for name, (logits, f) in groups.items()}
        known = scores.pop("test (known)")
        row = {"known_rejected": round(float((known > threshold).double().mean()), 4)}
        for name, s in scores.items():
            truth = torch.cat([torch.zeros(len(known)), torch.ones(len(s))]).numpy()
            row[name] = {"examples": len(s), "auroc": round(float(roc_auc_score(truth, torch.cat([known, s]).numpy())), 4),
                         "rejected": round(float((s > threshold).double().mean()), 4)}
        result["methods"][method] = row
    names = [n for n in groups if n != "test (known)"]
    print(f"AUROC against the test split / rejected at the validation 95th percentile ({result['machine']})")
    print("| score | known rejected | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 2) + "|")
    for method, row in result["methods"].items():
        print(f"| {method} | {100 * row['known_rejected']:.1f} % | "
              + " | ".join(f"{row[n]['auroc']:.3f} / {100 * row[n]['rejected']:.0f} %" for n in names) + " |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
