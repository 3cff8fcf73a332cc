import json

import pytest
import torch
from click.testing import CliRunner

from attribkit import plugins
from attribkit.cli import cli
from attribkit.data import load_dataset, split_dataset
from attribkit.victims import load_victim


def test_lenet5_trains_from_the_cli_and_loads_back(tmp_path):
    plugins.reset()
    result = CliRunner().invoke(cli, ["victims", "train", "--arch", "lenet5", "--epochs", "2",
                                      "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    (trained,) = json.loads(result.stdout)
    assert trained["name"] == "lenet5"
    model, record = load_victim(tmp_path, "lenet5")
    assert record.family == "LeNet" and not model.training
    # the reported accuracy is the loaded model's on the held-out split (how high it is depends on the CPU)
    mnist = load_dataset("mnist5k")
    test = split_dataset(mnist.labels, record.training["test_fraction"], record.seed).test
    with torch.no_grad():
        right = (model(mnist.images[test]).argmax(1) == mnist.labels[test]).float().mean().item()
    assert trained["test_accuracy"] == pytest.approx(right, abs=1 / len(test))  # channels-last may break a near-tie
