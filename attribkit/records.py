"""Typed records: what a data set's labels mean, the labels of a batch, and a run's metadata.

Every stage and every plugin sees these instead of raw JSON dicts. Each record
knows its JSON layout (``to_json`` / ``from_json``); a record read back from a
file may hold anything, so ``from_json`` turns every malformed field into one
:class:`~attribkit.errors.DataError` naming the file. Fields added after a
format was first written are left out of the JSON while they hold their
default, so a data set that uses none of them keeps the bytes (and the
fingerprint) it always had.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from .errors import DataError

CLEAN = "clean"  # the attack and victim label of unattacked examples (paper §4.4)


def _expect(value, kind, where: str, what: str):
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise DataError(f"{where}: {what} must be {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def _require(data: dict, keys: tuple[tuple[str, type], ...], where: str) -> None:
    """Each key present with its type: a malformed record is one clear error naming it, not a KeyError later."""
    for key, kind in keys:
        if not isinstance(data.get(key), kind):
            found = "missing" if key not in data else f"a {type(data[key]).__name__}"
            raise DataError(f"{where!r}: {key!r} is {found}, expected a {kind.__name__}")


def _file_record(files: dict) -> dict:
    """The part of a folder record that :func:`attribkit.storage.recorded_file` reads."""
    return {"files": files} if files else {}


def _names(value, where: str, what: str) -> tuple[str, ...]:
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise DataError(f"{where}: {what} must be a list of names, got {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class HyperparameterInfo:
    """How a hyperparameter is shown: display value = natural value × scale (ε in /255)."""

    name: str
    unit: str
    scale: float
    symbol: str
    attacks: tuple[str, ...]  # the attacks of the data set that have it

    def text(self, value: float) -> str:
        return f"{self.symbol or self.name} = {value:.1f}{self.unit}"

    def to_json(self) -> dict:
        return {"unit": self.unit, "scale": self.scale, "symbol": self.symbol, "attacks": list(self.attacks)}

    @classmethod
    def from_json(cls, name: str, data, where: str) -> "HyperparameterInfo":
        what = f"label_spaces.hyperparameters[{name!r}]"
        _expect(data, dict, where, what)
        scale = _expect(data.get("scale"), (int, float), where, f"{what}.scale")
        return cls(name, _expect(data.get("unit", ""), str, where, f"{what}.unit"), scale,
                   _expect(data.get("symbol", ""), str, where, f"{what}.symbol"),
                   _names(data.get("attacks", []), where, f"{what}.attacks"))


@dataclass(frozen=True)
class AttackInfo:
    norm: str
    targeted: bool
    hyperparameters: tuple[str, ...]

    def to_json(self) -> dict:
        return {"norm": self.norm, "targeted": self.targeted, "hyperparameters": list(self.hyperparameters)}

    @classmethod
    def from_json(cls, name: str, data, where: str) -> "AttackInfo":
        what = f"label_spaces.attack_info[{name!r}]"
        _expect(data, dict, where, what)
        return cls(_expect(data.get("norm"), str, where, f"{what}.norm"),
                   _expect(data.get("targeted", False), bool, where, f"{what}.targeted"),
                   _names(data.get("hyperparameters"), where, f"{what}.hyperparameters"))


@dataclass(frozen=True)
class LabelSpaces:
    """The classes and hyperparameters a data set's labels index into.

    ``clean`` makes room for a clean class of attack and victim (paper §4.4);
    ``extra`` for labels a head plugin defines itself (name → classes).
    """

    attacks: tuple[str, ...]
    victims: tuple[str, ...]
    hyperparameters: dict[str, HyperparameterInfo]
    attack_info: dict[str, AttackInfo]
    clean: bool = False
    extra: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self):
        missing = [a for a in self.attacks if a not in self.attack_info]
        if missing:
            raise DataError(f"label spaces: attack {missing[0]!r} has no attack_info")
        for a in self.attacks:
            unknown = [h for h in self.attack_info[a].hyperparameters if h not in self.hyperparameters]
            if unknown:
                raise DataError(f"label spaces: attack {a!r} names unknown hyperparameter {unknown[0]!r}")
        if self.clean and not (self.attacks[-1:] == self.victims[-1:] == (CLEAN,)):
            raise DataError(f"label spaces: with a clean class, {CLEAN!r} must be the last attack and victim label")

    @property
    def clean_index(self) -> tuple[int, int] | None:
        """(attack, victim) label of the clean class, or None when the data set has none."""
        return (len(self.attacks) - 1, len(self.victims) - 1) if self.clean else None

    @property
    def hp_names(self) -> list[str]:
        return list(self.hyperparameters)

    @property
    def targeted(self) -> bool:
        return any(self.attack_info[a].targeted for a in self.attacks)

    def hyperparameters_of(self, attack: str) -> tuple[str, ...]:
        return self.attack_info[attack].hyperparameters

    def to_json(self) -> dict:
        data = {"attack": list(self.attacks), "victim": list(self.victims),
                "hyperparameters": {n: h.to_json() for n, h in self.hyperparameters.items()},
                "attack_info": {n: a.to_json() for n, a in self.attack_info.items()}}
        if self.clean:
            data["clean"] = True
        if self.extra:
            data["extra"] = {k: list(v) for k, v in self.extra.items()}
        return data

    @classmethod
    def from_json(cls, data, where: str = "label spaces") -> "LabelSpaces":
        _expect(data, dict, where, "label_spaces")
        hps = _expect(data.get("hyperparameters"), dict, where, "label_spaces.hyperparameters")
        info = _expect(data.get("attack_info"), dict, where, "label_spaces.attack_info")
        extra = _expect(data.get("extra", {}), dict, where, "label_spaces.extra")
        try:
            return cls(_names(data.get("attack"), where, "label_spaces.attack"),
                       _names(data.get("victim"), where, "label_spaces.victim"),
                       {n: HyperparameterInfo.from_json(n, h, where) for n, h in hps.items()},
                       {n: AttackInfo.from_json(n, a, where) for n, a in info.items()},
                       _expect(data.get("clean", False), bool, where, "label_spaces.clean"),
                       {k: _names(v, where, f"label_spaces.extra[{k!r}]") for k, v in extra.items()})
        except DataError as exc:
            raise DataError(f"{where}: {exc}" if not str(exc).startswith(where) else str(exc)) from None

    def matches(self, other: "LabelSpaces") -> str | None:
        """Why a model trained on ``self`` cannot score data labelled with ``other`` (None: it can)."""
        for what, ours, theirs in (("attack", self.attacks, other.attacks), ("victim", self.victims, other.victims),
                                   ("hyperparameter", self.hp_names, other.hp_names)):
            if list(ours) != list(theirs):
                return f"{what} labels {list(theirs)} do not match the run's {list(ours)}"
        return None


@dataclass
class Labels:
    """The labels of a set of examples, one row each.

    ``attack`` and ``victim`` index the label spaces; ``hp`` holds each
    hyperparameter in display units (NaN where the example's attack lacks it);
    ``target`` is the class a targeted attack aimed for (-1: untargeted);
    ``extra`` holds every other per-example column a data set records (the
    perturbation's ``l2`` and ``linf``, the victim's ``margin``, …), for heads
    that predict something of their own.
    """

    attack: torch.Tensor
    victim: torch.Tensor
    hp: torch.Tensor
    target: torch.Tensor
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.attack)

    def take(self, idx: torch.Tensor) -> "Labels":
        """The rows at ``idx`` (indices or a boolean mask)."""
        return Labels(self.attack[idx], self.victim[idx], self.hp[idx], self.target[idx],
                      {k: v[idx] for k, v in self.extra.items()})

    def to(self, device: torch.device, non_blocking: bool = False) -> "Labels":
        move = lambda t: t.to(device, non_blocking=non_blocking)
        return Labels(move(self.attack), move(self.victim), move(self.hp), move(self.target),
                      {k: move(v) for k, v in self.extra.items()})

    def column(self, name: str) -> torch.Tensor:
        """A per-example column by name: ``attack``, ``victim``, ``target`` or one of ``extra``
        (``linf``, ``l2``, …). Hyperparameters are the columns of ``hp``, in the label spaces' order."""
        if name in ("attack", "victim", "target"):
            return getattr(self, name)
        if name in self.extra:
            return self.extra[name]
        raise KeyError(name)


DATA_FORMAT = "attribkit-data/1"


@dataclass
class Shard:
    """One finished unit of a data set (a (victim, attack, split) job, or one grid point
    of it): its examples and, per grid point, how many attacks were attempted,
    succeeded and kept."""

    victim: str
    attack: str
    split: str
    examples: int
    cells: list[dict]
    seconds: float | None = None
    versions: dict | None = None  # only when another library version made it (--accept-versions)
    runtime: dict | None = None  # what made it: device, dtype, tf32 and worker ("rank/world_size")

    def to_json(self) -> dict:
        data = {"victim": self.victim, "attack": self.attack, "split": self.split, "examples": self.examples}
        if self.seconds is not None:
            data["seconds"] = self.seconds
        data["cells"] = self.cells
        if self.versions is not None:
            data["versions"] = self.versions
        if self.runtime is not None:
            data["runtime"] = self.runtime
        return data

    @classmethod
    def from_json(cls, name: str, data, where: str) -> "Shard":
        what = f"shards[{name!r}]"
        _expect(data, dict, where, what)
        cells = data.get("cells")
        if not (isinstance(cells, list) and all(isinstance(c, dict) for c in cells)):
            raise DataError(f"{where}: {what}.cells must be a list of objects, got {cells!r}")
        return cls(*(_expect(data.get(k), str, where, f"{what}.{k}") for k in ("victim", "attack", "split")),
                   _expect(data.get("examples"), int, where, f"{what}.examples"), cells,
                   data.get("seconds"), data.get("versions"),
                   data.get("runtime") if isinstance(data.get("runtime"), dict) else None)

    @property
    def attempted(self) -> int:
        return sum(c.get("attempted", 0) for c in self.cells)

    @property
    def succeeded(self) -> int:
        return sum(c.get("succeeded", 0) for c in self.cells)


@dataclass
class Manifest:
    """A data set's ``manifest.json``: the scenario that made it, the label spaces, and
    every finished shard. The manifest never names a shard that is not complete."""

    scenario: dict
    fingerprint: str
    label_spaces: LabelSpaces
    versions: dict = field(default_factory=dict)
    dataset: dict = field(default_factory=dict)  # name, images, shape, num_classes of the clean images
    split: dict = field(default_factory=dict)  # seed, test_fraction and size of each split
    victims: dict = field(default_factory=dict)  # name → the victim's record and weights' sha256
    shards: dict[str, Shard] = field(default_factory=dict)
    status: str = "partial"  # or "complete"
    files: dict = field(default_factory=dict)  # name → sha256 and size (storage.FILES)
    totals: dict | None = None

    @property
    def shape(self) -> list | None:
        return self.dataset.get("shape") if isinstance(self.dataset.get("shape"), list) else None

    def to_json(self) -> dict:
        data = {"format": DATA_FORMAT, "scenario": self.scenario, "fingerprint": self.fingerprint,
                "versions": self.versions, "dataset": self.dataset, "split": self.split,
                "label_spaces": self.label_spaces.to_json(), "victims": self.victims,
                "shards": {n: s.to_json() for n, s in self.shards.items()}, "status": self.status}
        if self.files:
            data["files"] = self.files
        if self.totals is not None:
            data["totals"] = self.totals
        return data

    @classmethod
    def from_json(cls, data: dict, where: str) -> "Manifest":
        _require(data, (("scenario", dict), ("fingerprint", str), ("label_spaces", dict), ("shards", dict),
                        ("versions", dict), ("victims", dict), ("status", str)), where)
        files = data.get("files")
        if files is not None and not isinstance(files, dict):
            raise DataError(f"{where!r}: 'files' must be an object")
        return cls(data["scenario"], data["fingerprint"], LabelSpaces.from_json(data["label_spaces"], repr(where)),
                   data["versions"], data.get("dataset") if isinstance(data.get("dataset"), dict) else {},
                   data.get("split") if isinstance(data.get("split"), dict) else {}, data["victims"],
                   {n: Shard.from_json(n, s, repr(where)) for n, s in data["shards"].items()}, data["status"],
                   files or {}, data.get("totals"))

    @property
    def file_record(self) -> dict:
        return _file_record(self.files)


RUN_FORMAT = "attribkit-run/2"
RUN_FORMATS_READ = ("attribkit-run/1", RUN_FORMAT)


@dataclass
class HeadRecord:
    """A trained head: the plugin that registered it, and what it learnt from the
    training labels before training (``HeadSpec.fit``), if anything."""

    plugin: str
    state: Any = None

    def to_json(self) -> dict:
        return {"plugin": self.plugin, "state": self.state}


@dataclass
class RunMeta:
    """Everything in a run's ``run.json`` but the files' hashes.

    Format 2 keeps each head's fitted state under its own name in ``heads``;
    format 1 kept single-label's classes at the top level (``combinations``),
    which a format-1 run hands to its heads as ``legacy_state``.
    """

    config: dict
    heads: dict[str, HeadRecord]
    label_spaces: LabelSpaces
    target_stats: dict[str, dict[str, float]]
    columns: list[str]
    in_chans: int
    image_size: int
    members: list[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    parameters: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)  # seconds, runtime (device, precision), final metrics, loss σ
    legacy_state: Any = None
    files: dict = field(default_factory=dict)  # as read: the recorded sha256 of the run's files (storage.FILES)
    trust: dict | None = None  # calibration and the unknown-attack threshold (attribkit.trust.fitted); None: none fitted

    def to_json(self) -> dict:
        return {"format": RUN_FORMAT, "config": self.config,
                "heads": {n: h.to_json() for n, h in self.heads.items()},
                "data": self.data, "label_spaces": self.label_spaces.to_json(), "target_stats": self.target_stats,
                "columns": self.columns, "input": {"in_chans": self.in_chans, "image_size": self.image_size},
                "members": self.members, "versions": self.versions, "parameters": self.parameters, **self.results,
                **({"trust": self.trust} if self.trust is not None else {})}

    @classmethod
    def from_json(cls, data: dict, where: str) -> "RunMeta":
        fmt = data.get("format")
        if fmt not in RUN_FORMATS_READ:
            raise DataError(f"{where!r} has run format {fmt!r}; this attribkit reads {', '.join(RUN_FORMATS_READ)}")
        _require(data, (("config", dict), ("label_spaces", dict), ("target_stats", dict), ("columns", list),
                        ("input", dict)), where)
        shape = data["input"]
        for key in ("in_chans", "image_size"):
            value = shape.get(key)
            if not (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65536):
                raise DataError(f"{where!r}: input.{key} must be a positive integer, got {value!r}")
        # absent or null in runs written before they were recorded; anything else must have its type
        optional = {k: data.get(k) if data.get(k) is not None else kind() for k, kind in
                    (("heads", dict), ("data", dict), ("versions", dict), ("parameters", dict), ("members", list))}
        heads = _expect(optional["heads"], dict, where, "heads")
        for key in ("data", "versions", "parameters"):
            _expect(optional[key], dict, where, key)
        members = _names(optional["members"], where, "members")
        if fmt == "attribkit-run/1":  # name → plugin
            records = {n: HeadRecord(_expect(p, str, where, f"heads[{n!r}]")) for n, p in heads.items()}
        else:
            records = {n: HeadRecord(_expect(_expect(h, dict, where, f"heads[{n!r}]").get("plugin"), str, where,
                                             f"heads[{n!r}].plugin"), h.get("state")) for n, h in heads.items()}
        results = {k: data[k] for k in ("seconds", "runtime", "final_validation_metrics", "final_test_metrics",
                                         "loss_sigmas") if k in data}
        return cls(data["config"], records, LabelSpaces.from_json(data["label_spaces"], where), data["target_stats"],
                   data["columns"], shape["in_chans"], shape["image_size"], list(members),
                   optional["data"], optional["versions"], optional["parameters"], results,
                   data.get("combinations") if fmt == "attribkit-run/1" else None,
                   data.get("files") if isinstance(data.get("files"), dict) else {},
                   _expect(data["trust"], dict, where, "trust") if data.get("trust") is not None else None)

    @property
    def file_record(self) -> dict:
        return _file_record(self.files)

    @property
    def seconds(self) -> float | None:
        return self.results.get("seconds")

    @property
    def final_test_metrics(self) -> dict:
        return self.results.get("final_test_metrics", {})

    @property
    def final_validation_metrics(self) -> dict | None:
        return self.results.get("final_validation_metrics")

    @property
    def loss_sigmas(self) -> dict:
        return self.results.get("loss_sigmas", {})

    def with_results(self, **results) -> "RunMeta":
        return replace(self, results={**self.results, **results})
