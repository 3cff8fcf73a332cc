"""The attributor's architecture options (stride-1 stem, the plain-CNN
baseline), the validation split and the per-cell cap: what each builds and
which examples each trains on."""

import dataclasses
import json

import pytest
import timm
import torch
from click.testing import CliRunner

from attribkit import plugins
from attribkit.cli import cli
from attribkit.errors import AttribkitError
from attribkit.evaluation import evaluate
from attribkit.model.backbone import StagedBackbone
from attribkit.model.cnn import PlainCNN
from attribkit.specs import BackboneSpec
from attribkit.training.config import TrainConfig
from attribkit.training.data import cap_per_cell, load_attribution_data, split_validation, target_stats
from attribkit.training.models import build_members
from attribkit.training.run import load_run
from attribkit.training.trainer import train

FAST = dict(width=0.125, epochs=1, batch_size=16, input_scale=1)


def _members(tiny_data, **options):
    data = load_attribution_data(tiny_data, "train")
    config = TrainConfig(**{**FAST, **options})
    return build_members(config, data.label_spaces, target_stats(data), data.columns, 1, 28)


def _stage_sizes(net, x):
    taps = net.backbone(x)
    return {k: tuple(v.shape[-2:]) for k, v in taps.items()}


def test_stride1_stem_keeps_every_pixel_up_to_the_first_stage(tiny_data):
    x = torch.rand(2, 1, 28, 28)
    timm_stem = _members(tiny_data)["mtaa"].net
    stride1 = _members(tiny_data, stem="stride1")["mtaa"].net
    assert _stage_sizes(timm_stem, x) == {"pe": (14, 14), "low": (7, 7), "shared": (2, 2)}
    assert _stage_sizes(stride1, x) == {"pe": (28, 28), "low": (28, 28), "shared": (7, 7)}
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in stride1.backbone.trunk.values())
    # same weights, other strides: the stem changes no parameter, so old and new runs have the same keys
    assert timm_stem.state_dict().keys() == stride1.state_dict().keys()
    out = stride1(x)
    assert out["attack"].shape == (2, 3) and out["victim"].shape == (2, 2)


def test_stride1_stem_works_for_other_timm_backbones():
    spec = BackboneSpec("regnet", "regnetx_002")
    backbone = StagedBackbone(spec, 1, 28, stem="stride1")  # its own check compares with timm's forward_features
    assert backbone(torch.rand(1, 1, 28, 28))["pe"].shape[-1] == 28  # timm's regnet stem halves: 14


def test_a_backbone_without_a_named_first_conv_is_a_clear_error(monkeypatch):
    original = timm.create_model

    def unnamed(*args, **kwargs):
        net = original(*args, **kwargs)
        net.pretrained_cfg = {**net.pretrained_cfg, "first_conv": None}
        return net

    monkeypatch.setattr(timm, "create_model", unnamed)
    with pytest.raises(AttribkitError, match="stride-1 stem"):
        StagedBackbone(BackboneSpec("r", "resnet18"), 1, 28, stem="stride1")


def test_cnn_baseline_is_one_plain_cnn_per_signature(tiny_data):
    members = _members(tiny_data, model="cnn")
    assert sorted(members) == ["attack", "hyperparameter", "victim"]
    for name, m in members.items():
        assert isinstance(m.net, PlainCNN) and [h.name for h in m.net.head_list()] == [name]
        body = sum(p.numel() for p in m.net.body.parameters())
        assert body == 1 * 64 * 9 + 64 * 64 * 9 + 64 * 128 * 9 + 128 * 128 * 9 + 2 * (64 + 64 + 128 + 128)
    assert not members["hyperparameter"].net.heads["hyperparameter"].uses_logits  # no attack head to read


def test_cnn_baseline_trains_evaluates_and_answers(tiny_data, tmp_path):
    plugins.reset()
    meta = train(tiny_data, TrainConfig(**{**FAST, "model": "cnn", "heads": ("attack", "victim", "hyperparameter")}),
                 tmp_path / "cnn")
    assert sorted(meta.members) == ["attack", "hyperparameter", "victim"]
    assert set(meta.final_test_metrics) >= {"attack_accuracy", "victim_accuracy", "hp_rmse"}
    _, members = load_run(tmp_path / "cnn")
    assert all(isinstance(m.net, PlainCNN) for m in members.values())


