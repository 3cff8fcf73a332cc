"""Attribution throughput: `attribkit attribute` on a folder of PNG files, end to end.

    python bench/attribute.py --run attribkit-demo/run --data attribkit-demo/data [--n 10000]

Writes N PNG files made from the data set's adversarial test images, then
times (a) the CLI as a user runs it (process start, model load, decoding,
forward pass, JSON output) and (b) the in-process `attribute()` call.
Prints a table and writes bench/results/attribute.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from attribkit import Runtime
from attribkit.attribution import attribute
from attribkit.storage.dataset import load_split
from machine import cpu_name


def write_pngs(data: Path, folder: Path, n: int) -> None:
    images = load_split(data, "test")["images"]
    for i in range(n):
        arr = (images[i % len(images)].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(folder / f"{i:06d}.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="bench/results/attribute.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t = time.perf_counter()
        write_pngs(Path(args.data), folder, args.n)
        write_s = time.perf_counter() - t

        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "attribkit", "attribute", "--run", args.run, str(folder),
                               "--json", "--device", args.device], capture_output=True, text=True)
        cli_s = time.perf_counter() - t
        if proc.returncode != 0:
            sys.exit(f"attribute failed: {proc.stderr.strip()}")
        answered = len(json.loads(proc.stdout)["results"])

        t = time.perf_counter()
        in_process = len(attribute(args.run, [str(folder)], runtime=Runtime(device=args.device))["results"])
        api_s = time.perf_counter() - t
    result = {
        "images": args.n, "answered_cli": answered, "answered_api": in_process,
        "cli_seconds": round(cli_s, 2), "cli_images_per_s": round(args.n / cli_s, 1),
        "api_seconds": round(api_s, 2), "api_images_per_s": round(args.n / api_s, 1),
        "png_write_seconds": round(write_s, 2), "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "machine": cpu_name(), "run": args.run,
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
    }
    print(f"{'path':<28}{'seconds':>10}{'images/s':>12}")
    print(f"{'attribkit attribute (CLI)':<28}{cli_s:>10.2f}{args.n / cli_s:>12.1f}")
    print(f"{'attribute() in process':<28}{api_s:>10.2f}{args.n / api_s:>12.1f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
