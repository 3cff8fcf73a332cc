import os

# The core test run never autoloads whatever plugins happen to be installed.
os.environ["ATTRIBKIT_DISABLE_PLUGIN_AUTOLOAD"] = "1"
# The CLI's --device defaults to auto; the tests compare bytes made on the CPU (tests/test_gpu.py uses the GPU)
os.environ["ATTRIBKIT_DEVICE"] = "cpu"

import pytest  # noqa: E402
import torch  # noqa: E402

from attribkit import plugins  # noqa: E402
from attribkit.testing import clean_registry  # noqa: E402
from attribkit.data import load_dataset  # noqa: E402
from attribkit.victims import load_victim, save_victim  # noqa: E402
from attribkit.victims.train import make_record, train_victim  # noqa: E402

TINY_WIDTH = 1 / 16


@pytest.fixture(autouse=True)
def fresh_plugins():
    """Each test sees exactly the built-ins plus what it registers itself."""
    with clean_registry():
        yield


@pytest.fixture(scope="session")
def mnist():
    return load_dataset("mnist5k")


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory, mnist):
    """Two narrow victims trained for two epochs: weak, but real and fast."""
    zoo = tmp_path_factory.mktemp("zoo")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    for arch, name in (("resnet18", "tiny-resnet"), ("vgg16", "tiny-vgg")):
        record = make_record(arch, mnist, TINY_WIDTH, name=name)
        model, record = train_victim(record, mnist, epochs=2, seed=0)
        save_victim(zoo, record, model)
    return zoo


@pytest.fixture(scope="session")
def tiny_resnet(tiny_zoo):
    plugins.reset()
    return load_victim(tiny_zoo, "tiny-resnet")[0]


TINY_SCENARIO = {
    "name": "tiny", "dataset": "mnist5k", "seed": 7, "batch_size": 8,
    "victims": ["tiny-resnet", "tiny-vgg"], "cells": {"train": 4, "test": 2},
    "attacks": [
        {"name": "fgsm", "grid": {"eps": [20, 100]}},
        {"name": "pgd", "grid": {"eps": [20, 100]}, "settings": {"steps": 3}},
        {"name": "cw", "grid": {"kappa": [1, 3]}, "settings": {"steps": 25}},
    ],
}


@pytest.fixture(scope="session")
def tiny_data(tiny_zoo, tmp_path_factory):
    """A generated data set: 2 victims × 3 attacks × 2 values, 4 train / 2 test per cell."""
    from attribkit.generation.engine import generate
    from attribkit.generation.scenario import parse_scenario

    plugins.reset()
    out = tmp_path_factory.mktemp("data") / "tiny"
    generate(parse_scenario({**TINY_SCENARIO, "zoo": str(tiny_zoo)}), out)
    return out


def stratified(labels, per_class, seed, among=None):
    """Indices of ``per_class`` examples of every class, taken in a seeded random
    order (mnist5k is sorted by class: its first images are all zeros). ``among``
    restricts the choice to a boolean mask, e.g. the images a victim gets right."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    if among is not None:
        order = order[among[order]]
    taken = {c: 0 for c in labels.unique().tolist()}
    chosen = []
    for i in order.tolist():
        c = int(labels[i])
        if taken[c] < per_class:
            taken[c] += 1
            chosen.append(i)
    return torch.tensor(chosen)


@pytest.fixture(scope="session")
def attack_batch(mnist, tiny_resnet):
    """Three digits of every class that the tiny ResNet classifies correctly, as
    the engine would attack them (attacking a misclassified image proves nothing)."""
    with torch.no_grad():
        right = tiny_resnet(mnist.images).argmax(1) == mnist.labels
    idx = stratified(mnist.labels, 3, seed=11, among=right)
    return mnist.images[idx], mnist.labels[idx]


@pytest.fixture(scope="session")
def tiny_run(tiny_data, tmp_path_factory):
    """An MTAA run trained for one epoch on tiny_data: for tests of reading runs, not of training.
    Tests that damage it work on a copy."""
    from attribkit.training.config import TrainConfig
    from attribkit.training.trainer import train

    plugins.reset()
    out = tmp_path_factory.mktemp("runs") / "tiny-run"
    train(tiny_data, TrainConfig(width=0.125, epochs=1, batch_size=16, input_scale=1), out)
    return out
