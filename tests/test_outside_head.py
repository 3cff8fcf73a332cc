"""A regression head registered from outside attribkit, through the public API
only, is trained, scored, evaluated, answered and required to load its run:
the proof that the core names no head and that a head plugin owns its whole
life (target, loss, metric, answer, report)."""

import json
import math

import pytest
import torch
from safetensors import safe_open

import attribkit
from attribkit import AttribkitError, HeadSpec, RegressionHead, TrainConfig, hookimpl, storage
from attribkit.testing import registered
from attribkit.training.data import quantize
from attribkit.training.models import heads_of, predict

FAST = dict(width=0.125, epochs=1, batch_size=16, input_scale=1)
NAME, PLUGIN = "size", "size-head"


def fit_size(labels, spaces, config):
    """What the head learns before training: the scale of the training split's L∞ sizes (JSON, kept in the run)."""
    linf = labels.extra["linf"].double()
    return {"mean": float(linf.mean()), "std": float(linf.std())}


class SizePlugin:
    """The perturbation's L∞ size, regressed from the attack branch."""

    @hookimpl
    def register_heads(self, register):
        register(HeadSpec(
            NAME, "regression", lambda columns: "linf" in columns,
            lambda context: RegressionHead(NAME, "linf", context.feature_dims["attack"], "attack",
                                           context.state["mean"], context.state["std"]),
            description="the perturbation's L∞ size", fit=fit_size))


@pytest.fixture(scope="module")
def size_run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "size"
    with registered(SizePlugin(), PLUGIN):
        meta = attribkit.train(tiny_data, TrainConfig(**FAST), out)
    return out, meta


def test_the_outside_head_is_trained_with_the_others(size_run):
    out, meta = size_run
    assert set(meta.loss_sigmas["mtaa"]) == {"attack", "victim", "hyperparameter", NAME}
    assert meta.heads[NAME].plugin == PLUGIN
    assert set(meta.heads[NAME].state) == {"mean", "std"} and meta.heads[NAME].state["std"] > 0
    assert "linf" in meta.columns
    saved = json.loads((out / "run.json").read_text())
    assert saved["heads"][NAME] == {"plugin": PLUGIN, "state": meta.heads[NAME].state}
    with safe_open(str(out / "weights.safetensors"), "pt") as weights:
        keys = set(weights.keys())
    assert {f"mtaa/net.heads.{NAME}.{k}" for k in ("fc.weight", "fc.bias", "mean", "std")} <= keys
    assert f"mtaa/loss.log_sigma.{NAME}" in keys


def test_its_metric_is_the_rmse_of_its_predictions(size_run, tiny_data):
    out, meta = size_run
    epochs = json.loads((out / "metrics.json").read_text())["epochs"]
    assert epochs and all(math.isfinite(row[f"{NAME}_rmse"]) for row in epochs)
    final = meta.final_test_metrics[f"{NAME}_rmse"]
    assert isinstance(final, float) and math.isfinite(final) and final > 0
    with registered(SizePlugin(), PLUGIN):
        loaded, members = attribkit.load_run(out)
    assert loaded.final_test_metrics[f"{NAME}_rmse"] == final
    data = attribkit.load_data(tiny_data, "test")
    images = quantize(data.images) if loaded.config["quantize"] else data.images
    outputs = predict(members, images)
    head = heads_of(members)[NAME]
    assert isinstance(head, RegressionHead) and outputs[NAME].shape == (len(data),)
    truth = data.labels.extra["linf"].double()
    assert torch.isfinite(truth).all() and truth.max() <= 100 / 255 + 1e-6  # the grids' largest ε
    by_hand = float(((head.values(outputs[NAME]).double() - truth) ** 2).mean().sqrt())
    assert final == pytest.approx(by_hand, abs=1e-4)  # the metric is rounded to 4 decimals


def test_evaluate_reports_it_apart_from_the_signatures(size_run, tiny_data, tmp_path):
    out, meta = size_run
    with registered(SizePlugin(), PLUGIN):
        report = attribkit.evaluate(out, tiny_data, out=tmp_path / "eval")
    key = f"{NAME}_rmse"
    assert report[key] == meta.final_test_metrics[key]  # the same model on the same test split
    assert report["scores"][key] == {"title": f"{NAME} RMSE", "column": f"{NAME} RMSE", "kind": "rmse",
                                     "signature": False}
    assert key not in report["tables"]  # not a signature: no attack × victim table unless it asks for one
    md = (tmp_path / "eval" / "evaluation.md").read_text()
    assert f"| {NAME} RMSE | {report[key]:.2f} |" in md.split("Other heads:")[1]
    assert json.loads((tmp_path / "eval" / "evaluation.json").read_text())[key] == report[key]


def test_attribute_answers_it_for_each_input(size_run, tiny_data, tmp_path):
    out, _ = size_run
    data = attribkit.load_data(tiny_data, "test")
    batch = tmp_path / "x.safetensors"
    storage.save_tensors(batch, {"images": data.images[:3].contiguous()})
    with registered(SizePlugin(), PLUGIN):
        report = attribkit.attribute(out, [str(batch)])
    assert NAME in report["heads"] and NAME in report["table"]["columns"]
    assert len(report["results"]) == len(report["table"]["rows"]) == 3
    column = report["table"]["columns"].index(NAME)
    for row, shown in zip(report["results"], report["table"]["rows"]):
        assert isinstance(row[NAME], float) and math.isfinite(row[NAME])
        assert shown[column] == f"{row[NAME]:.4g}"
        assert row["attack"] in ("fgsm", "pgd", "cw")  # the built-in heads answer beside it


def test_without_the_plugin_the_run_refuses_to_load(size_run):
    out, _ = size_run
    with pytest.raises(AttribkitError, match=f"trained with head '{NAME}' from plugin '{PLUGIN}', which "
                                                       f"is not installed"):
        attribkit.load_run(out)
