"""A victim on disk: ``NAME.safetensors`` (weights) + ``NAME.json`` (how to rebuild it)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .. import plugins
from ..errors import AttribkitError
from .model import Victim


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


def build_network(record: VictimRecord) -> torch.nn.Module:
    if record.architecture:
        spec = plugins.get("victims", record.architecture)
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
    zoo = Path(zoo)
    zoo.mkdir(parents=True, exist_ok=True)
    weights = victim_path(zoo, record.name)
    tmp = weights.with_suffix(".safetensors.tmp")
    save_file({k: v.contiguous() for k, v in victim.net.state_dict().items()}, str(tmp))
    tmp.replace(weights)
    weights.with_suffix(".json").write_text(json.dumps(asdict(record), indent=2) + "\n")
    return weights


def load_weights(victim: Victim, path: Path, name: str) -> None:
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise AttribkitError(f"victim {name!r}: cannot read weights {str(path)!r}: {exc}") from None
    try:
        missing, unexpected = victim.net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatch: another width or architecture
        detail = str(exc).strip().splitlines()[-1].strip()
        raise AttribkitError(f"victim {name!r}: weights in {str(path)!r} do not match its architecture ({detail})") from None
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise AttribkitError(f"victim {name!r}: weights in {str(path)!r} do not match its architecture ({detail})")


def read_record(zoo: str | Path, name: str) -> VictimRecord:
    meta = Path(zoo) / f"{name}.json"
    if not meta.exists():
        known = sorted(p.stem for p in Path(zoo).glob("*.json")) if Path(zoo).is_dir() else []
        hint = f" (the zoo has: {', '.join(known)})" if known else " (run `attribkit victims train` first)"
        raise AttribkitError(f"victim {name!r} is not in zoo {str(zoo)!r}{hint}")
    try:
        data = json.loads(meta.read_text())
        return VictimRecord(**data)
    except (json.JSONDecodeError, TypeError) as exc:
        raise AttribkitError(f"victim {name!r}: metadata {str(meta)!r} is corrupt: {exc}") from None


def load_victim(zoo: str | Path, name: str) -> tuple[Victim, VictimRecord]:
    """Rebuild a zoo victim, frozen and ready to attack."""
    record = read_record(zoo, name)
    victim = wrap(record, build_network(record))
    load_weights(victim, victim_path(zoo, name), name)
    return victim.freeze(), record
