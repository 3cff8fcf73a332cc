"""Peak memory of `attribkit train` on a data set 10× larger than another, loaded and streamed.

    python bench/memory.py --data attribkit-demo/data [--small-mb 100] [--ratio 10] [--modes stream,memory]

Makes two data sets of about SMALL and RATIO × SMALL MB of adversarial images by
repeating the rows of DATA's train shards (real attacks, so the pipeline is the
real one; the repetition only changes what accuracy means, which this bench does
not measure), then trains one epoch on each in a fresh process per run and reads
that process's peak resident memory (ru_maxrss). The issue's bar: streamed, the
larger may use at most 1.2× the smaller's peak. Prints a table and writes
bench/results/memory.json (--out).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from attribkit import storage
from attribkit.storage.dataset import (CLEAN, MANIFEST, data_files, read_data_file, read_manifest, save_file,
                                       shard_file, write_manifest)
from machine import cpu_name

TRAIN = dict(width=0.0625, epochs=1, batch_size=256, input_scale=1, validation=0.0)
CHILD = """
import json, resource, sys, time
from attribkit import Runtime, train
from attribkit.training.config import TrainConfig
start = time.time()
train(sys.argv[1], TrainConfig(**json.loads(sys.argv[3])), sys.argv[2], runtime=Runtime(stream=sys.argv[4] == "stream"))
print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "seconds": time.time() - start}))
"""


def scaled_copy(source: Path, out: Path, megabytes: float) -> int:
    """A data set whose train shards repeat SOURCE's rows to about MEGABYTES of images; its test split as is."""
    if (out / MANIFEST).exists():
        return read_manifest(out).totals["train"]["examples"]
    manifest = read_manifest(source)
    out.mkdir(parents=True)
    shutil.copy(source / CLEAN, out / CLEAN)
    train = {n: s for n, s in manifest.shards.items() if s.split == "train"}
    row_bytes = None
    examples = 0
    for name in sorted(manifest.shards):
        tensors, meta = read_data_file(source, manifest, shard_file(name))
        if name in train:
            row_bytes = row_bytes or tensors["images"][0].numel() * 4
            per_shard = megabytes * 2 ** 20 / row_bytes / len(train)
            repeat = max(1, round(per_shard / max(1, len(tensors["images"]))))
            tensors = {k: v.repeat(repeat, *([1] * (v.ndim - 1))) for k, v in tensors.items()}
            manifest.shards[name].examples = len(tensors["images"])
            examples += len(tensors["images"])
        save_file(out, manifest, shard_file(name), tensors, meta)
    manifest.files[CLEAN] = storage.record_of_file(out / CLEAN).to_json()
    manifest.totals = {"train": {"examples": examples}}
    write_manifest(out, manifest)
    assert sorted(manifest.files) == sorted(data_files(manifest.shards))
    return examples


def measure(data: Path, run: Path, mode: str) -> dict:
    shutil.rmtree(run, ignore_errors=True)
    done = subprocess.run([sys.executable, "-c", CHILD, str(data), str(run), json.dumps(TRAIN), mode],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--work", type=Path, default=Path("bench/results/memory-work"))
    ap.add_argument("--small-mb", type=float, default=100)
    ap.add_argument("--ratio", type=float, default=10)
    ap.add_argument("--modes", default="stream,memory")
    ap.add_argument("--out", type=Path, default=Path("bench/results/memory.json"))
    args = ap.parse_args()
    sizes = {"small": args.small_mb, "large": args.small_mb * args.ratio}
    rows = []
    for label, mb in sizes.items():
        data = args.work / f"data-{label}"
        examples = scaled_copy(args.data, data, mb)
        on_disk = sum(p.stat().st_size for p in data.rglob("*.safetensors")) / 2 ** 20
        for mode in args.modes.split(","):
            started = time.time()
            found = measure(data, args.work / f"run-{label}-{mode}", mode)
            rows.append({"data": label, "train_examples": examples, "data_mb": round(on_disk, 1), "mode": mode,
                         "peak_rss_mb": round(found["peak_mb"], 1), "train_seconds": round(found["seconds"], 1)})
            print(f"{label:5} {examples:8d} examples {on_disk:8.1f} MB  {mode:6}  peak RSS {found['peak_mb']:8.1f} MB  "
                  f"{found['seconds']:6.1f} s (wall {time.time() - started:.0f} s)", flush=True)
    ratios = {}
    for mode in args.modes.split(","):
        small, large = (next(r for r in rows if r["data"] == d and r["mode"] == mode) for d in ("small", "large"))
        ratios[mode] = round(large["peak_rss_mb"] / small["peak_rss_mb"], 3)
        print(f"{mode}: larger / smaller peak = {ratios[mode]:.3f}")
    result = {"cpu": cpu_name(), "torch": torch.__version__, "train": TRAIN, "rows": rows, "peak_ratio": ratios,
              "date": time.strftime("%Y-%m-%d")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
