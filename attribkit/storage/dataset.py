"""The on-disk layout of a generated data set.

    OUT/manifest.json          scenario, versions, label spaces, per-cell counts, and the
                               sha256 of every file below ("files") and of itself
    OUT/clean.safetensors      the clean images and labels, and the split
    OUT/shards/VICTIM__ATTACK__SPLIT.safetensors   one finished unit of work each (a job, or
                               one grid point of it: VICTIM__ATTACK__SPLIT__eps20.safetensors)
    OUT/shards/*.json          each shard's own record (its counts, seconds, the device that made
                               it, its sha256), written after the shard: what workers sharing
                               OUT merge into the manifest
    OUT/.lock                  held by a worker while it updates the manifest

Every file goes through :mod:`attribkit.storage`: written atomically, its hash
recorded in the manifest, checked when it is read back. The manifest never
names a shard that is not complete.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch

from .. import storage
from ..errors import AttribkitError, DataError
from ..records import DATA_FORMAT, Manifest, Shard

MANIFEST = "manifest.json"
CLEAN = "clean.safetensors"
SHARDS = "shards"
FORMAT = DATA_FORMAT
SHARD_RECORD = "attribkit-shard/1"


def shard_file(shard: str) -> str:
    """A shard's path relative to the data set folder, as "files" records it."""
    return f"{SHARDS}/{shard}"


def shard_record_file(shard: str) -> str:
    return f"{SHARDS}/{shard.removesuffix('.safetensors')}.json"


def write_shard_record(out: Path, name: str, shard: Shard, file: storage.FileRecord) -> None:
    """A finished shard's record, written after the shard itself: it names only a complete file."""
    storage.write_json_record(Path(out) / shard_record_file(name),
                              {"format": SHARD_RECORD, "shard": name, **shard.to_json(), "file": file.to_json()})


def read_shard_record(out: Path, name: str) -> tuple[Shard, storage.FileRecord] | None:
    """A shard's record, or None if there is none; a damaged one is reported and counts as none
    (its shard is made again)."""
    path = Path(out) / shard_record_file(name)
    if not path.exists():
        return None
    try:
        data = storage.read_json_record(path, SHARD_RECORD, "a shard record", DataError).data
        if data.get("shard") != name:
            raise DataError(f"{str(path)!r} is the record of {data.get('shard')!r}")
        return Shard.from_json(name, data, str(path)), storage.FileRecord.from_json(data.get("file"), str(path))
    except AttribkitError as exc:  # malformed, or its content hash does not match
        storage.notice(f"{exc}; its shard will be made again")
        return None


def merge_shard(manifest: Manifest, name: str, shard: Shard, file: storage.FileRecord) -> None:
    manifest.shards[name] = shard
    manifest.files[shard_file(name)] = file.to_json()


def data_files(shards: Iterable[str]) -> list[str]:
    """Every file of a data set with these shards, besides the manifest."""
    return [CLEAN] + [shard_file(name) for name in sorted(shards)]


def write_manifest(out: Path, manifest: Manifest) -> None:
    # in name order: workers finish shards in any order, and the manifest must not depend on it
    manifest.shards = dict(sorted(manifest.shards.items()))
    manifest.files = dict(sorted(manifest.files.items()))
    storage.write_json_record(Path(out) / MANIFEST, manifest.to_json())


def save_file(out: Path, manifest: Manifest, name: str, tensors: dict[str, torch.Tensor],
              metadata: dict | None = None) -> None:
    """Write one data file and record its hash in the manifest (written by the caller)."""
    manifest.files[name] = storage.save_tensors(Path(out) / name, tensors, metadata).to_json()


def read_manifest(out: str | Path, verify: bool = True) -> Manifest:
    """The data set's manifest, its own hash checked (``verify``); a data set
    written before hashes were recorded loads with a notice."""
    out = Path(out)
    record = storage.read_json_record(out / MANIFEST, FORMAT, "an attribkit data set", DataError, verify)
    manifest = Manifest.from_json(record.data, str(out / MANIFEST))
    if verify:
        unrecorded = [n for n in data_files(manifest.shards)
                      if storage.recorded_file(manifest.file_record, n, str(out / MANIFEST)) is None]
        if unrecorded:
            storage.notice(f"data set {str(out)!r} has {len(unrecorded)} file(s) without a recorded sha256 (written by "
                           f"an older attribkit), which cannot be verified; `attribkit verify --record {out}` records them")
        elif not record.hashed:  # every file is hashed but the manifest itself is not: its edits go unseen
            storage.notice(f"{str(out / MANIFEST)!r} has no content hash of its own (an edit would remove it), so "
                           f"changes to it cannot be detected; `attribkit verify {out}` says more")
    return manifest


