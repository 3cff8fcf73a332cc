import json

from click.testing import CliRunner

from attribkit import plugins
from attribkit.cli import cli
from attribkit.victims import load_victim


def test_lenet5_trains_from_the_cli_and_loads_back(tmp_path):
    plugins.reset()
    result = CliRunner().invoke(cli, ["victims", "train", "--arch", "lenet5", "--epochs", "2",
                                      "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    (trained,) = json.loads(result.stdout)
    assert trained["name"] == "lenet5" and trained["test_accuracy"] > 0.85
    model, record = load_victim(tmp_path, "lenet5")
    assert record.family == "LeNet" and not model.training
