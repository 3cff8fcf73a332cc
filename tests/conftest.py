import os

# The core test run never autoloads whatever plugins happen to be installed.
os.environ["ATTRIBKIT_DISABLE_PLUGIN_AUTOLOAD"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from attribkit import plugins  # noqa: E402
from attribkit.data import load_dataset  # noqa: E402
from attribkit.victims import load_victim, save_victim  # noqa: E402
from attribkit.victims.train import make_record, train_victim  # noqa: E402

TINY_WIDTH = 1 / 16


@pytest.fixture(autouse=True)
def fresh_plugins():
    """Each test sees exactly the built-ins plus what it registers itself."""
    plugins.reset()
    yield
    plugins.reset()


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
