"""Are two attribkit folders the same numbers? Compare a data set or a run made before a change with
the one made after it, tensor by tensor.

    python bench/same_numbers.py BEFORE AFTER [--key-map map.json] [--ignore seconds created ...]

For a refactor that must not change any number (the redesign issue): make a tiny scenario's data
set and a run with the old commit (a ``git worktree`` of it) and with the new one, on the same
machine, then compare the two data-set folders and the two run folders. Every ``*.safetensors``
file under BEFORE is matched with the file of the same relative path under AFTER; tensors are
matched by key, through ``--key-map`` (a JSON object old key → new key) where a change renamed them,
and compared bit for bit (NaN labels included), so a format-version bump in a header does not count
but a changed value does. JSON files are compared leaf by leaf, skipping keys that record when, how
long or with what versions a thing was made (``--ignore``). Prints a table, writes
bench/results/same-numbers.json, and exits 1 if anything differs.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

VOLATILE = ("seconds", "created", "started", "finished", "versions", "sha256", "content_sha256", "files",
            "format", "path", "out", "machine", "host")


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.reshape(-1).contiguous().view(torch.uint8), b.reshape(-1).contiguous().view(torch.uint8))


def _max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float | None:
    if a.shape != b.shape or not (a.is_floating_point() and b.is_floating_point()):
        return None
    d = (a.double() - b.double()).abs()
    d = d[~torch.isnan(d)]
    return float(d.max()) if d.numel() else 0.0


def compare_tensors(before: Path, after: Path, key_map: dict[str, str]) -> dict:
    old, new = load_file(before), load_file(after)
    renamed = {key_map.get(k, k): v for k, v in old.items()}
    differ = {}
    for key in sorted(set(renamed) | set(new)):
        if key not in renamed or key not in new:
            differ[key] = "only after" if key not in renamed else "only before"
        elif not _same_bits(renamed[key], new[key]):
            a, b = renamed[key], new[key]
            differ[key] = (f"{a.dtype}{list(a.shape)} vs {b.dtype}{list(b.shape)}, max |Δ| "
                           f"{_max_abs_diff(a, b)}")
    return {"tensors": len(new), "differ": differ}


def _leaves(obj, prefix: str, ignore: set[str]):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k not in ignore:
                yield from _leaves(v, f"{prefix}.{k}" if prefix else str(k), ignore)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, f"{prefix}[{i}]", ignore)
    else:
        yield prefix, obj


class Expected:
    """Differences a change declares on purpose (``--expect FILE``), as regular expressions
    over ``FILE:leaf.path`` (the file relative to the folder): ``renamed`` maps an old leaf
    to its new place, ``added`` are leaves only the new layout has, ``removed`` leaves only
    the old one had, ``changed`` leaves whose value may differ. Anything else that differs
    is a failure."""

    def __init__(self, spec: dict | None = None):
        spec = spec or {}
        self.renamed = [(re.compile(k), v) for k, v in spec.get("renamed", {}).items()]
        self.added = [re.compile(p) for p in spec.get("added", [])]
        self.changed = [re.compile(p) for p in spec.get("changed", [])]
        self.removed = [re.compile(p) for p in spec.get("removed", [])]

    def rename(self, rel: str, path: str) -> str:
        for pattern, repl in self.renamed:
            key = f"{rel}:{path}"
            if pattern.fullmatch(key):
                return pattern.sub(repl, key).split(":", 1)[1]
        return path

    def allows(self, rel: str, path: str, only_after: bool, only_before: bool) -> bool:
        key = f"{rel}:{path}"
        patterns = self.changed + (self.added if only_after else []) + (self.removed if only_before else [])
        return any(p.fullmatch(key) for p in patterns)


def _relative(value, root: Path | None):
    """A path inside the compared folder, written relative to it: two folders with other names still match."""
    if root is not None and isinstance(value, str) and value.startswith(str(root)):
        return "<folder>" + value[len(str(root)):]
    return value


def compare_json(before: Path, after: Path, ignore: set[str], rel: str = "", expected: Expected | None = None,
                 roots: tuple[Path, Path] | None = None) -> dict:
    expected = expected or Expected()
    old_root, new_root = roots or (None, None)
    old = {expected.rename(rel, k): _relative(v, old_root) for k, v in _leaves(json.loads(before.read_text()), "", ignore)}
    new = {k: _relative(v, new_root) for k, v in _leaves(json.loads(after.read_text()), "", ignore)}
    differ, allowed = {}, 0
    for k in sorted(set(old) | set(new)):
        if old.get(k, ...) == new.get(k, ...):
            continue
        if expected.allows(rel, k, only_after=k not in old, only_before=k not in new):
            allowed += 1
        else:
            differ[k] = f"{old.get(k, '(absent)')!r} vs {new.get(k, '(absent)')!r}"
    return {"leaves": len(new), "differ": differ, "expected": allowed}


def compare_folders(before: Path, after: Path, key_map: dict[str, str], ignore: set[str],
                    expected: Expected | None = None) -> dict:
    files = {}
    for path in sorted(before.rglob("*")):
        rel = path.relative_to(before)
        if path.suffix not in (".safetensors", ".json") or not path.is_file():
            continue
        other = after / rel
        if not other.is_file():
            files[str(rel)] = {"missing after": True}
        elif path.suffix == ".safetensors":
            files[str(rel)] = compare_tensors(path, other, key_map)
        else:
            files[str(rel)] = compare_json(path, other, ignore, str(rel), expected, (before, after))
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--key-map", type=Path, help="JSON object: tensor key before → key after")
    ap.add_argument("--ignore", nargs="*", default=list(VOLATILE), help="JSON keys not compared")
    ap.add_argument("--expect", type=Path, help="JSON: the layout changes a change declares (see Expected)")
    args = ap.parse_args()
    for folder in (args.before, args.after):
        if not folder.is_dir():
            raise SystemExit(f"not a folder: {folder}")
    key_map = json.loads(args.key_map.read_text()) if args.key_map else {}
    expected = Expected(json.loads(args.expect.read_text())) if args.expect else None
    files = compare_folders(args.before, args.after, key_map, set(args.ignore), expected)
    if not files:
        raise SystemExit(f"no .safetensors or .json files under {args.before}")
    bad = 0
    print("| file | compared | differ | declared changes |\n|---|---|---|---|")
    for rel, r in files.items():
        n = r.get("tensors", r.get("leaves", 0))
        differ = r.get("differ", {})
        bad += bool(differ) or "missing after" in r
        print(f"| {rel} | {'missing after' if 'missing after' in r else n} | {len(differ)} | {r.get('expected', 0)} |")
        for key, why in list(differ.items())[:5]:
            print(f"|   {key} | | {why} | |")
    out = Path("bench/results/same-numbers.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"before": str(args.before), "after": str(args.after), "files": files}, indent=1) + "\n")
    print(f"\n{len(files) - bad} of {len(files)} files the same; wrote {out}")
    raise SystemExit(1 if bad else 0)


if __name__ == "__main__":
    main()
