"""Resolving a scenario's victims to frozen models."""

from __future__ import annotations

from pathlib import Path

from ..errors import AttribkitError
from ..plugins import Registry
from ..storage import sha256_file
from ..specs import Dataset
from ..victims.model import Victim
from ..victims.store import VictimRecord, build_network, load_victim, load_weights, victim_path, wrap
from .scenario import VictimRef


def resolve_victim(ref: VictimRef, zoo: str | Path, dataset: Dataset, verify: bool = True,
                   registry: Registry | None = None) -> tuple[Victim, VictimRecord, str]:
    """Returns the frozen victim, its record, and the sha256 of its weights
    (a zoo victim's weights are checked against its record with ``verify``)."""
    if ref.timm:
        channels = dataset.images.shape[1]
        for key in ("mean", "std"):
            given = getattr(ref, key)
            if given is not None and len(given) != channels:  # broadcasting would feed the net other channels
                raise AttribkitError(f"victim {ref.name!r}: {key} has {len(given)} values but {dataset.name} has "
                                     f"{channels} colour channel{'s' if channels > 1 else ''}")
        record = VictimRecord(
            name=ref.name, num_classes=dataset.num_classes, in_chans=channels, image_size=dataset.images.shape[-1],
            mean=list(ref.mean or [0.0] * channels), std=list(ref.std or [1.0] * channels),
            resize_to=ref.resize_to, timm_name=ref.timm, dataset=dataset.name,
        )
        weights = Path(ref.checkpoint)
        if not weights.exists():
            raise AttribkitError(f"victim {ref.name!r}: checkpoint {str(weights)!r} does not exist")
        victim = wrap(record, build_network(record, registry))
        load_weights(victim, weights, ref.name)
        victim.freeze()
    else:
        victim, record = load_victim(zoo, ref.name, verify, registry)
        weights = victim_path(zoo, ref.name)
        if record.num_classes != dataset.num_classes or record.in_chans != dataset.images.shape[1] \
                or record.image_size != dataset.images.shape[-1]:
            raise AttribkitError(
                f"victim {ref.name!r} was trained on {record.dataset} ({record.in_chans}×{record.image_size}px, "
                f"{record.num_classes} classes), not on {dataset.name} ({dataset.images.shape[1]}×"
                f"{dataset.images.shape[-1]}px, {dataset.num_classes} classes)")
    return victim, record, sha256_file(weights)
