"""Generation speed: attribkit's engine vs a naive per-cell loop vs the hardware.

    python bench/generation.py --zoo attribkit-demo/zoo [--per-cell 16] [--scenario quick]

On the same victims, grid and clean images it measures
  (a) `generate` (attribkit's engine: FGSM's one gradient for all ε, PGD and
      C&W running every value of the grid in one batch),
  (b) a naive loop calling the attack once per (victim, attack, value) cell:
      torchattacks.FGSM / torchattacks.PGD, and attribkit's C&W with one κ
      per call (torchattacks' C&W ignores κ, so it cannot stand in), on the
      victim as a torchattacks user holds it: weights loaded, parameters
      requiring gradients (PyTorch's default), default memory format
      (torchattacks switches it to eval mode itself); and, to show where the
      speed-up comes from, (b') the same loop on attribkit's prepared victim
      (frozen, channels-last),
  (c) each victim's raw forward+backward throughput (image-steps/s), the
      ceiling for iterative attacks,
and the peak RSS of `generate` at two data-set sizes. Prints tables and
writes bench/results/generation.json. Every cell attacks exactly
--per-cell images (failures kept, no retries) so (a) and (b) do equal work.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from attribkit import plugins
from attribkit.data import load_dataset, split_dataset
from attribkit.generation.engine import generate
from attribkit.generation.scenario import load_scenario, parse_scenario
from attribkit.storage import finite_or_null
from attribkit.victims import load_victim
from attribkit.victims.store import build_network, load_weights, read_record, victim_path, wrap
from machine import cpu_name


def scenario_dict(name: str, zoo: str, per_cell: int) -> dict:
    sc = load_scenario(name).to_dict()
    return {
        "name": f"bench-{sc['name']}", "dataset": sc["dataset"], "seed": sc["seed"], "zoo": zoo,
        "victims": [v["name"] for v in sc["victims"]], "batch_size": per_cell, "keep_failed": True,
        "max_attempts_factor": 1, "cells": {"train": per_cell, "test": 1},
        "attacks": [{"name": a["name"], "grid": a["grid"], "settings": a["settings"]} for a in sc["attacks"]],
    }


def image_steps(attack: dict, images: int) -> int:
    steps = attack["settings"].get("steps", 1)
    return images * (steps + 1)  # every step one forward+backward, plus the final check


def run_engine(data: dict, device: str = "cpu") -> dict[str, float]:
    from attribkit import Runtime

    with tempfile.TemporaryDirectory() as tmp:
        manifest = generate(parse_scenario(data), Path(tmp) / "out", runtime=Runtime(device=device))
    per_attack: dict[str, float] = {}
    for shard in manifest.shards.values():
        if shard.split == "train":
            per_attack[shard.attack] = per_attack.get(shard.attack, 0.0) + shard.seconds
    return per_attack


def user_victim(zoo: str, name: str):
    """The victim as someone calling torchattacks would hold it (same return as load_victim)."""
    record = read_record(zoo, name)
    victim = wrap(record, build_network(record))
    load_weights(victim, victim_path(zoo, name), name)
    return victim.eval(), record


def run_naive(data: dict, per_cell: int, prepared: bool) -> dict[str, float]:
    import torchattacks

    from attribkit.attacks.cw import cw_l2

    ds = load_dataset(data["dataset"])
    split = split_dataset(ds.labels, 0.2, data["seed"])
    x, y = ds.images[split.train[:per_cell]], ds.labels[split.train[:per_cell]]
    per_attack = {a["name"]: 0.0 for a in data["attacks"]}
    for victim_name in data["victims"]:
        model, _ = (load_victim if prepared else user_victim)(data["zoo"], victim_name)
        for attack in data["attacks"]:
            s = attack["settings"]
            for value in next(iter(attack["grid"].values())):
                torch.manual_seed(0)
                t = time.perf_counter()
                if attack["name"] == "fgsm":
                    torchattacks.FGSM(model, eps=value / 255)(x, y)
                elif attack["name"] == "pgd":
                    torchattacks.PGD(model, eps=value / 255, alpha=s["alpha"], steps=s["steps"])(x, y)
                else:
                    cw_l2(model, x, y, [{"kappa": value}], s)
                with torch.no_grad():
                    model(x)  # the success check the engine also makes
                per_attack[attack["name"]] += time.perf_counter() - t
    return per_attack


def raw_throughput(zoo: str, victims: list[str], batch: int, prepared: bool = True,
                   repeats: int = 5, device: str = "cpu") -> dict[str, float]:
    out = {}
    for name in victims:
        model, record = (load_victim if prepared else user_victim)(zoo, name)
        model = model.to(device)
        x = torch.rand(batch, record.in_chans, record.image_size, record.image_size, device=device)
        labels = torch.zeros(batch, dtype=torch.long, device=device)
        for _ in range(2):  # warm-up
            _step(model, x, labels)
        _wait(device)
        t = time.perf_counter()
        for _ in range(repeats):
            _step(model, x, labels)
        _wait(device)  # a GPU's kernels run after the Python returns: count them
        out[name] = batch * repeats / (time.perf_counter() - t)
    return out


def _wait(device: str) -> None:
    if device != "cpu":
        torch.cuda.synchronize(device)


def _step(model, x, labels):
    x = x.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(model(x), labels, reduction="sum")
    torch.autograd.grad(loss, x)


def peak_rss_mb(data: dict) -> float:
    """Peak RSS of a fresh process that generates this scenario."""
    code = ("import json, resource, sys, tempfile, pathlib\n"
            "from attribkit.generation.engine import generate\nfrom attribkit.generation.scenario import parse_scenario\n"
            "with tempfile.TemporaryDirectory() as t: generate(parse_scenario(json.loads(sys.argv[1])), pathlib.Path(t) / 'o')\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(data)], capture_output=True, text=True, check=True)
    return float(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", required=True)
    ap.add_argument("--scenario", default="quick")
    ap.add_argument("--per-cell", type=int, default=16)
    ap.add_argument("--skip-rss", action="store_true")
    ap.add_argument("--skip-naive", action="store_true",
                    help="time the engine and the raw ceiling only (e.g. to compare --device cpu and cuda)")
    ap.add_argument("--device", default="cpu", help="where the engine attacks (the naive loop stays on the CPU)")
    ap.add_argument("--out", default="bench/results/generation.json")
    args = ap.parse_args()
    plugins.registry()
    data = scenario_dict(args.scenario, args.zoo, args.per_cell)
    images = {a["name"]: args.per_cell * len(data["victims"]) * len(next(iter(a["grid"].values())))
              for a in data["attacks"]}
    engine = run_engine(data, args.device)
    if args.skip_naive:  # NaN: the table prints nan and the JSON null, not a made-up number
        naive = naive_prepared = {name: float("nan") for name in engine}
    else:
        naive = run_naive(data, args.per_cell, prepared=False)
        naive_prepared = run_naive(data, args.per_cell, prepared=True)
    raw = raw_throughput(args.zoo, data["victims"], args.per_cell * 5, device=args.device)
    raw_user = raw_throughput(args.zoo, data["victims"], args.per_cell * 5, prepared=False, device=args.device)
    # the ceiling for a whole attack: image-steps at each victim's raw rate
    rows = []
    for a in data["attacks"]:
        name = a["name"]
        ceiling_s = sum(image_steps(a, images[name] // len(data["victims"])) / raw[v] for v in data["victims"])
        rows.append({"attack": name, "images": images[name], "engine_s": round(engine[name], 2),
                     "naive_s": round(naive[name], 2), "naive_prepared_s": round(naive_prepared[name], 2),
                     "engine_img_s": round(images[name] / engine[name], 1),
                     "naive_img_s": round(images[name] / naive[name], 1),
                     "speedup": round(naive[name] / engine[name], 2),
                     "speedup_vs_prepared": round(naive_prepared[name] / engine[name], 2),
                     "fraction_of_raw": round(ceiling_s / engine[name], 3)})
    total_e, total_n, total_p = sum(engine.values()), sum(naive.values()), sum(naive_prepared.values())
    print(f"{'attack':<8}{'images':>8}{'engine s':>10}{'naive s':>10}{'prepared s':>11}{'engine img/s':>14}"
          f"{'naive img/s':>13}{'speed-up':>10}{'vs prepared':>12}{'of raw':>8}")
    for r in rows:
        print(f"{r['attack']:<8}{r['images']:>8}{r['engine_s']:>10.2f}{r['naive_s']:>10.2f}{r['naive_prepared_s']:>11.2f}"
              f"{r['engine_img_s']:>14.1f}{r['naive_img_s']:>13.1f}{r['speedup']:>9.2f}×"
              f"{r['speedup_vs_prepared']:>11.2f}×{r['fraction_of_raw']:>8.0%}")
    print(f"{'all':<8}{sum(images.values()):>8}{total_e:>10.2f}{total_n:>10.2f}{total_p:>11.2f}"
          f"{sum(images.values()) / total_e:>14.1f}{sum(images.values()) / total_n:>13.1f}{total_n / total_e:>9.2f}×"
          f"{total_p / total_e:>11.2f}×")
    print("raw forward+backward, image-steps/s, prepared victim: " + ", ".join(f"{k} {v:.0f}" for k, v in raw.items()))
    print("raw forward+backward, image-steps/s, user's victim:   "
          + ", ".join(f"{k} {v:.0f}" for k, v in raw_user.items()))
    rss = {}
    if not args.skip_rss:
        for per_cell in (args.per_cell, 4 * args.per_cell):
            rss[per_cell] = round(peak_rss_mb(scenario_dict(args.scenario, args.zoo, per_cell)), 1)
        print("peak RSS of generate: " + ", ".join(f"{k}/cell {v} MB" for k, v in rss.items()))
    result = {"scenario": args.scenario, "per_cell": args.per_cell, "victims": data["victims"], "attacks": rows,
              "total": {"engine_s": round(total_e, 2), "naive_s": round(total_n, 2),
                        "naive_prepared_s": round(total_p, 2), "speedup": round(total_n / total_e, 2),
                        "speedup_vs_prepared": round(total_p / total_e, 2)},
              "raw_image_steps_per_s": {k: round(v, 1) for k, v in raw.items()},
              "raw_image_steps_per_s_user_victim": {k: round(v, 1) for k, v in raw_user.items()},
              "peak_rss_mb": rss, "torch_threads": torch.get_num_threads(), "machine": cpu_name(),
              "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
              "peak_rss_this_process_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(finite_or_null(result), indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