def read_data_file(out: Path, manifest: Manifest, name: str, verify: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """One of the data set's safetensors files, checked against its recorded hash (``verify``)."""
    expected = storage.recorded_file(manifest.file_record, name, str(Path(out) / MANIFEST)) if verify else None
    return storage.read_tensors(Path(out) / name, expected)


_LABELS = ("attack", "victim", "clean_index")  # besides images
CHECK_ROWS = 4096  # images checked at a time: a whole shard's temporaries could exceed memory


def _check_shard(tensors: dict[str, torch.Tensor], images: torch.Tensor | storage.TensorFile, manifest: Manifest,
                 where: str) -> None:
    """A shard's tensors must be what the manifest says, before anything is concatenated or
    indexed. ``images`` is the tensor, or the file it is read from a few rows at a time."""
    shape = manifest.shape
    dims = tuple(images.shape("images") if isinstance(images, storage.TensorFile) else images.shape)
    dtype = images.tensors["images"][0] if isinstance(images, storage.TensorFile) else images.dtype
    if len(dims) != 4 or not dtype.is_floating_point or (isinstance(shape, list) and list(dims[1:]) != shape):
        raise DataError(f"{where!r}: 'images' must be float (N, {', '.join(map(str, shape or ['C', 'H', 'W']))}), "
                        f"got {str(dtype).removeprefix('torch.')} {dims}")
    n = dims[0]
    for first in range(0, n, CHECK_ROWS):
        rows = torch.arange(first, min(n, first + CHECK_ROWS))
        chunk = images.rows("images", rows) if isinstance(images, storage.TensorFile) else images[rows]
        if not (torch.isfinite(chunk).all() and chunk.min() >= 0 and chunk.max() <= 1):
            raise DataError(f"{where!r}: 'images' must be finite and lie in [0, 1]")
    for key in _LABELS:
        if key not in tensors:
            raise DataError(f"{where!r} has no {key!r} tensor")
    for key, column in tensors.items():
        if column.ndim != 1 or len(column) != n:
            raise DataError(f"{where!r}: {key!r} must hold one value per image ({n}), got shape {tuple(column.shape)}")
    spaces = manifest.label_spaces
    for key, size in (("attack", len(spaces.attacks)), ("victim", len(spaces.victims))):
        column = tensors[key]
        if column.is_floating_point() or (n and not 0 <= int(column.min()) <= int(column.max()) < size):
            raise DataError(f"{where!r}: {key!r} labels must be indices into the manifest's {size} {key}s")


def load_split(out: str | Path, split: str, verify: bool = True) -> dict[str, torch.Tensor]:
    """All finished examples of one split ("train" or "test"), every shard
    concatenated; hyperparameter columns an attack lacks are NaN. With
    ``verify`` every file read must match its recorded hash."""
    return load_split_with_manifest(out, split, verify)[1]


def open_data_file(out: Path, manifest: Manifest, name: str, verify: bool = True) -> storage.TensorFile:
    """One of the data set's safetensors files, to be read a few rows at a time; with ``verify`` its
    bytes are first checked (streamed, not held) against the recorded hash."""
    expected = storage.recorded_file(manifest.file_record, name, str(Path(out) / MANIFEST)) if verify else None
    if expected is not None:
        check = storage.check_file(Path(out), name, expected)
        if check.state == "missing":
            raise DataError(f"{str(Path(out) / name)!r} is missing")
        if check.state != "ok":
            raise storage.IntegrityError(f"{str(Path(out) / name)!r} does not match its recorded sha256 "
                                         f"({check.detail}); the file was changed or is corrupt")
    return storage.TensorFile(Path(out) / name)


def load_split_with_manifest(out: str | Path, split: str, verify: bool = True, stream: bool = False
                             ) -> tuple[Manifest, dict[str, torch.Tensor | storage.Rows]]:
    """The split's examples; with ``stream`` the images stay in their files (a
    :class:`~attribkit.storage.Rows`, read when indexed) and only the other columns are loaded."""
    out = Path(out)
    manifest = read_manifest(out, verify)
    hp_names = manifest.label_spaces.hp_names
    parts = []
    for name, shard in sorted(manifest.shards.items()):
        if shard.split != split:
            continue
        where = str(out / shard_file(name))
        if stream:
            file = open_data_file(out, manifest, shard_file(name), verify)
            tensors = {k: file.read(k) for k in file.tensors if k != "images"}
            if "images" not in file.tensors:
                raise DataError(f"{where!r} has no 'images' tensor")
            images = file
        else:
            tensors, _ = read_data_file(out, manifest, shard_file(name), verify)
            if "images" not in tensors:
                raise DataError(f"{where!r} has no 'images' tensor")
            images = tensors.pop("images")
        _check_shard(tensors, images, manifest, where)
        n = len(tensors["attack"])
        for hp in hp_names:
            tensors.setdefault(f"hp_{hp}", torch.full((n,), float("nan")))
        tensors.setdefault("target", torch.full((n,), -1, dtype=torch.long))  # absent from data sets made before targeted attacks; -1 = untargeted
        parts.append((name, tensors, images))
    if not parts:
        raise DataError(f"{str(out)!r} has no finished {split} shards")
    keys = set(parts[0][1])
    for name, part, _ in parts:
        if set(part) != keys:
            raise DataError(f"{str(out / shard_file(name))!r} has other columns than the data set's other shards")
    columns = {key: torch.cat([part[key] for _, part, _ in parts]) for key in parts[0][1]}
    if stream:
        columns["images"] = storage.Rows([(file, "images") for _, _, file in parts])
    else:
        columns["images"] = torch.cat([images for _, _, images in parts])
    return manifest, columns
