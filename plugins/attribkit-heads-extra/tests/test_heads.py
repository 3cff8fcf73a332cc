"""The heads, as the MTAA trainer, `evaluate` and `attribute` use them once the package is installed."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from attribkit import plugins
from attribkit.attribution import attribute
from attribkit.cli import cli
from attribkit.storage.dataset import load_split
from attribkit.training.config import TrainConfig
from attribkit.training.data import load_attribution_data, quantize
from attribkit.training.models import predict
from attribkit.training.run import load_run
from attribkit.training.trainer import train

FAST = dict(width=0.125, epochs=2, batch_size=16, input_scale=1)


def recomputed_accuracy(run, data_dir, head):
    """A head's test accuracy, counted here from the run's predictions and the head's targets."""
    _, members = load_run(run)
    data = load_attribution_data(data_dir, "test")
    outputs = predict(members, quantize(data.images))
    target, _ = members["mtaa"].net.heads[head].target(data.labels)
    return float((outputs[head].argmax(1) == target).float().mean())


@pytest.fixture(scope="module")
def run(mixed_data, tmp_path_factory):
    plugins.reset()
    out = tmp_path_factory.mktemp("runs") / "mtaa"
    return out, train(mixed_data, TrainConfig(**FAST), out)


def test_the_trainer_builds_both_heads_when_installed(run, mixed_data):
    out, meta = run
    assert set(meta.loss_sigmas["mtaa"]) == {"attack", "victim", "hyperparameter", "norm", "targeted"}
    assert meta.heads["norm"].plugin == "heads-extra" and meta.heads["targeted"].plugin == "heads-extra"
    for head in ("norm", "targeted"):
        assert meta.final_test_metrics[f"{head}_accuracy"] == pytest.approx(
            recomputed_accuracy(out, mixed_data, head), abs=1e-6)


def test_head_targets_follow_declared_norms_and_recorded_targets(run, mixed_data):
    _, members = load_run(run[0])
    heads = members["mtaa"].net.heads
    data = load_attribution_data(mixed_data, "train")
    batch = data.labels
    norm, _ = heads["norm"].target(batch)
    assert heads["norm"].classes == ["L2", "Linf"]
    expected = torch.tensor([{"fgsm": 1, "pgd_targeted": 1, "cw": 0}[data.label_spaces.attacks[a]]
                             for a in batch.attack.tolist()])
    assert torch.equal(norm, expected)
    targeted, _ = heads["targeted"].target(batch)
    assert torch.equal(targeted.bool(), batch.attack == data.label_spaces.attacks.index("pgd_targeted"))


def test_each_head_is_trained_by_cross_entropy_on_its_own_targets(mixed_data):
    from attribkit import HeadContext

    from attribkit_heads_extra import NormHead, TargetedHead

    data = load_attribution_data(mixed_data, "train")
    batch = data.labels
    context = HeadContext(data.label_spaces, {"attack": 8})
    torch.manual_seed(0)
    features = {"attack": torch.randn(len(data), 8)}
    for head in (NormHead(context), TargetedHead(context)):
        output = head(features, {})
        target, mask = head.target(batch)
        assert mask.all() and output.shape == (len(data), 2)
        expected = torch.nn.functional.cross_entropy(output, target)
        assert head.loss(output, batch).item() == pytest.approx(expected.item(), rel=1e-6), head.name


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
    assert "targeted" not in meta.heads and meta.heads["norm"].plugin == "heads-extra"


def test_disabling_the_plugin_changes_list_and_trainer_back(mixed_data, tmp_path, monkeypatch):
    runner = CliRunner()
    names = lambda: {h["name"] for h in json.loads(runner.invoke(cli, ["list", "heads", "--json"]).stdout)}
    assert {"norm", "targeted"} <= names()
    monkeypatch.setenv("ATTRIBKIT_DISABLE_PLUGIN_AUTOLOAD", "1")
    plugins.reset()
    assert names() == {"attack", "victim", "hyperparameter", "combination"}  # the built-ins (combination: single-label's)
    meta = train(mixed_data, TrainConfig(**{**FAST, "epochs": 1}), tmp_path / "without")
    assert set(meta.loss_sigmas["mtaa"]) == {"attack", "victim", "hyperparameter"}


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
    for head in ("norm", "targeted"):  # the trained model, scored again on the same test split
        assert report[f"{head}_accuracy"] == run[1].final_test_metrics[f"{head}_accuracy"]
        assert report["scores"][f"{head}_accuracy"]["signature"] is False  # not a term of Δ_MTL
    md = (tmp_path / "eval" / "evaluation.md").read_text()
    assert "| Norm accuracy (%) |" in md and "| Targeted accuracy (%) |" in md
