"""From a scenario to an adversarial-attribution data set on disk."""

from .scenario import AttackPlan, Scenario, VictimRef, load_scenario, parse_scenario

__all__ = ["AttackPlan", "Scenario", "VictimRef", "load_scenario", "parse_scenario"]
