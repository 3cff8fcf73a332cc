"""The heads, as the MTAA trainer, `evaluate` and `attribute` use them once the package is installed."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from attribkit import plugins
from attribkit.attribute import attribute
from attribkit.cli import cli
from attribkit.generate.store import load_split
from attribkit.train.config import TrainConfig
from attribkit.train.data import load_attribution_data
from attribkit.train.run import load_run
from attribkit.train.trainer import train

FAST = dict(width=0.125, epochs=2, batch_size=16, input_scale=1)


@pytest.fixture(scope="module")
def run(mixed_data, tmp_path_factory):
    plugins.reset()
    out = tmp_path_factory.mktemp("runs") / "mtaa"
    return out, train(mixed_data, TrainConfig(**FAST), out)


def test_the_trainer_builds_both_heads_when_installed(run):
    out, meta = run
    assert set(meta["loss_sigmas"]["mtaa"]) == {"attack", "victim", "hyperparameter", "norm", "targeted"}
    assert meta["heads"]["norm"] == "heads-extra" and meta["heads"]["targeted"] == "heads-extra"
    metrics = meta["final_test_metrics"]
    assert 0 <= metrics["norm_accuracy"] <= 1 and 0 <= metrics["targeted_accuracy"] <= 1


def test_head_targets_follow_declared_norms_and_recorded_targets(run, mixed_data):
    _, members = load_run(run[0])
    heads = members["mtaa"].net.heads
    data = load_attribution_data(mixed_data, "train")
    batch = data.batch(torch.arange(len(data)))
    norm, _ = heads["norm"].target(batch)
    assert heads["norm"].classes == ["L2", "Linf"]
    expected = torch.tensor([{"fgsm": 1, "pgd_targeted": 1, "cw": 0}[data.label_spaces["attack"][a]]
                             for a in batch["attack"].tolist()])
    assert torch.equal(norm, expected)
    targeted, _ = heads["targeted"].target(batch)
    assert torch.equal(targeted.bool(), batch["attack"] == data.label_spaces["attack"].index("pgd_targeted"))


def test_each_head_fits_its_targets_by_its_own_loss(mixed_data):
    """The head's loss and target are wired so that training it fits the
    labels: on fixed features that carry the answer, a few steps suffice."""
    from attribkit.model.heads import HeadContext

    from attribkit_heads_extra import NormHead, TargetedHead

    data = load_attribution_data(mixed_data, "train")
    batch = data.batch(torch.arange(len(data)))
    context = HeadContext(data.label_spaces, {"attack": 8})
    features = {"attack": torch.nn.functional.one_hot(batch["attack"], 8).float()}
    for head in (NormHead(context), TargetedHead(context)):
        opt = torch.optim.SGD(head.parameters(), lr=1.0)
        for _ in range(50):
            opt.zero_grad()
            head.loss(head(features, {}), batch).backward()
            opt.step()
        target, _ = head.target(batch)
        assert torch.equal(head(features, {}).argmax(1), target), head.name


def test_attribute_answers_norm_and_targeted(run, mixed_data, tmp_path):
    img = load_split(mixed_data, "test")["images"][0, 0]
    path = tmp_path / "one.png"
    Image.fromarray((img.numpy() * 255).round().astype(np.uint8), "L").save(path)
    (row,) = attribute(run[0], [str(path)])["results"]
    assert row["norm"] in ("L2", "Linf") and row["targeted"] in ("targeted", "untargeted")
    assert 0 < row["norm_probability"] <= 1


def test_no_targeted_head_without_targeted_attacks(zoo, make_data, tmp_path):
    data = make_data(zoo, tmp_path / "untargeted", [{"name": "fgsm", "grid": {"eps": [40, 120]}}])
    meta = train(data, TrainConfig(**{**FAST, "epochs": 1}), tmp_path / "run")
    assert "targeted" not in meta["heads"] and "norm" in meta["heads"]


def test_disabling_the_plugin_changes_list_and_trainer_back(mixed_data, tmp_path, monkeypatch):
    runner = CliRunner()
    names = lambda: {h["name"] for h in json.loads(runner.invoke(cli, ["list", "heads", "--json"]).stdout)}
    assert {"norm", "targeted"} <= names()
    monkeypatch.setenv("ATTRIBKIT_DISABLE_PLUGIN_AUTOLOAD", "1")
    plugins.reset()
    assert names() == {"attack", "victim", "hyperparameter"}
    meta = train(mixed_data, TrainConfig(**{**FAST, "epochs": 1}), tmp_path / "without")
    assert set(meta["loss_sigmas"]["mtaa"]) == {"attack", "victim", "hyperparameter"}


def test_a_run_with_the_heads_needs_the_plugin(run, monkeypatch):
    monkeypatch.setenv("ATTRIBKIT_LOAD_PLUGINS", "some-other-plugin")
    plugins.reset()
    result = CliRunner().invoke(cli, ["attribute", "--run", str(run[0]), str(run[0] / "run.json")])
    assert result.exit_code == 1
    assert "trained with head 'norm' from plugin 'heads-extra', which is not installed" in result.output
    assert "Traceback" not in result.output


def test_cli_attribute_and_evaluate_show_the_heads(run, mixed_data, tmp_path):
    img = load_split(mixed_data, "test")["images"][0, 0]
    path = tmp_path / "one.png"
    Image.fromarray((img.numpy() * 255).round().astype(np.uint8), "L").save(path)
    runner = CliRunner()
    shown = runner.invoke(cli, ["attribute", "--run", str(run[0]), str(path)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0 and "norm" in shown.stdout and "targeted" in shown.stdout
    assert "Linf" in shown.stdout or "L2" in shown.stdout
    report = json.loads(runner.invoke(cli, ["evaluate", "--run", str(run[0]), "--data", str(mixed_data),
                                            "--out", str(tmp_path / "eval"), "--json"]).stdout)
    assert 0 <= report["norm_accuracy"] <= 1 and 0 <= report["targeted_accuracy"] <= 1
    md = (tmp_path / "eval" / "evaluation.md").read_text()
    assert "| norm |" in md and "| targeted |" in md
