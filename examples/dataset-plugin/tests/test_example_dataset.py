import json

import torch
from click.testing import CliRunner

from attribkit import plugins
from attribkit.cli import cli
from attribkit.data import load_dataset


def test_the_dataset_loads_by_name_and_is_listed():
    plugins.reset()
    inverted, plain = load_dataset("mnist5k-inverted"), load_dataset("mnist5k")
    assert torch.equal(inverted.images, 1 - plain.images) and torch.equal(inverted.labels, plain.labels)
    assert inverted.images.mean() > 0.5  # mostly white
    listed = json.loads(CliRunner().invoke(cli, ["list", "datasets", "--json"]).stdout)
    assert "mnist5k-inverted" in {d["name"] for d in listed}
