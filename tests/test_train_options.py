"""What `attribkit train` promises about its input and its switches: the 2×
nearest-neighbour upscale, 8-bit training images, and the ablation and loss
options as the CLI passes them to the model that is built and saved."""

import dataclasses
import json

import pytest
import torch
from click.testing import CliRunner

from attribkit import cli as cli_module
from attribkit.cli import cli
from attribkit.model.net import AttributionNet
from attribkit.records import LabelSpaces, RunMeta
from attribkit.training.config import TrainConfig
from attribkit.training.data import load_attribution_data, quantize, target_stats
from attribkit.training.models import build_members
from attribkit.training.run import load_run
from attribkit.training.trainer import train

FAST = dict(width=0.125, epochs=1, batch_size=16, input_scale=1)


def backbone_input(net, x):
    seen = []
    handle = net.backbone.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    with torch.no_grad():
        net.eval()(x)
    handle.remove()
    return seen[0]


def test_the_default_config_upscales_2x_by_nearest_neighbour(tiny_data):
    data = load_attribution_data(tiny_data, "train")
    config = dataclasses.replace(TrainConfig(), width=0.125)  # every default but the width
    (member,) = build_members(config, data.label_spaces, target_stats(data), data.columns, 1, 28).values()
    x = data.images[:3]
    seen = backbone_input(member.net, x)
    assert seen.shape[-2:] == (56, 56)
    assert torch.equal(seen, x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))  # copies, no new values


def _images_seen_in_training(monkeypatch, tiny_data, out, **config):
    seen = []
    original = AttributionNet.forward_train

    def spy(self, x, clean):
        seen.append(x.detach().clone())
        return original(self, x, clean)

    monkeypatch.setattr(AttributionNet, "forward_train", spy)
    train(tiny_data, TrainConfig(**{**FAST, **config}), out)
    return torch.cat(seen)


def test_training_reads_the_images_rounded_to_8_bits(tiny_data, tmp_path, monkeypatch):
    raw = load_attribution_data(tiny_data, "train").images
    assert not torch.equal(raw, quantize(raw))  # C&W and PGD's random start leave values between 8-bit levels
    seen = _images_seen_in_training(monkeypatch, tiny_data, tmp_path / "q", validation=0.0)
    assert torch.equal(seen, torch.round(seen * 255) / 255)
    assert torch.allclose(seen.sum(0), quantize(raw).sum(0), atol=1e-3)  # each image once per epoch, rounded
    unrounded = _images_seen_in_training(monkeypatch, tiny_data, tmp_path / "raw", quantize=False, validation=0.0)
    assert torch.allclose(unrounded.sum(0), raw.sum(0), atol=1e-3)
    assert not torch.equal(unrounded, torch.round(unrounded * 255) / 255)


@pytest.mark.parametrize("argv, changed", [
    ([], {}),
    (["--no-perturbation"], {"perturbation": False}),
    (["--no-task-specific"], {"task_specific": False}),
    (["--no-fusion"], {"fusion": False}),
    (["--loss", "sum"], {"loss": "sum"}),
    (["--regression", "single"], {"regression": "single"}),
    (["--model", "cnn"], {"model": "cnn"}),
    (["--stem", "stride1", "--pool", "avg+max"], {"stem": "stride1", "pool": "avg+max"}),
    (["--schedule", "onecycle", "--validation", "0.25", "--per-cell", "5"],
     {"schedule": "onecycle", "validation": 0.25, "per_cell": 5}),
    (["--validation", "0"], {"validation": 0.0}),
])
def test_cli_train_options_reach_the_config(argv, changed, monkeypatch, tmp_path):
    passed = []

    def fake_train(data_dir, config, out, **_):
        passed.append(config)
        return RunMeta(config.to_dict(), {}, LabelSpaces((), (), {}, {}), {}, [], 1, 28)

    monkeypatch.setattr(cli_module, "_train", fake_train)
    result = CliRunner().invoke(cli, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), *argv,
                                      "--json"])
    assert result.exit_code == 0, result.output
    assert passed == [dataclasses.replace(TrainConfig(), **changed)]  # the CLI's defaults are the API's


def test_ablations_loss_sum_and_single_regression_from_the_cli_build_that_model(tiny_data, tmp_path):
    run = tmp_path / "ablated"
    result = CliRunner().invoke(cli, [
        "train", "--data", str(tiny_data), "--out", str(run), "--width", "0.125", "--epochs", "1",
        "--batch-size", "16", "--no-perturbation", "--no-task-specific", "--no-fusion", "--loss", "sum",
        "--regression", "single", "--json"])
    assert result.exit_code == 0, result.output
    saved = json.loads((run / "run.json").read_text())
    assert {k: saved["config"][k] for k in ("perturbation", "task_specific", "fusion", "loss", "regression",
                                           "input_scale")} == {
        "perturbation": False, "task_specific": False, "fusion": False, "loss": "sum", "regression": "single",
        "input_scale": 2}
    assert set(saved["loss_sigmas"]["mtaa"].values()) == {1.0}  # a plain sum never moves log σ
    _, members = load_run(run)
    net, weighting = members["mtaa"].net, members["mtaa"].weighting
    assert net.ae is None and set(net.branches) == {"shared"} and weighting.mode == "sum"
    last = net.backbone.channels["last"]  # no fused low-level or perturbation features
    assert net.heads["attack"].fc.in_features == last and net.heads["victim"].fc.in_features == last
    assert net.heads["hyperparameter"].mode == "single" and net.heads["hyperparameter"].pairs == [("*", "*")]
    assert backbone_input(net, torch.rand(2, 1, 28, 28)).shape[-2:] == (56, 56)
