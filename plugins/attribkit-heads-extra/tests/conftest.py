import pytest

from attribkit import plugins
from attribkit.data import load_dataset
from attribkit.generate.engine import generate
from attribkit.generate.scenario import parse_scenario
from attribkit.victims import save_victim
from attribkit.victims.train import make_record, train_victim

FAST = dict(width=0.125, epochs=2, batch_size=16, input_scale=1)


@pytest.fixture(autouse=True)
def fresh_plugins():
    plugins.reset()
    yield
    plugins.reset()


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    mnist = load_dataset("mnist5k")
    zoo = tmp_path_factory.mktemp("zoo")
    model, record = train_victim(make_record("resnet18", mnist, 1 / 16, name="tiny"), mnist, epochs=2, seed=0)
    save_victim(zoo, record, model)
    return zoo


def make_data(zoo, out, attacks):
    plugins.reset()
    scenario = parse_scenario({"name": out.name, "dataset": "mnist5k", "seed": 0, "zoo": str(zoo),
                               "victims": ["tiny"], "batch_size": 8, "cells": {"train": 8, "test": 4},
                               "attacks": attacks})
    generate(scenario, out)
    return out


MIXED = [
    {"name": "fgsm", "grid": {"eps": [40, 120]}},
    {"name": "pgd_targeted", "grid": {"eps": [60, 150]}, "settings": {"steps": 5}},
    {"name": "cw", "grid": {"kappa": [1, 2]}, "settings": {"steps": 25}},
]


@pytest.fixture(scope="session")
def mixed_data(zoo, tmp_path_factory):
    """L∞ and L2, targeted and untargeted: every class of both heads occurs."""
    return make_data(zoo, tmp_path_factory.mktemp("data") / "mixed", MIXED)
