"""Every file attribkit writes, and every file of ours it reads back.

Writes go to a unique temporary name in the target's folder, are fsync'd,
renamed over the target and the folder is fsync'd: a reader (or a run killed
half-way) sees the old file or the new one, never part of one, and two
writers never share a temporary file.

Each write returns a :class:`FileRecord` (sha256 and size of exactly the
bytes written). A folder's JSON record — ``manifest.json`` of a data set,
``run.json`` of a run, ``NAME.json`` of a zoo victim — keeps those under
``"files"`` and a hash of its own content under ``"content_sha256"``, so a
flipped bit, a truncated copy or a hand edit is found when the folder is
read. These hashes detect rot and accidents, not tampering: whoever can
change a file can change its record too.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import math
import os
import signal
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import AttribkitError, DataError

CONTENT_HASH = "content_sha256"
FILES = "files"
METADATA_KEY = "attribkit"  # the one safetensors metadata entry we write
# crash tests: "N:PHASE" SIGKILLs this process at the N-th event of PHASE: "before-rename" or "after-rename"
# of a write, or "after-job" of generation; "N:PHASE@R" only in the worker whose RANK is R
FAILPOINT_ENV = "ATTRIBKIT_FAILPOINT"

_UMASK = os.umask(0)
os.umask(_UMASK)


class IntegrityError(AttribkitError):
    """A file does not match the hash recorded for it."""


class IntegrityNotice(UserWarning):
    """Something could not be verified (a folder written before hashes were recorded)."""


_noticed: set[str] = set()


def notice(message: str, once: bool = True) -> None:
    """Tell the user, by default once per process (a command reads a data set once per split);
    ``once=False`` for what each call makes anew (a training run's fit)."""
    if not once or message not in _noticed:
        _noticed.add(message)
        warnings.warn(message, IntegrityNotice, stacklevel=2)


@dataclass(frozen=True)
class FileRecord:
    sha256: str
    bytes: int

    def to_json(self) -> dict:
        return {"sha256": self.sha256, "bytes": self.bytes}

    @classmethod
    def from_json(cls, data, where: str) -> "FileRecord":
        if not (isinstance(data, dict) and isinstance(data.get("sha256"), str) and isinstance(data.get("bytes"), int)):
            raise DataError(f"{where}: malformed file record {data!r}")
        return cls(data["sha256"], data["bytes"])

    @classmethod
    def of(cls, data: bytes) -> "FileRecord":
        return cls(hashlib.sha256(data).hexdigest(), len(data))


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def record_of_file(path: str | Path) -> FileRecord:
    return FileRecord(sha256_file(path), Path(path).stat().st_size)


# --- writing -------------------------------------------------------------

_writes = 0
_events: dict[str, int] = {}


def _failpoint(phase: str, count: int | None = None) -> None:
    """Crash-test hook: kill this process (SIGKILL, no clean-up) at the N-th write or event."""
    spec = os.environ.get(FAILPOINT_ENV)
    if not spec:
        return
    spec, _, rank = spec.partition("@")
    if rank and os.environ.get("RANK", "0") != rank:
        return
    wanted, _, where = spec.partition(":")
    if where == phase and (_writes if count is None else count) == int(wanted):
        os.kill(os.getpid(), signal.SIGKILL)


def failpoint_event(phase: str) -> None:
    """Count one event of ``phase`` (e.g. "after-job") for the crash-test hook."""
    _events[phase] = _events.get(phase, 0) + 1
    _failpoint(phase, _events[phase])


LOCK = ".lock"


@contextmanager
def folder_lock(folder: str | Path):
    """Exclusive across processes and machines that share ``folder`` (a POSIX lock, which NFS
    carries between machines): for the read-modify-write of a record that several workers update."""
    path = Path(folder) / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
    except OSError as exc:
        raise AttribkitError(f"cannot create the lock file {str(path)!r}: {exc.strerror}") from None
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
        except OSError as exc:
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise AttribkitError(f"the file system of {str(folder)!r} does not support file locks "
                                     f"({exc.strerror}), which workers sharing a folder need; give each worker its "
                                     f"own --out, or run one worker") from None
            raise
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some file systems do not open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path: str | Path, data: bytes) -> FileRecord:
    """Atomically replace ``path`` with ``data``; returns the record of what was written."""
    global _writes
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_UMASK)  # mkstemp's 0600 would make results private
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _writes += 1
        _failpoint("before-rename")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    _failpoint("after-rename")
    return FileRecord.of(data)


