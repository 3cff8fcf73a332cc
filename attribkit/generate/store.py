"""The on-disk layout of a generated data set.

    OUT/manifest.json          scenario, versions, label spaces, per-cell counts
    OUT/clean.safetensors      the clean images and labels, and the split
    OUT/shards/VICTIM__ATTACK__SPLIT.safetensors   one finished job each

Files are written to a temporary name and renamed, so an interrupted run
leaves only finished shards behind, and the manifest never names a shard
that is not complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..errors import DataError

MANIFEST = "manifest.json"
CLEAN = "clean.safetensors"
SHARDS = "shards"
FORMAT = "attribkit-data/1"


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def save_tensors_atomic(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    # one metadata key: safetensors writes several in hash order, which would
    # make identical data produce different bytes from run to run
    header = {"attribkit": json.dumps(metadata, sort_keys=True)} if metadata else None
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=header)
    os.replace(tmp, path)


def read_versioned_json(folder: Path, name: str, fmt: str, what: str, error=DataError) -> dict:
    """FOLDER/NAME as JSON whose "format" must be FMT; every failure is one clear line."""
    path = Path(folder) / name
    if not path.exists():
        raise error(f"{str(folder)!r} is not {what} (no {name})")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{str(path)!r} is corrupt: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise error(f"{str(path)!r} has format {found!r}, expected {fmt!r}")
    return data


def read_manifest(out: Path) -> dict:
    return read_versioned_json(out, MANIFEST, FORMAT, "an attribkit data set")


def read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        return load_file(str(path)), json.loads(header.get("attribkit", "{}"))
    except (SafetensorError, OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {str(path)!r}: {exc}") from None


def load_split(out: str | Path, split: str) -> dict[str, torch.Tensor]:
    """All finished examples of one split ("train" or "test"), every shard
    concatenated; hyperparameter columns an attack lacks are NaN."""
    out = Path(out)
    manifest = read_manifest(out)
    hp_names = list(manifest["label_spaces"]["hyperparameters"])
    parts = []
    for name, shard in sorted(manifest["shards"].items()):
        if shard["split"] != split:
            continue
        tensors, _ = read_tensors(out / SHARDS / name)
        n = len(tensors["images"])
        for hp in hp_names:
            tensors.setdefault(f"hp_{hp}", torch.full((n,), float("nan")))
        tensors.setdefault("target", torch.full((n,), -1, dtype=torch.long))  # absent from data sets made before targeted attacks; -1 = untargeted
        parts.append(tensors)
    if not parts:
        raise DataError(f"{str(out)!r} has no finished {split} shards")
    return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
