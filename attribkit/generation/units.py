"""Units of generation work, and which worker does which.

A unit is one shard: by default a whole (victim, attack, split) *job*, or,
with the scenario's ``work_unit = "point"``, one grid point of a job. Each
unit has its own seed, derived from the scenario's and its own name, so its
bytes do not depend on which worker ran it or how many there were.

Workers never talk to each other: each computes the same assignment from
the plan (longest unit first, to the least-loaded worker) and does its own
share. The cost that orders units is an estimate made from the scenario
alone (examples × grid points × attack steps × the victim's input pixels),
so every worker computes the same one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Mapping

from .scenario import CLEAN, AttackPlan, Scenario

SPLITS = ("train", "test")
WORK_UNITS = ("job", "point")


def derive_seed(*parts) -> int:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@dataclass(frozen=True)
class Unit:
    victim: str
    attack: str
    split: str
    point: tuple[tuple[str, float], ...] | None = None  # None: every grid point of the attack (a whole job)

    @property
    def shard(self) -> str:
        tail = "" if self.point is None else "__" + "_".join(f"{k}{v:g}" for k, v in self.point)
        return f"{self.victim}__{self.attack}__{self.split}{tail}.safetensors"

    def seed(self, scenario_seed: int) -> int:
        parts = [scenario_seed, self.victim, self.attack, self.split]
        if self.point is not None:
            parts += [f"{k}={v!r}" for k, v in self.point]
        return derive_seed(*parts)

    def plan(self, plan: AttackPlan) -> AttackPlan:
        """The attack's plan, narrowed to this unit's grid point."""
        if self.point is None:
            return plan
        return AttackPlan(plan.name, {k: (v,) for k, v in self.point}, plan.settings)

    @property
    def is_clean(self) -> bool:
        """The split's clean examples (the scenario's ``[clean]``): no victim attacked, no grid."""
        return self.attack == CLEAN

    @property
    def label(self) -> str:
        point = "" if self.point is None else " · " + " ".join(f"{k} {v:g}" for k, v in self.point)
        return f"{self.victim} · {self.attack} · {self.split}{point}"


def plan_units(scenario: Scenario) -> list[Unit]:
    """Every unit of the scenario, in the order the data set lists them."""
    units = []
    for victim in scenario.victims:
        for attack in scenario.attacks:
            for split in SPLITS:
                if scenario.work_unit == "point":
                    units += [Unit(victim.name, attack.name, split, tuple(p.items())) for p in attack.points()]
                else:
                    units.append(Unit(victim.name, attack.name, split))
    if scenario.clean is not None:
        units += [Unit(CLEAN, CLEAN, split) for split in SPLITS]
    return units


def estimated_cost(unit: Unit, scenario: Scenario, pixels: Mapping[str, int]) -> float:
    """Relative work of a unit: examples × grid points × attack iterations × input pixels of the victim."""
    if unit.is_clean:  # one prediction per clean image and victim
        return float(getattr(scenario.clean, unit.split) * sum(pixels.values()))
    plan = next(p for p in scenario.attacks if p.name == unit.attack)
    per_cell = scenario.train_per_cell if unit.split == "train" else scenario.test_per_cell
    points = 1 if unit.point is not None else len(plan.points())
    iterations = max(1, int(plan.settings.get("steps", 1)), int(plan.settings.get("n_queries", 1)))
    return float(per_cell * points * iterations * pixels.get(unit.victim, 1))


def assign(units: list[Unit], costs: Mapping[Unit, float], world_size: int) -> list[list[Unit]]:
    """Each worker's units: longest first, each to the worker with the least work so far (ties:
    the lowest rank); within a worker, in plan order."""
    loads = [0.0] * world_size
    shares: list[list[Unit]] = [[] for _ in range(world_size)]
    position = {u: i for i, u in enumerate(units)}
    for unit in sorted(units, key=lambda u: (-costs[u], position[u])):
        rank = min(range(world_size), key=lambda r: (loads[r], r))
        loads[rank] += costs[unit]
        shares[rank].append(unit)
    return [sorted(share, key=position.__getitem__) for share in shares]