def write_text(path: str | Path, text: str) -> FileRecord:
    return write_bytes(path, text.encode())


def finite_or_null(value):
    """``value`` with every NaN and ±inf float (nested in dicts and lists) made None, so that the JSON
    written of it is strict: Python's json writes a bare NaN, which other parsers refuse."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(v) for v in value]
    return value


def write_json(path: str | Path, data) -> FileRecord:
    return write_text(path, json.dumps(data, indent=2) + "\n")


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> FileRecord:
    from safetensors.torch import save

    # one metadata key: safetensors writes several in hash order, which would
    # make identical data produce different bytes from run to run
    header = {METADATA_KEY: json.dumps(metadata, sort_keys=True)} if metadata else None
    return write_bytes(path, save({k: v.contiguous() for k, v in tensors.items()}, metadata=header))


# --- reading -------------------------------------------------------------

def read_bytes(path: str | Path, expected: FileRecord | None = None, error=DataError) -> bytes:
    """The file's bytes; with ``expected``, refuse them unless they match it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{str(path)!r} is missing") from None
    except OSError as exc:
        raise error(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    if expected is not None:
        found = FileRecord.of(data)
        if found != expected:
            raise IntegrityError(f"{str(path)!r} does not match its recorded sha256 ({_differs(expected, found)}); "
                                 f"the file was changed or is corrupt")
    return data


def _differs(expected: FileRecord, found: FileRecord) -> str:
    if expected.bytes != found.bytes:
        return f"{found.bytes} bytes, recorded {expected.bytes}"
    return f"sha256 {found.sha256[:12]}…, recorded {expected.sha256[:12]}…"


def tensors_from_bytes(data: bytes, source: str, error=DataError) -> tuple[dict[str, torch.Tensor], dict]:
    """Parse safetensors bytes; anything malformed is one clear error naming ``source``."""
    from safetensors.torch import load

    if len(data) < 8:
        raise error(f"{source!r} is not a safetensors file ({len(data)} bytes)")
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8:
        raise error(f"{source!r} is not a valid safetensors file (its header claims {size} bytes; "
                    f"the file has {len(data) - 8} after the length)")
    try:
        header = json.loads(data[8:8 + size])
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        meta = header.get("__metadata__") or {}
        extra = json.loads(meta.get(METADATA_KEY, "{}")) if isinstance(meta, dict) else {}
        tensors = load(data)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # safetensors' Rust panics are BaseExceptions
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise error(f"{source!r} is not a valid safetensors file ({detail})") from None
    return tensors, (extra if isinstance(extra, dict) else {})


def read_tensors(path: str | Path, expected: FileRecord | None = None,
                 error=DataError) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and attribkit metadata of a safetensors file, verified against ``expected`` if given."""
    return tensors_from_bytes(read_bytes(path, expected, error), str(path), error)


# --- JSON records with a hash of their own content --------------------------

def content_hash(data: dict) -> str:
    body = {k: v for k, v in data.items() if k != CONTENT_HASH}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_json_record(path: str | Path, data: dict) -> FileRecord:
    """Write a JSON record carrying the hash of its own content."""
    return write_json(path, {**{k: v for k, v in data.items() if k != CONTENT_HASH}, CONTENT_HASH: content_hash(data)})


@dataclass
class Record:
    """A JSON record as read: its content, and whether it could be verified."""

    data: dict
    hashed: bool  # False: written before attribkit recorded hashes


def read_json_record(path: str | Path, fmt: str | tuple[str, ...], what: str, error=DataError, verify: bool = True,
                     unversioned_ok: bool = False) -> Record:
    """PATH as a JSON object whose "format" is FMT, or one of them (or absent, for records
    older than formats, with ``unversioned_ok``); with ``verify``, its own
    content hash must match. Every failure is one clear line."""
    path = Path(path)
    if not path.exists():
        raise error(f"{str(path.parent)!r} is not {what} (no {path.name})")
    data = read_bytes(path, error=error)
    try:
        parsed = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{str(path)!r} is corrupt: {exc}") from None
    except RecursionError:  # json recurses once per nesting level
        raise error(f"{str(path)!r} is corrupt: nested too deeply") from None
    if isinstance(parsed, dict) and unversioned_ok and "format" not in parsed:
        return Record(parsed, False)
    formats = (fmt,) if isinstance(fmt, str) else tuple(fmt)
    if not isinstance(parsed, dict) or parsed.get("format") not in formats:
        found = parsed.get("format") if isinstance(parsed, dict) else type(parsed).__name__
        expected = repr(formats[0]) if len(formats) == 1 else "one of " + ", ".join(map(repr, formats))
        raise error(f"{str(path)!r} has format {found!r}, expected {expected}")
    recorded = parsed.get(CONTENT_HASH)
    if verify and recorded is not None and recorded != content_hash(parsed):
        raise IntegrityError(f"{str(path)!r} does not match its recorded content hash; it was edited or is corrupt")
    return Record(parsed, recorded is not None)


def recorded_file(record: dict, name: str, where: str) -> FileRecord | None:
    """The record of file NAME in a folder record's "files", or None if it has none."""
    files = record.get(FILES)
    if files is None:
        return None
    if not isinstance(files, dict):
        raise DataError(f"{where}: 'files' must be an object")
    return FileRecord.from_json(files[name], f"{where}: files[{name!r}]") if name in files else None


# --- checking a folder ---------------------------------------------------

@dataclass(frozen=True)
class FileCheck:
    name: str  # relative to the folder
    state: str  # "ok" | "changed" | "missing" | "unrecorded"
    detail: str = ""

    @property
    def problem(self) -> str:
        """What is wrong, as the end of a sentence that starts with the file's name."""
        return "is missing" if self.state == "missing" else f"does not match its recorded sha256 ({self.detail})"


def check_file(folder: Path, name: str, expected: FileRecord | None) -> FileCheck:
    path = folder / name
    if not path.is_file():
        return FileCheck(name, "missing", "recorded but not on disk" if expected else "not on disk")
    if expected is None:
        return FileCheck(name, "unrecorded", "no recorded sha256")
    found = record_of_file(path)
    if found != expected:
        return FileCheck(name, "changed", _differs(expected, found))
    return FileCheck(name, "ok")


def leftover_temporaries(folder: Path) -> list[str]:
    """Temporary files of writes that never finished (a killed run): safe to delete."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*.tmp") if p.is_file())


# --- reading a few rows at a time ----------------------------------------

_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


class TensorFile:
    """A safetensors file read a few rows at a time, for data larger than memory.

    The header is parsed once; rows are read with ``pread`` (runs of
    consecutive rows in one call), never mapped, so what a process holds is
    what it asked for: a mapped file would count every page it ever touched
    in the process's memory. The bytes read are the bytes ``load`` would
    give, so a tensor assembled from rows equals the one read whole.
    """

    def __init__(self, path: str | Path, error=DataError):
        self.path, self.error = Path(path), error
        try:
            with open(self.path, "rb") as f:
                head = f.read(8)
                size = int.from_bytes(head, "little") if len(head) == 8 else -1
                total = self.path.stat().st_size
                if not 0 < size <= total - 8:
                    raise ValueError(f"its header claims {size} bytes")
                header = json.loads(f.read(size))
        except FileNotFoundError:
            raise error(f"{str(self.path)!r} is missing") from None
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise error(f"{str(self.path)!r} is not a valid safetensors file ({exc})") from None
        self.start = 8 + size
        self.tensors: dict[str, tuple[torch.dtype, tuple[int, ...], int]] = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            try:
                dtype, shape, (begin, end) = _DTYPES[info["dtype"]], tuple(info["shape"]), info["data_offsets"]
                numel = math.prod(shape)
                if end - begin != numel * dtype.itemsize or self.start + end > total:
                    raise ValueError("its offsets do not fit")
            except (KeyError, TypeError, ValueError) as exc:
                raise error(f"{str(self.path)!r}: tensor {name!r} is malformed ({exc})") from None
            self.tensors[name] = (dtype, shape, begin)
        self._fd: int | None = None

    def shape(self, name: str) -> tuple[int, ...]:
        return self.tensors[name][1]

    def read(self, name: str) -> torch.Tensor:
        """The whole tensor, in one read."""
        return self._bytes(name, 0, math.prod(self.shape(name))).reshape(self.shape(name))

    def rows(self, name: str, index: torch.Tensor) -> torch.Tensor:
        """Rows ``index`` (in that order) of a tensor of one or more dimensions."""
        dtype, shape, _ = self.tensors[name]
        per_row = math.prod(shape[1:])
        index = index.long()
        if len(index) and not 0 <= int(index.min()) <= int(index.max()) < shape[0]:
            raise IndexError(f"rows {int(index.min())}…{int(index.max())} of {shape[0]}")
        parts, i = [], 0
        order = index.tolist()
        while i < len(order):  # one read per run of consecutive rows
            j = i + 1
            while j < len(order) and order[j] == order[j - 1] + 1:
                j += 1
            parts.append(self._bytes(name, order[i] * per_row, (j - i) * per_row))
            i = j
        out = torch.cat(parts) if parts else torch.empty(0, dtype=dtype)
        return out.reshape(len(order), *shape[1:])

    def _bytes(self, name: str, first: int, count: int) -> torch.Tensor:
        dtype, _, begin = self.tensors[name]
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        size = count * dtype.itemsize
        data = os.pread(self._fd, size, self.start + begin + first * dtype.itemsize)
        if len(data) != size:
            raise self.error(f"{str(self.path)!r} ended early: it was truncated while being read")
        return torch.frombuffer(bytearray(data), dtype=dtype) if size else torch.empty(0, dtype=dtype)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):
        self.close()


class Rows:
    """The rows of tensors kept in several files, one file after another, read only when
    indexed: a data set's images when it is streamed (larger than memory).

    Indexing (an int, a slice, indices or a boolean mask) gives a tensor, as
    indexing the concatenated tensor would; :meth:`take` gives a lazy subset;
    :meth:`map` a view whose every batch goes through an element-wise function.
    """

    def __init__(self, parts: list[tuple[TensorFile, str]], index: torch.Tensor | None = None, transform=None):
        self.parts = parts
        sizes = torch.tensor([f.shape(name)[0] for f, name in parts])
        self._ends = sizes.cumsum(0)
        self._starts = self._ends - sizes
        self.index = torch.arange(int(self._ends[-1])) if index is None else index.long()
        first, name = parts[0]
        self.row_shape = first.shape(name)[1:]
        self.dtype = first.tensors[name][0]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self.row_shape))

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, int):
            return self._read(self.index[key:key + 1 if key != -1 else None])[0]
        return self._read(self.index[key])

    def take(self, key) -> "Rows":
        return Rows(self.parts, self.index[key], self.transform)

    def map(self, transform) -> "Rows":
        return Rows(self.parts, self.index, transform)

    def _read(self, wanted: torch.Tensor) -> torch.Tensor:
        wanted = wanted.contiguous()  # a stepped slice of the index is a strided view
        part = torch.searchsorted(self._ends, wanted, right=True)
        out = torch.empty(len(wanted), *self.row_shape, dtype=self.dtype)
        for p in part.unique().tolist():
            here = part == p
            f, name = self.parts[p]
            out[here] = f.rows(name, wanted[here] - self._starts[p])
        return self.transform(out) if self.transform else out