def test_validation_split_holds_out_whole_clean_images_the_same_way_every_time(tiny_data):
    data = load_attribution_data(tiny_data, "train")
    train_part, validation = split_validation(data, 0.25)
    again_train, again_validation = split_validation(data, 0.25)
    assert torch.equal(validation.clean_index, again_validation.clean_index)
    assert len(train_part) + len(validation) == len(data) and len(validation) > 0
    assert not set(train_part.clean_index.tolist()) & set(validation.clean_index.tolist())  # no digit on both sides
    n_clean = len(torch.unique(data.clean_index))
    assert len(torch.unique(validation.clean_index)) == max(1, round(0.25 * n_clean))
    assert split_validation(data, 0.0) == (data, None)


def test_a_validation_split_that_leaves_nothing_to_train_on_is_refused(tiny_data):
    data = load_attribution_data(tiny_data, "train")
    one_image = data.subset(data.clean_index == data.clean_index[0])
    with pytest.raises(AttribkitError, match="leaves no training examples"):
        split_validation(one_image, 0.5)


def test_per_cell_keeps_the_first_examples_of_each_cell(tiny_data):
    data = load_attribution_data(tiny_data, "train")
    capped = cap_per_cell(data, 1)
    keys = lambda d: [(a, v, tuple(h)) for a, v, h in zip(d.labels.attack.tolist(), d.labels.victim.tolist(),
                                                          torch.nan_to_num(d.labels.hp, nan=-1).tolist())]
    assert len(set(keys(capped))) == len(capped) == len(set(keys(data)))  # one of each cell
    first = {}
    for i, k in enumerate(keys(data)):
        first.setdefault(k, i)
    assert torch.equal(capped.images, data.images[sorted(first.values())])
    assert cap_per_cell(data, 0) is data


def test_training_watches_validation_and_reports_test_once(tiny_data, tmp_path):
    plugins.reset()
    meta = train(tiny_data, TrainConfig(**{**FAST, "validation": 0.25, "schedule": "onecycle"}), tmp_path / "r")
    saved = json.loads((tmp_path / "r" / "run.json").read_text())
    epochs = json.loads((tmp_path / "r" / "metrics.json").read_text())["epochs"]
    assert [e["split"] for e in epochs] == ["validation"]
    assert epochs[-1]["examples"] == saved["data"]["validation"] == meta.final_validation_metrics["examples"]
    assert saved["data"]["train"] + saved["data"]["validation"] == len(load_attribution_data(tiny_data, "train"))
    report = evaluate(tmp_path / "r", tiny_data, split="validation", out=tmp_path / "ev")
    assert report["attack_accuracy"] == meta.final_validation_metrics["attack_accuracy"]


def test_evaluate_on_validation_needs_a_run_that_held_some_out(tiny_data, tmp_path):
    plugins.reset()
    train(tiny_data, TrainConfig(**{**FAST, "validation": 0.0}), tmp_path / "r")
    result = CliRunner().invoke(cli, ["evaluate", "--run", str(tmp_path / "r"), "--data", str(tiny_data),
                                      "--split", "validation"])
    assert result.exit_code == 1 and "without a validation split" in result.output


def test_a_run_json_from_before_these_options_loads_as_the_network_it_was(tiny_data, tmp_path):
    plugins.reset()
    run = tmp_path / "old"
    train(tiny_data, TrainConfig(**{**FAST, "validation": 0.0}), run)
    _, members = load_run(run)
    before = members["mtaa"].net(torch.zeros(1, 1, 28, 28))
    meta = json.loads((run / "run.json").read_text())
    for key in ("stem", "pool", "schedule", "validation", "per_cell"):
        meta["config"].pop(key)
    meta.pop("content_sha256")
    (run / "run.json").write_text(json.dumps(meta))
    old_meta, old_members = load_run(run, verify=False)  # the hand edit breaks its recorded hash
    config = TrainConfig.from_dict(old_meta.config)
    assert (config.stem, config.pool, config.schedule, config.validation, config.per_cell) == \
        ("timm", "avg", "cosine", 0.0, 0)
    assert torch.equal(old_members["mtaa"].net(torch.zeros(1, 1, 28, 28))["victim"], before["victim"])


