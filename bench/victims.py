"""Victim accuracy: the default zoo as `attribkit victims train` makes it, measured.

    python bench/victims.py [--arch resnet18 --arch vgg16 ...] [--epochs 8]

Trains each architecture at its default width on mnist5k (seed 0) and prints
its test accuracy on the held-out 20 % and its training time. The test
suite does not assert these figures: how accurate a small network gets
depends on which CPU kernels ran, so they are measured here, with the
machine named. Writes bench/results/victims.json.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from attribkit import plugins
from attribkit.data import load_dataset
from attribkit.victims.train import make_record, train_victim
from machine import cpu_name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", action="append", help="repeatable; default: every registered victim architecture")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--out", default="bench/results/victims.json")
    args = ap.parse_args()
    mnist = load_dataset("mnist5k")
    rows = []
    print(f"{'victim':<14}{'width':>7}{'test accuracy':>15}{'seconds':>10}")
    for arch in args.arch or plugins.registry().names("victims"):
        _, record = train_victim(make_record(arch, mnist, None), mnist, epochs=args.epochs, seed=0)
        rows.append({"victim": arch, "width": record.width, "epochs": args.epochs,
                     "test_accuracy": record.test_accuracy, "test_images": record.training["test_images"],
                     "seconds": record.training["seconds"]})
        print(f"{arch:<14}{record.width:>7g}{record.test_accuracy:>15.2%}{record.training['seconds']:>10.1f}")
    result = {"victims": rows, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
              "machine": cpu_name()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
