"""``attribkit verify``: check a data set, a zoo or a run against the hashes
recorded when it was written, and record hashes for folders written before
attribkit recorded them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import storage
from .errors import AttribkitError
from .records import RUN_FORMATS_READ
from .storage import dataset as data_store
from .training import run as run_store
from .victims import store as zoo_store


@dataclass
class Verification:
    path: str
    kind: str  # "data set" | "run" | "zoo"
    files: list[storage.FileCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # beyond single files: a record that is itself damaged
    leftovers: list[str] = field(default_factory=list)  # temporary files of interrupted writes
    recorded: list[str] = field(default_factory=list)  # files whose hashes --record has just written

    @property
    def ok(self) -> bool:
        return not self.problems and all(f.state == "ok" for f in self.files)

    def to_json(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def kind_of(path: Path) -> str:
    if (path / data_store.MANIFEST).is_file():
        return "data set"
    if (path / run_store.RUN_FILE).is_file():
        return "run"
    if any(path.glob("*.json")) and any(path.glob("*.safetensors")):
        return "zoo"
    raise AttribkitError(f"{str(path)!r} is not an attribkit data set, run or zoo "
                         f"(no {data_store.MANIFEST}, {run_store.RUN_FILE} or victim records)")


def verify(path: str | Path, record: bool = False) -> Verification:
    """Check every file of the folder; with ``record``, first record hashes for
    the files that have none (never over a hash that disagrees)."""
    path = Path(path)
    if not path.is_dir():
        raise AttribkitError(f"{str(path)!r} is not a folder")
    kind = kind_of(path)
    result = Verification(str(path), kind, leftovers=storage.leftover_temporaries(path))
    if kind == "zoo":
        for meta in sorted(path.glob("*.json")):
            _check_folder_record(path, meta.name, zoo_store.FORMAT, [f"{meta.stem}.safetensors"], record, result,
                                 unversioned_ok=True)
    elif kind == "run":
        files = [run_store.WEIGHTS, run_store.METRICS_JSON, run_store.METRICS_CSV, run_store.TRUST_FILE]
        _check_folder_record(path, run_store.RUN_FILE, RUN_FORMATS_READ, files, record, result)
    else:
        _check_folder_record(path, data_store.MANIFEST, data_store.FORMAT, None, record, result)
    return result


def _check_folder_record(folder: Path, name: str, fmt: str, files: list[str] | None, record: bool,
                         result: Verification, unversioned_ok: bool = False) -> None:
    """One JSON record and the files it covers (``None``: the data files its manifest lists)."""
    try:
        found = storage.read_json_record(folder / name, fmt, "an attribkit folder", AttribkitError,
                                         unversioned_ok=unversioned_ok)
    except AttribkitError as exc:
        result.problems.append(str(exc))
        return
    data = found.data
    try:
        names = data_store.data_files(data["shards"]) if files is None else [f for f in files if (folder / f).exists()
                                                                    or storage.recorded_file(data, f, name)]
        checks = [storage.check_file(folder, f, storage.recorded_file(data, f, name)) for f in names]
    except (AttribkitError, KeyError, TypeError, AttributeError) as exc:
        result.problems.append(f"{str(folder / name)!r} is malformed: {exc}")
        return
    if record and all(c.state in ("ok", "unrecorded") for c in checks) and (
            not found.hashed or any(c.state == "unrecorded" for c in checks)):
        new = [c.name for c in checks if c.state == "unrecorded"]
        recorded = dict(data.get(storage.FILES) or {})
        recorded.update({n: storage.record_of_file(folder / n).to_json() for n in new})
        storage.write_json_record(folder / name, {"format": fmt, **data, storage.FILES: recorded})
        result.recorded += [name] + new
        checks = [storage.FileCheck(c.name, "ok") if c.state == "unrecorded" else c for c in checks]
    own = storage.FileCheck(name, "ok") if found.hashed or name in result.recorded else \
        storage.FileCheck(name, "unrecorded", "no recorded content hash")
    result.files += [own] + checks
