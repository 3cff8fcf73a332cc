"""Scenario files (TOML): data set × victims × attacks × grids × examples per cell.

Grids are written in each hyperparameter's display units (ε in /255, as in
the paper's Table 1), either as a list or as {start, stop, step}.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import tomllib
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .. import plugins
from ..errors import AttribkitError, ScenarioError
from ..records import CLEAN


@dataclass(frozen=True)
class VictimRef:
    """A zoo victim by name, or any timm model with a local safetensors checkpoint."""

    name: str
    timm: str | None = None
    checkpoint: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    resize_to: int | None = None


@dataclass(frozen=True)
class AttackPlan:
    name: str
    grid: dict[str, tuple[float, ...]]  # display units, per hyperparameter
    settings: dict[str, Any] = field(default_factory=dict)

    def points(self) -> list[dict[str, float]]:
        """Every combination of grid values (display units)."""
        names = list(self.grid)
        return [dict(zip(names, combo)) for combo in itertools.product(*(self.grid[n] for n in names))]


@dataclass(frozen=True)
class CleanPlan:
    """Unattacked images as examples of their own class, ``clean`` (paper §4.4): what an upstream
    detector's false alarms look like. ``misclassified`` is the share of them that some victim of
    the scenario gets wrong (as many as the split has): a detector flags those most."""

    train: int
    test: int
    misclassified: float = 0.25


@dataclass(frozen=True)
class Scenario:
    name: str
    dataset: str
    victims: tuple[VictimRef, ...]
    attacks: tuple[AttackPlan, ...]
    train_per_cell: int
    test_per_cell: int
    seed: int = 0
    test_fraction: float = 0.2
    zoo: str = "zoo"
    batch_size: int = 64
    max_attempts_factor: float = 8.0  # give up on a cell after attacking this × its quota
    keep_failed: bool = False
    pilot: int = 0  # give up on a grid point that no attempt of the first `pilot` images succeeded on (0 = never)
    work_unit: str = "job"  # one shard per (victim, attack, split), or per grid point of it: see generation/units.py
    clean: CleanPlan | None = None  # clean examples as a class of their own (paper §4.4)

    def to_dict(self) -> dict:
        data = json.loads(json.dumps(asdict(self)))  # lists, as it reads back from manifest.json
        # absent when off: data sets made before these keys existed keep their fingerprint
        if not self.pilot:
            data.pop("pilot")
        if self.work_unit == "job":
            data.pop("work_unit")
        if self.clean is None:
            data.pop("clean")
        return data

    def fingerprint(self) -> str:
        """Identity of the data this scenario produces (the zoo path is where, not what)."""
        data = self.to_dict()
        data.pop("zoo")
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


_TOP_KEYS = {"name", "dataset", "seed", "test_fraction", "zoo", "victims", "attacks", "cells", "batch_size",
             "max_attempts_factor", "keep_failed", "pilot", "work_unit", "clean", "description"}
_CLEAN_KEYS = {"train", "test", "misclassified"}
_CELL_KEYS = {"train", "test"}
_ATTACK_KEYS = {"name", "grid", "settings"}
_VICTIM_KEYS = {"name", "timm", "checkpoint", "mean", "std", "resize_to", "normalization"}
# what a pretrained checkpoint expects its input normalised with (timm's constants). A name is
# shorthand for typing the numbers: it parses to the same mean and std, so the same fingerprint.
NORMALIZATIONS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # torchvision's and most of timm's weights
    "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # TensorFlow-trained weights (Inception, tf_* models)
}


def _check_keys(table: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ScenarioError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")


def _typed(value, kind, where: str):
    ok = isinstance(value, kind) and not (kind in (int, float, (int, float)) and isinstance(value, bool))
    if not ok:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ScenarioError(f"{where}: expected {names}, got {type(value).__name__} {value!r}")
    return value


def _finite(value, where: str) -> float:
    value = float(_typed(value, (int, float), where))
    if not math.isfinite(value):
        raise ScenarioError(f"{where}: expected a finite number, got {value}")
    return value


MAX_GRID = 10_000  # values per hyperparameter: far beyond any useful grid, well below what exhausts memory


def _grid(spec, where: str) -> tuple[float, ...]:
    if isinstance(spec, dict):
        _check_keys(spec, {"start", "stop", "step"}, where)
        try:
            start, stop, step = (_finite(spec[k], f"{where}.{k}") for k in ("start", "stop", "step"))
        except KeyError as missing:
            raise ScenarioError(f"{where}: missing {missing.args[0]!r} (need start, stop, step)") from None
        if step <= 0:
            raise ScenarioError(f"{where}: step must be positive, got {step:g}")
        if stop < start:
            raise ScenarioError(f"{where}: inverted grid, start {start:g} > stop {stop:g}")
        span = (stop - start) / step
        if not span < MAX_GRID:
            raise ScenarioError(f"{where}: {{start, stop, step}} makes more than {MAX_GRID} values")
        count = int(math.floor(span + 1e-9)) + 1
        values = tuple(round(start + i * step, 10) for i in range(count))
    elif isinstance(spec, list):
        values = tuple(_finite(v, where) for v in spec)
    else:
        raise ScenarioError(f"{where}: a grid is a list of numbers or {{start, stop, step}}, got {spec!r}")
    if not values:
        raise ScenarioError(f"{where}: empty grid")
    if len(set(values)) != len(values):
        raise ScenarioError(f"{where}: grid repeats a value")
    return values


def _attack(table, i: int, registry: plugins.Registry) -> AttackPlan:
    where = f"attacks[{i}]"
    if not isinstance(table, dict):
        raise ScenarioError(f"{where}: expected a table, got {table!r}")
    _check_keys(table, _ATTACK_KEYS, where)
    if "name" not in table:
        raise ScenarioError(f"{where}: missing 'name'")
    spec = registry.get("attacks", _typed(table["name"], str, f"{where}.name"))
    where = f"attack {spec.name!r}"
    grid_in = _typed(table.get("grid", {}), dict, f"{where}.grid")
    declared = {h.name: h for h in spec.hyperparameters}
    for key in grid_in:
        if key not in declared:
            raise ScenarioError(f"{where}.grid: {spec.name} has no hyperparameter {key!r} "
                                f"(it declares: {', '.join(declared)})")
    grid = {}
    for name, hp in declared.items():
        values = _grid(grid_in[name], f"{where}.grid.{name}") if name in grid_in else hp.grid
        try:
            hp.check_values(values)
        except AttribkitError as exc:
            raise ScenarioError(f"{where}.grid: {exc}") from None
        grid[name] = values
    settings_in = _typed(table.get("settings", {}), dict, f"{where}.settings")
    for key, value in settings_in.items():
        if key not in spec.settings:
            raise ScenarioError(f"{where}.settings: unknown setting {key!r} "
                                f"(it has: {', '.join(spec.settings) or 'none'})")
        default = spec.settings[key]
        here = f"{where}.settings.{key}"
        if isinstance(default, bool) or not isinstance(default, (int, float)):
            _typed(value, type(default), here)
        else:
            number = _typed(value, int, here) if isinstance(default, int) else _finite(value, here)
            if default > 0 and number < 0:
                raise ScenarioError(f"{here}: must be ≥ 0, got {number}")
    return AttackPlan(spec.name, grid, {**spec.settings, **settings_in})


MAX_RESIZE = 4096  # px: the victim resizes every batch to this


def _victim(entry, i: int) -> VictimRef:
    where = f"victims[{i}]"
    if isinstance(entry, str):
        if not entry:
            raise ScenarioError(f"{where}: empty victim name")
        return VictimRef(entry)
    if not isinstance(entry, dict):
        raise ScenarioError(f"{where}: expected a zoo name or a table, got {entry!r}")
    _check_keys(entry, _VICTIM_KEYS, where)
    if "name" not in entry:
        raise ScenarioError(f"{where}: missing 'name'")
    if ("timm" in entry) != ("checkpoint" in entry):
        raise ScenarioError(f"{where}: an external victim needs both 'timm' and 'checkpoint'")
    seq = lambda k: tuple(_finite(v, f"{where}.{k}") for v in _typed(entry[k], list, f"{where}.{k}"))
    mean, std = seq("mean") if "mean" in entry else None, seq("std") if "std" in entry else None
    if "normalization" in entry:
        mean, std = _normalization(entry, where)
    ref = VictimRef(
        _typed(entry["name"], str, f"{where}.name"),
        _typed(entry["timm"], str, f"{where}.timm") if "timm" in entry else None,
        _typed(entry["checkpoint"], str, f"{where}.checkpoint") if "checkpoint" in entry else None,
        mean, std,
        _typed(entry["resize_to"], int, f"{where}.resize_to") if "resize_to" in entry else None,
    )
    if ref.std is not None and min(ref.std, default=1.0) <= 0:
        raise ScenarioError(f"{where}.std: every value must be > 0, got {list(ref.std)}")
    if ref.resize_to is not None and not 1 <= ref.resize_to <= MAX_RESIZE:
        raise ScenarioError(f"{where}.resize_to: must be in [1, {MAX_RESIZE}], got {ref.resize_to}")
    return ref


def _normalization(entry: dict, where: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if "timm" not in entry:  # a zoo victim normalises as its record says; the name would be silently ignored
        raise ScenarioError(f"{where}.normalization: only an external victim (timm + checkpoint) takes one; "
                            f"a zoo victim uses the normalization it was trained with")
    if "mean" in entry or "std" in entry:
        raise ScenarioError(f"{where}: give either normalization or mean and std, not both")
    name = _typed(entry["normalization"], str, f"{where}.normalization")
    if name not in NORMALIZATIONS:
        raise ScenarioError(f"{where}.normalization: unknown {name!r} (known: {', '.join(NORMALIZATIONS)}; "
                            f"or give mean and std)")
    return NORMALIZATIONS[name]


def _clean(table) -> CleanPlan:
    _typed(table, dict, "clean")
    _check_keys(table, _CLEAN_KEYS, "clean")
    counts = {k: _typed(table.get(k), int, f"clean.{k}") for k in ("train", "test")}
    if min(counts.values()) < 1:
        raise ScenarioError(f"clean: train and test must be ≥ 1 clean examples, got {counts}")
    share = _finite(table.get("misclassified", CleanPlan.misclassified), "clean.misclassified")
    if not 0 <= share <= 1:
        raise ScenarioError(f"clean.misclassified must be a share in [0, 1], got {share:g}")
    return CleanPlan(counts["train"], counts["test"], share)


def parse_scenario(data: dict, default_name: str = "scenario", registry: plugins.Registry | None = None) -> Scenario:
    """A scenario from its TOML table; attack and data-set names are looked up in ``registry``
    (default: what is installed)."""
    registry = registry or plugins.registry()
    _typed(data, dict, "scenario")
    _check_keys(data, _TOP_KEYS, "scenario")
    for key in ("dataset", "victims", "attacks", "cells"):
        if key not in data:
            raise ScenarioError(f"scenario: missing {key!r}")
    cells = _typed(data["cells"], dict, "cells")
    _check_keys(cells, _CELL_KEYS, "cells")
    counts = {k: _typed(cells.get(k), int, f"cells.{k}") for k in ("train", "test")}
    if min(counts.values()) < 1:
        raise ScenarioError(f"cells: train and test must be ≥ 1, got {counts}")
    victims = tuple(_victim(v, i) for i, v in enumerate(_typed(data["victims"], list, "victims")))
    attacks = tuple(_attack(a, i, registry) for i, a in enumerate(_typed(data["attacks"], list, "attacks")))
    for kind, items in (("victims", victims), ("attacks", attacks)):
        if not items:
            raise ScenarioError(f"scenario: {kind} is empty")
        names = [x.name for x in items]
        if len(set(names)) != len(names):
            raise ScenarioError(f"scenario: {kind} lists a name twice ({names})")
    dataset = _typed(data["dataset"], str, "dataset")
    registry.get("datasets", dataset.partition(":")[0])  # unknown data set: fail before any work
    sc = Scenario(
        name=_typed(data.get("name", default_name), str, "name"), dataset=dataset, victims=victims, attacks=attacks,
        train_per_cell=counts["train"], test_per_cell=counts["test"],
        seed=_typed(data.get("seed", 0), int, "seed"),
        test_fraction=float(_typed(data.get("test_fraction", 0.2), (int, float), "test_fraction")),
        zoo=_typed(data.get("zoo", "zoo"), str, "zoo"),
        batch_size=_typed(data.get("batch_size", 64), int, "batch_size"),
        max_attempts_factor=_finite(data.get("max_attempts_factor", 8.0), "max_attempts_factor"),
        keep_failed=_typed(data.get("keep_failed", False), bool, "keep_failed"),
        pilot=_typed(data.get("pilot", 0), int, "pilot"),
        work_unit=_typed(data.get("work_unit", "job"), str, "work_unit"),
        clean=_clean(data["clean"]) if "clean" in data else None,
    )
    if not 0 < sc.test_fraction < 1:
        raise ScenarioError(f"test_fraction must be in (0, 1), got {sc.test_fraction}")
    if sc.batch_size < 1:
        raise ScenarioError(f"batch_size must be ≥ 1, got {sc.batch_size}")
    if sc.max_attempts_factor < 1:
        raise ScenarioError(f"max_attempts_factor must be ≥ 1, got {sc.max_attempts_factor:g}")
    if sc.pilot < 0:
        raise ScenarioError(f"pilot must be a number of images ≥ 0 (0 = off), got {sc.pilot}")
    if sc.work_unit not in ("job", "point"):
        raise ScenarioError(f"work_unit must be \"job\" (one shard per victim × attack × split) or \"point\" "
                            f"(one per grid point of it), got {sc.work_unit!r}")
    if sc.clean is not None:
        taken = [x.name for x in (*victims, *attacks) if x.name == CLEAN]
        if taken:
            raise ScenarioError(f"scenario: {CLEAN!r} is the label of the clean examples ([clean]); "
                                f"rename the victim or attack called {CLEAN!r}")
    if sc.pilot and sc.keep_failed:
        raise ScenarioError("pilot and keep_failed = true cannot be combined: a point whose failures are kept "
                            "is never hopeless")
    return sc


def builtin_scenarios() -> dict[str, Path]:
    folder = resources.files("attribkit") / "scenarios"
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".toml")}


def load_scenario(path_or_name: str | Path, registry: plugins.Registry | None = None) -> Scenario:
    """A TOML file, or the name of a built-in scenario (``quick``, ``paper-mnist``)."""
    path = Path(path_or_name)
    if not path.exists():
        builtin = builtin_scenarios()
        if str(path_or_name) not in builtin:
            raise ScenarioError(f"scenario {str(path_or_name)!r} is neither a file nor a built-in "
                                f"({', '.join(sorted(builtin))})")
        path = builtin[str(path_or_name)]
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
        raise ScenarioError(f"cannot read scenario {str(path)!r}: {exc}") from None
    except RecursionError:  # tomllib recurses once per nesting level
        raise ScenarioError(f"cannot read scenario {str(path)!r}: nested too deeply") from None
    try:
        return parse_scenario(data, default_name=path.stem, registry=registry)
    except AttribkitError as exc:  # ScenarioError, or an unknown attack or data set
        raise ScenarioError(f"scenario {str(path)!r}: {exc}") from None
