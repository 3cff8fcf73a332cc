import os

# Only this package's plugin: whatever else is installed cannot change these tests.
os.environ.setdefault("ATTRIBKIT_LOAD_PLUGINS", "heads-extra")

import pytest  # noqa: E402

from attribkit import plugins  # noqa: E402
from attribkit.testing import clean_registry  # noqa: E402
from attribkit.data import load_dataset  # noqa: E402
from attribkit.generation.engine import generate  # noqa: E402
from attribkit.generation.scenario import parse_scenario  # noqa: E402
from attribkit.victims import save_victim  # noqa: E402
from attribkit.victims.train import make_record, train_victim  # noqa: E402



@pytest.fixture(autouse=True)
def fresh_plugins():
    with clean_registry():
        yield


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    mnist = load_dataset("mnist5k")
    zoo = tmp_path_factory.mktemp("zoo")
    model, record = train_victim(make_record("resnet18", mnist, 1 / 16, name="tiny"), mnist, epochs=2, seed=0)
    save_victim(zoo, record, model)
    return zoo


@pytest.fixture(scope="session")
def make_data():
    return _make_data


def _make_data(zoo, out, attacks):
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
    return _make_data(zoo, tmp_path_factory.mktemp("data") / "mixed", MIXED)
