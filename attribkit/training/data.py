"""A generated data set, as tensors ready for training and evaluation."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..errors import AttribkitError, DataError
from ..storage import Rows
from ..storage.dataset import CLEAN, load_split_with_manifest, open_data_file, read_data_file
from ..records import CLEAN as CLEAN_LABEL, Labels, LabelSpaces


@dataclass
class AttributionData:
    """One split, ready to train or evaluate on. ``images`` and ``clean`` are tensors, or
    (streamed) :class:`~attribkit.storage.Rows` read from their files when indexed."""

    images: torch.Tensor | Rows  # adversarial, (N, C, H, W) in [0, 1]
    clean: torch.Tensor | Rows  # the clean image each was made from
    labels: Labels
    label_spaces: LabelSpaces
    fingerprint: str
    clean_index: torch.Tensor  # (N,) which clean image of the split each was made from

    def __len__(self) -> int:
        return len(self.images)

    @property
    def columns(self) -> list[str]:
        """The label columns head plugins may ask for (``HeadSpec.applies``), then the data
        set's other per-example columns (``Labels.extra``)."""
        ls = self.label_spaces
        return ["attack", "victim"] + [f"hp_{h}" for h in ls.hyperparameters] + (["target"] if ls.targeted else []) \
            + sorted(self.labels.extra)

    def subset(self, keep: torch.Tensor) -> "AttributionData":
        """The examples where ``keep`` (a boolean mask) is true, in order."""
        return AttributionData(_take(self.images, keep), _take(self.clean, keep), self.labels.take(keep),
                               self.label_spaces, self.fingerprint, self.clean_index[keep])


def narrow_attacks(data: AttributionData, attacks: tuple[str, ...] | list[str]) -> AttributionData:
    """Only the examples of these attacks (``clean`` too, if named), relabelled as a data set that had
    only them: the attacks keep their order, hyperparameters no kept attack has are dropped, and the
    victim ``clean`` goes with the attack ``clean``. What ``train --attack`` trains on; the examples
    left out are attacks the run never saw (``evaluate --unknown`` on the same data set scores them)."""
    spaces = data.label_spaces
    unknown = [a for a in attacks if a not in spaces.attacks]
    if unknown:
        raise DataError(f"attack {unknown[0]!r} is not in the data set (its attacks: {', '.join(spaces.attacks)})")
    kept = [a for a in spaces.attacks if a in attacks]
    if not any(a != CLEAN_LABEL for a in kept) or len(kept) < 2:
        raise DataError(f"--attack {' --attack '.join(dict.fromkeys(attacks))}: a run must tell at least two "
                        f"classes apart, one of them an attack (the data set has: {', '.join(spaces.attacks)})")
    if len(kept) == len(spaces.attacks):
        return data
    keep_clean = spaces.clean and CLEAN_LABEL in kept
    info = {a: spaces.attack_info[a] for a in kept}
    hps = {n: replace(h, attacks=tuple(a for a in h.attacks if a in kept)) for n, h in spaces.hyperparameters.items()
           if any(n in info[a].hyperparameters for a in kept)}
    victims = spaces.victims if keep_clean or not spaces.clean else spaces.victims[:-1]
    narrowed = LabelSpaces(tuple(kept), victims, hps, info, clean=keep_clean, extra=spaces.extra)
    index = {spaces.attacks.index(a): i for i, a in enumerate(kept)}
    part = data.subset(torch.isin(data.labels.attack, torch.tensor(sorted(index))))
    labels = part.labels
    columns = [spaces.hp_names.index(n) for n in hps]
    remap = torch.full((len(spaces.attacks),), -1, dtype=torch.long)
    remap[list(index)] = torch.tensor(list(index.values()))
    part.labels = Labels(remap[labels.attack], labels.victim, labels.hp[:, columns], labels.target, labels.extra)
    part.label_spaces = narrowed
    return part


def _take(rows: torch.Tensor | Rows, keep: torch.Tensor) -> torch.Tensor | Rows:
    return rows.take(keep) if isinstance(rows, Rows) else rows[keep]


# The validation split is drawn with its own fixed seed, not the training seed,
# so that every run on a data set (any model, any seed) holds out the same images.
VALIDATION_SEED = 20261125


