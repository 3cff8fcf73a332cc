"""A victim on disk: ``NAME.safetensors`` (weights) + ``NAME.json`` (how to
rebuild it, the sha256 of the weights and of itself). A victim is in the zoo
once its JSON record exists: the weights are written first, so a run killed
in between leaves nothing that counts as a victim."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from .. import plugins, storage
from ..errors import AttribkitError
from .model import Victim

FORMAT = "attribkit-victim/1"

@dataclass
class VictimRecord:
    name: str
    num_classes: int
    in_chans: int
    image_size: int
    mean: list[float]
    std: list[float]
    resize_to: int | None = None
    architecture: str = ""  # a registered victim plugin name, or ""
    timm_name: str = ""  # used when architecture is "" (any timm model)
    width: float = 1.0
    family: str = ""
    dataset: str = ""
    test_accuracy: float | None = None
    seed: int | None = None
    training: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)


def victim_path(zoo: str | Path, name: str) -> Path:
    return Path(zoo) / f"{name}.safetensors"


def record_path(zoo: str | Path, name: str) -> Path:
    return Path(zoo) / f"{name}.json"


def build_network(record: VictimRecord, registry: plugins.Registry | None = None) -> torch.nn.Module:
    if record.architecture:
        spec = (registry or plugins.registry()).get("victims", record.architecture)
        return spec.build(num_classes=record.num_classes, in_chans=record.in_chans, width=record.width)
    import timm

    try:
        return timm.create_model(record.timm_name, pretrained=False, num_classes=record.num_classes,
                                 in_chans=record.in_chans)
    except RuntimeError as exc:  # timm's "Unknown model"
        raise AttribkitError(f"victim {record.name!r}: {exc}") from None


def wrap(record: VictimRecord, net: torch.nn.Module) -> Victim:
    return Victim(net, record.mean, record.std, record.resize_to)


def save_victim(zoo: str | Path, record: VictimRecord, victim: Victim) -> Path:
    weights = victim_path(zoo, record.name)
    written = storage.save_tensors(weights, {k: v.contiguous() for k, v in victim.net.state_dict().items()})
    storage.write_json_record(record_path(zoo, record.name),
                              {"format": FORMAT, **asdict(record), storage.FILES: {weights.name: written.to_json()}})
    return weights


def load_weights(victim: Victim, path: Path, name: str, expected: storage.FileRecord | None = None) -> None:
    state, _ = storage.read_tensors(path, expected, error=AttribkitError)
    try:
        missing, unexpected = victim.net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatch: another width or architecture
        detail = str(exc).strip().splitlines()[-1].strip()
        raise AttribkitError(f"victim {name!r}: weights in {str(path)!r} do not match its architecture ({detail})") from None
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise AttribkitError(f"victim {name!r}: weights in {str(path)!r} do not match its architecture ({detail})")


def _read(zoo: str | Path, name: str, verify: bool) -> storage.Record:
    meta = record_path(zoo, name)
    if not meta.exists():
        known = sorted(p.stem for p in Path(zoo).glob("*.json")) if Path(zoo).is_dir() else []
        hint = f" (the zoo has: {', '.join(known)})" if known else " (run `attribkit victims train` first)"
        raise AttribkitError(f"victim {name!r} is not in zoo {str(zoo)!r}{hint}")
    return storage.read_json_record(meta, FORMAT, "a victim record", AttribkitError, verify, unversioned_ok=True)


_KINDS = {"str": str, "int": int, "float": (int, float), "list[float]": list, "dict": dict}


def _check_types(record: VictimRecord) -> None:
    """A record read back from JSON may hold anything: each field must have its declared type."""
    for f in fields(VictimRecord):
        value, base = getattr(record, f.name), f.type.removesuffix(" | None")
        if value is None and f.type.endswith(" | None"):
            continue
        if not isinstance(value, _KINDS[base]) or isinstance(value, bool):
            raise TypeError(f"{f.name!r} must be {base}, got {value!r}")
    for name in ("mean", "std"):
        values = getattr(record, name)
        if len(values) != record.in_chans or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                     for v in values):
            raise TypeError(f"{name!r} must be {record.in_chans} numbers, got {values!r}")


def _as_victim_record(data: dict, meta: Path) -> VictimRecord:
    known = {f.name for f in fields(VictimRecord)}
    body = {k: v for k, v in data.items() if k in known}
    unknown = sorted(set(data) - known - {"format", storage.FILES, storage.CONTENT_HASH})
    try:
        if unknown:
            raise TypeError(f"unknown key {unknown[0]!r}")
        record = VictimRecord(**body)
        _check_types(record)
        return record
    except TypeError as exc:
        raise AttribkitError(f"victim metadata {str(meta)!r} is corrupt: {exc}") from None


def check_weights(zoo: str | Path, name: str) -> storage.FileCheck:
    """The victim's weights against its record (which must itself be intact)."""
    found = _read(zoo, name, verify=True)
    weights = victim_path(zoo, name)
    return storage.check_file(weights.parent, weights.name,
                              storage.recorded_file(found.data, weights.name, str(record_path(zoo, name))))


def read_record(zoo: str | Path, name: str, verify: bool = True) -> VictimRecord:
    return _as_victim_record(_read(zoo, name, verify).data, record_path(zoo, name))


def load_victim(zoo: str | Path, name: str, verify: bool = True,
                registry: plugins.Registry | None = None) -> tuple[Victim, VictimRecord]:
    """Rebuild a zoo victim, frozen and ready to attack; with ``verify`` its
    record and weights must match their recorded hashes."""
    found = _read(zoo, name, verify)
    record = _as_victim_record(found.data, record_path(zoo, name))
    weights = victim_path(zoo, name)
    expected = storage.recorded_file(found.data, weights.name, str(record_path(zoo, name))) if verify else None
    if verify and expected is None:
        storage.notice(f"victim {name!r} in zoo {str(zoo)!r} has no recorded sha256 (written by an older attribkit) "
                       f"and cannot be verified; `attribkit verify --record {zoo}` records it")
    victim = wrap(record, build_network(record, registry))
    load_weights(victim, weights, name, expected)
    return victim.freeze(), record