@pytest.mark.parametrize("bad, match", [
    (dict(stem="stride2"), "stem must be one of"), (dict(pool="max"), "pool must be one of"), (dict(schedule="step"), "schedule must be one of"),
    (dict(validation=1.0), "validation must be"), (dict(validation=-0.1), "validation must be"),
    (dict(per_cell=-1), "per_cell must be"), (dict(model="mlp"), "model must be one of"),
])
def test_bad_new_options_are_refused(bad, match):
    with pytest.raises(AttribkitError, match=match):
        TrainConfig(**bad)


def test_evaluate_compares_against_several_baselines(tiny_data, tmp_path):
    plugins.reset()
    heads = ("attack", "victim", "hyperparameter")
    runs = {m: tmp_path / m for m in ("mtaa", "single-task", "cnn")}
    for model, path in runs.items():
        train(tiny_data, TrainConfig(**{**FAST, "model": model, "heads": heads}), path)
    result = CliRunner().invoke(cli, ["evaluate", "--run", str(runs["mtaa"]), "--data", str(tiny_data),
                                      "--baseline", str(runs["single-task"]), "--baseline", str(runs["cnn"]),
                                      "--out", str(tmp_path / "ev"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [b["model"] for b in report["baselines"]] == ["single-task", "cnn"]
    assert report["baseline"] == report["baselines"][0]
    md = (tmp_path / "ev" / "evaluation.md").read_text()
    assert "| cnn |" in md and "against each baseline" in md


def test_convnet_backbone_keeps_full_resolution_until_its_pools(tiny_data):
    net = _members(tiny_data, backbone="convnet", width=0.5)["mtaa"].net
    assert _stage_sizes(net, torch.rand(2, 1, 28, 28)) == {"pe": (28, 28), "low": (14, 14), "shared": (14, 14)}
    assert net.backbone.channels == {"pe": 32, "low": 64, "last": 64}
    assert net.branches["attack"] is not net.branches["victim"]  # the last stage is each branch's own
    out = net(torch.rand(2, 1, 28, 28))
    assert out["attack"].shape == (2, 3) and out["hyperparameter"].shape[0] == 2


def test_avg_max_pool_hands_the_heads_each_maps_mean_and_maximum(tiny_data):
    avg = _members(tiny_data)["mtaa"].net
    both = _members(tiny_data, pool="avg+max")["mtaa"].net
    assert both.heads["victim"].fc.in_features == 2 * avg.heads["victim"].fc.in_features
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        feats, taps = both.eval().features(x)
        last = both.branches["victim"](taps["shared"])
    n = last.shape[1]
    assert torch.equal(feats["victim"][:, :n], last.mean(dim=(2, 3)))
    assert torch.equal(feats["victim"][:, n:2 * n], last.amax(dim=(2, 3)))


def test_evaluate_on_validation_refuses_a_baseline_with_another_split(tiny_data, tmp_path):
    plugins.reset()
    train(tiny_data, TrainConfig(**{**FAST, "validation": 0.25}), tmp_path / "r")
    train(tiny_data, TrainConfig(**{**FAST, "validation": 0.5}), tmp_path / "b")
    result = CliRunner().invoke(cli, ["evaluate", "--run", str(tmp_path / "r"), "--data", str(tiny_data),
                                      "--split", "validation", "--baseline", str(tmp_path / "b")])
    assert result.exit_code == 1 and "another validation split" in result.output
    assert not (tmp_path / "r" / "evaluation").exists()


def test_cnn_per_epoch_rmse_uses_the_attack_networks_prediction(tiny_data, tmp_path):
    plugins.reset()
    meta = train(tiny_data, TrainConfig(**{**FAST, "model": "cnn", "heads": ("attack", "victim", "hyperparameter")}),
                 tmp_path / "cnn")
    rows = {r["member"]: r for r in json.loads((tmp_path / "cnn" / "metrics.json").read_text())["epochs"]}
    assert "attack_accuracy" in rows["attack"] and "attack_accuracy" not in rows["hyperparameter"]
    assert rows["hyperparameter"]["hp_rmse"] == meta.final_validation_metrics["hp_rmse"]  # measured as at the end
    assert "hp_rmse" not in rows["victim"]
