import os

# Only this package's plugin: whatever else is installed cannot change these tests.
os.environ.setdefault("ATTRIBKIT_LOAD_PLUGINS", "foolbox")

import pytest  # noqa: E402
import torch  # noqa: E402

from attribkit.data import load_dataset  # noqa: E402
from attribkit.victims.train import make_record, train_victim  # noqa: E402


@pytest.fixture(scope="session")
def mnist():
    return load_dataset("mnist5k")


@pytest.fixture(scope="session")
def trained(mnist):
    """A narrow ResNet18 trained for two epochs: weak, but real and fast (model, record)."""
    return train_victim(make_record("resnet18", mnist, 1 / 16, name="tiny"), mnist, epochs=2, seed=0)


@pytest.fixture(scope="session")
def victim(trained):
    return trained[0]


@pytest.fixture(scope="session")
def batch(victim, mnist):
    """Two digits of every class the victim gets right, drawn in a seeded order:
    mnist5k is sorted by class, and attacking a misclassified image proves nothing."""
    with torch.no_grad():
        right = victim(mnist.images).argmax(1) == mnist.labels
    order = torch.randperm(len(mnist.labels), generator=torch.Generator().manual_seed(11))
    order = order[right[order]]
    idx = torch.cat([order[mnist.labels[order] == c][:2] for c in range(10)])
    return mnist.images[idx], mnist.labels[idx]
