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
def victim(mnist):
    """A narrow ResNet18 trained for two epochs: weak, but real and fast."""
    model, _ = train_victim(make_record("resnet18", mnist, 1 / 16, name="tiny"), mnist, epochs=2, seed=0)
    return model


@pytest.fixture(scope="session")
def batch(victim, mnist):
    """Sixteen digits the victim gets right: attacking the others proves nothing."""
    x, y = mnist.images[:40], mnist.labels[:40]
    with torch.no_grad():
        right = victim(x).argmax(1) == y
    return x[right][:16], y[right][:16]