def split_validation(data: AttributionData, fraction: float) -> tuple[AttributionData, AttributionData | None]:
    """(train, validation): the examples made from a seeded ``fraction`` of the
    split's clean images are held out, so no digit is on both sides."""
    if fraction <= 0:
        return data, None
    ids = torch.unique(data.clean_index)
    order = ids[torch.randperm(len(ids), generator=torch.Generator().manual_seed(VALIDATION_SEED))]
    held = order[:max(1, round(fraction * len(ids)))]
    in_validation = torch.isin(data.clean_index, held)
    if in_validation.all():
        raise AttribkitError(f"validation {fraction} leaves no training examples: the training split has "
                             f"{len(ids)} clean image(s); use --validation 0")
    return data.subset(~in_validation), data.subset(in_validation)


def cap_per_cell(data: AttributionData, per_cell: int) -> AttributionData:
    """At most ``per_cell`` examples of each (attack, victim, hyperparameter) cell, the first in data order.
    The clean class is one cell: it keeps as many as the attack with the most cells may (``[clean]``
    is sized like one attack)."""
    if per_cell <= 0:
        return data
    keys = torch.cat([data.labels.attack[:, None].double(), data.labels.victim[:, None].double(),
                      torch.nan_to_num(data.labels.hp.double(), nan=-1.0)], 1)
    found, cell = torch.unique(keys, dim=0, return_inverse=True)
    cap = [per_cell] * len(found)
    clean = data.label_spaces.clean_index
    if clean is not None:
        widest = max((int((found[:, 0] == a).sum()) for a in range(len(data.label_spaces.attacks)) if a != clean[0]),
                     default=1)
        cap = [per_cell * widest if int(row[0]) == clean[0] else per_cell for row in found]
    seen: dict[int, int] = {}
    keep = torch.zeros(len(data), dtype=torch.bool)
    for i, c in enumerate(cell.tolist()):
        seen[c] = seen.get(c, 0) + 1
        keep[i] = seen[c] <= cap[c]
    return data.subset(keep)


def load_attribution_data(path: str | Path, split: str, verify: bool = True, stream: bool = False) -> AttributionData:
    """One split of a data set; with ``verify`` every file read must match its recorded hash.
    With ``stream`` the images (adversarial and clean) stay in their files and are read a batch
    at a time: memory holds the labels only. Either way a batch holds the same values."""
    path = Path(path)
    manifest, data = load_split_with_manifest(path, split, verify, stream)
    if len(data["images"]) == 0:
        raise DataError(f"{str(path)!r} has no {split} examples")
    index = data["clean_index"].long()
    if stream:
        file = open_data_file(path, manifest, CLEAN, verify)
        found = file.shape("images")[0] if "images" in file.tensors else None
    else:
        clean, _ = read_data_file(path, manifest, CLEAN, verify)
        found = len(clean["images"]) if "images" in clean else None
    if found is None or (len(index) and not 0 <= int(index.min()) <= int(index.max()) < found):
        raise DataError(f"{str(path / CLEAN)!r} does not hold the clean images the shards point to")
    spaces = manifest.label_spaces
    hp_names = spaces.hp_names
    labels = Labels(
        data["attack"].long(), data["victim"].long(),
        torch.stack([data[f"hp_{h}"].float() for h in hp_names], 1) if hp_names else torch.zeros(len(data["images"]), 0),
        data["target"].long(),  # the class a targeted attack aimed for, -1 if untargeted
        {k: v for k, v in data.items() if k not in _LAID_OUT and not k.startswith("hp_")})
    clean_images = Rows([(file, "images")], index) if stream else clean["images"][index]
    return AttributionData(data["images"], clean_images, labels, spaces, manifest.fingerprint, index)


_LAID_OUT = ("images", "attack", "victim", "target", "clean_index")  # what Labels holds by name, or is not a label


def quantize(images: torch.Tensor | Rows) -> torch.Tensor | Rows:
    """What saving as an 8-bit PNG does to an image (to streamed rows: as each batch is read)."""
    if isinstance(images, Rows):
        return images.map(quantize)
    return torch.round(images * 255) / 255


def target_stats(data: AttributionData) -> dict[str, dict[str, float]]:
    """Mean and spread of each hyperparameter (display units), and of all on one scale ("*")."""
    stats = {}
    hp = data.labels.hp
    names = data.label_spaces.hp_names
    for j, name in enumerate(names + ["*"]):
        col = hp[torch.isfinite(hp)] if name == "*" else hp[:, j][torch.isfinite(hp[:, j])]
        if len(col) == 0:
            stats[name] = {"mean": 0.0, "std": 1.0}
        else:
            stats[name] = {"mean": float(col.mean()), "std": float(col.std()) if len(col) > 1 and col.std() > 0 else 1.0}
    return stats
