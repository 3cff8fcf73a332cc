import base64
import io
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import save_file

from attribkit import plugins
from attribkit.attribution import attribute
from attribkit.cli import cli
from attribkit.errors import AttribkitError, DataError
from attribkit.evaluation import delta_mtl, evaluate
from attribkit.storage.dataset import load_split
from attribkit.hookspecs import hookimpl
from attribkit.model.heads import ClassificationHead
from attribkit.specs import HeadSpec
from attribkit.testing import registered
from attribkit.training.config import TrainConfig
from attribkit.training.data import load_attribution_data, quantize
from attribkit.training.models import heads_of, predict
from attribkit.training.run import load_run
from attribkit.training.trainer import train

FAST = dict(width=0.125, epochs=2, batch_size=16, input_scale=1)


def recomputed_accuracy(run, data_dir, head):
    """A head's accuracy on the test split, counted here from the run's own predictions."""
    _, members = load_run(run)
    data = load_attribution_data(data_dir, "test")
    outputs = predict(members, quantize(data.images))
    target, _ = heads_of(members)[head].target(data.labels)
    return float((outputs[head].argmax(1) == target).float().mean())


class NormHead(ClassificationHead):
    """A third-party head: L∞ vs L2, derived from the attack label and the attacks' declared norms."""

    def __init__(self, context):
        info = context.labels.attack_info
        norms = sorted({info[a].norm for a in context.labels.attacks})
        super().__init__("norm", norms, context.feature_dims["attack"], "attack")
        self.register_buffer("of_attack", torch.tensor([norms.index(info[a].norm) for a in context.labels.attacks]))

    def target(self, labels):
        return self.of_attack[labels.attack], torch.ones(len(labels), dtype=torch.bool)


class NormPlugin:
    @hookimpl
    def register_heads(self, register):
        register(HeadSpec("norm", "classification", lambda cols: "attack" in cols, NormHead))


@pytest.fixture(scope="module")
def mtaa_run(tiny_data, tmp_path_factory):
    plugins.reset()
    out = tmp_path_factory.mktemp("runs") / "mtaa"
    meta = train(tiny_data, TrainConfig(**FAST), out)
    return out, meta


def test_run_folder_holds_everything_to_reproduce_and_attribute(mtaa_run):
    out, meta = mtaa_run
    assert {p.name for p in out.iterdir()} == {"run.json", "weights.safetensors", "metrics.json", "metrics.csv",
                                               "trust.safetensors"}
    saved = json.loads((out / "run.json").read_text())
    assert saved["config"]["lr"] == 1e-3 and saved["config"]["weight_decay"] == 1e-3 and saved["config"]["batch_size"] == 16
    assert saved["label_spaces"]["attack"] == ["fgsm", "pgd", "cw"] and saved["members"] == ["mtaa"]
    assert set(saved["versions"]) >= {"torch", "timm"} and saved["config"]["seed"] == 0
    epochs = json.loads((out / "metrics.json").read_text())["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    final, data = meta.final_test_metrics, saved["data"]["path"]
    assert final["attack_accuracy"] == pytest.approx(recomputed_accuracy(out, data, "attack"), abs=1e-6)
    assert final["victim_accuracy"] == pytest.approx(recomputed_accuracy(out, data, "victim"), abs=1e-6)
    # each epoch is measured on the validation split; the last one's metrics are the saved model's
    assert {e["split"] for e in epochs} == {"validation"}
    assert {k: epochs[-1][k] for k in ("attack_accuracy", "victim_accuracy", "hp_rmse")} == \
        {k: meta.final_validation_metrics[k] for k in ("attack_accuracy", "victim_accuracy", "hp_rmse")}
    assert (out / "metrics.csv").read_text().splitlines()[0].startswith("epoch,member")
    assert set(meta.loss_sigmas["mtaa"]) == {"attack", "victim", "hyperparameter"}


def test_training_is_reproducible(tiny_data, mtaa_run, tmp_path):
    out, _ = mtaa_run
    train(tiny_data, TrainConfig(**FAST), tmp_path / "again")
    assert (tmp_path / "again" / "weights.safetensors").read_bytes() == (out / "weights.safetensors").read_bytes()


def test_attribute_png_files_and_json_schema(mtaa_run, tiny_data, tmp_path):
    out, _ = mtaa_run
    test = load_split(tiny_data, "test")
    paths = []
    for i in range(3):
        arr = (test["images"][i, 0].numpy() * 255).round().astype(np.uint8)
        paths.append(tmp_path / f"adv{i}.png")
        Image.fromarray(arr, "L").save(paths[-1])
    result = CliRunner().invoke(cli, ["attribute", "--run", str(out), *map(str, paths), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["model"] == "mtaa" and len(report["results"]) == 3
    for row, path in zip(report["results"], paths):
        assert row["input"] == str(path) and row["conversion"] is None
        assert row["attack"] in ("fgsm", "pgd", "cw") and row["victim"] in ("tiny-resnet", "tiny-vgg")
        assert 0 < row["attack_probability"] <= 1 and 0 < row["victim_probability"] <= 1
        (name, hp), = row["hyperparameters"].items()
        assert name == ("kappa" if row["attack"] == "cw" else "eps")
        assert hp["natural"] == pytest.approx(hp["value"] / (255 if name == "eps" else 1))
        assert hp["text"].startswith("ε = " if name == "eps" else "κ = ")
    # the same images as a safetensors batch and as a folder give the same answers
    batch = tmp_path / "batch.safetensors"
    save_file({"images": torch.stack([torch.from_numpy(np.asarray(Image.open(p), np.float32) / 255)[None] for p in paths])},
              str(batch))
    from_batch = attribute(out, [str(batch)])["results"]
    assert [r["attack"] for r in from_batch] == [r["attack"] for r in report["results"]]
    assert len(attribute(out, [str(tmp_path)])["results"]) == 3


def test_attribute_converts_only_what_is_safe(mtaa_run, tmp_path):
    out, _ = mtaa_run
    grey = np.full((28, 28, 3), 77, np.uint8)
    Image.fromarray(grey, "RGB").save(tmp_path / "grey_rgb.png")
    (row,) = attribute(out, [str(tmp_path / "grey_rgb.png")])["results"]
    assert "1 channel" in row["conversion"]
    colour = grey.copy()
    colour[0, 0] = (255, 0, 0)
    Image.fromarray(colour, "RGB").save(tmp_path / "colour.png")
    with pytest.raises(AttribkitError, match="3 colour channels but the model reads 1"):
        attribute(out, [str(tmp_path / "colour.png")])
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(AttribkitError, match="32×32 px but the model reads 28×28; resizing"):
        attribute(out, [str(tmp_path / "big.png")])
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(AttribkitError, match="cannot decode image"):
        attribute(out, [str(tmp_path / "broken.png")])
    save_file({"images": torch.full((1, 1, 28, 28), float("nan"))}, str(tmp_path / "nan.safetensors"))
    with pytest.raises(AttribkitError, match="NaN"):
        attribute(out, [str(tmp_path / "nan.safetensors")])


def test_broken_run_folders_are_clear_errors(mtaa_run, tmp_path):
    out, _ = mtaa_run
    with pytest.raises(AttribkitError, match="not an attribkit run folder"):
        load_run(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    meta = json.loads((out / "run.json").read_text())
    meta["config"]["width"] = 0.25  # weights were trained at 0.125
    (bad / "run.json").write_text(json.dumps(meta))
    (bad / "weights.safetensors").write_bytes((out / "weights.safetensors").read_bytes())
    with pytest.raises(AttribkitError, match="run.json' does not match its recorded content hash"):
        load_run(bad)  # the edit is caught by run.json's own hash ...
    with pytest.raises(AttribkitError, match="do not match the run's config"):
        load_run(bad, verify=False)  # ... and, unchecked, by the weights' shapes
    (bad / "weights.safetensors").unlink()
    with pytest.raises(AttribkitError, match="has no weights.safetensors"):
        load_run(bad, verify=False)
    result = CliRunner().invoke(cli, ["attribute", "--run", str(bad), str(bad)])
    assert result.exit_code == 1 and "Traceback" not in result.output


def test_evaluate_writes_tables_plots_and_delta_mtl(mtaa_run, tiny_data, tmp_path):
    out, _ = mtaa_run
    baseline = tmp_path / "st"
    st = train(tiny_data, TrainConfig(model="single-task", **FAST), baseline)
    assert st.members == ["attack", "hyperparameter", "victim"]
    report = evaluate(out, tiny_data, baseline=baseline, out=tmp_path / "eval")
    assert report["examples"] == len(load_split(tiny_data, "test")["images"])
    assert set(report["tables"]["attack_accuracy"]) == {"fgsm", "pgd", "cw"}
    assert set(report["tables"]["victim_accuracy"]["fgsm"]) == {"tiny-resnet", "tiny-vgg"}
    assert report["baseline"]["model"] == "single-task" and report["parameters_m"] > 0 and report["gflops"] > 0
    assert report["delta_mtl_percent"] == delta_mtl(report, report["baseline"], report["scores"])
    figures = {"confusion_attack", "confusion_victim", "cells_attack", "cells_victim", "cells_hyperparameter",
               "rmse_per_value_hyperparameter", "tsne_features", "perturbations", "training_curves", "reliability"}
    files = {p.name for p in (tmp_path / "eval").iterdir()}
    assert files == {"evaluation.json", "evaluation.md", "report.html"} | {f"{f}.png" for f in figures}
    for name in figures:
        png = (tmp_path / "eval" / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        with Image.open(io.BytesIO(png)) as image:
            assert min(image.size) >= 200  # drawn, not an empty stub
    md = (tmp_path / "eval" / "evaluation.md").read_text()
    assert "| mtaa |" in md and "| single-task |" in md and "per attack × victim" in md
    page = (tmp_path / "eval" / "report.html").read_text()
    # self-contained: every figure inline, nothing fetched from elsewhere
    assert page.count("data:image/png;base64,") == len(figures) and "http" not in page
    for name in figures:
        inline = page.split(f'alt="{name}" src="data:image/png;base64,')[1].split('"')[0]
        assert base64.b64decode(inline) == (tmp_path / "eval" / f"{name}.png").read_bytes()


def test_delta_mtl_follows_eq_15():
    model = {"attack_accuracy": 1.0, "victim_accuracy": 0.99, "hp_rmse": 6.0}
    base = {"attack_accuracy": 1.0, "victim_accuracy": 0.9, "hp_rmse": 8.0}
    described = {"attack_accuracy": {"kind": "accuracy", "signature": True},
                 "victim_accuracy": {"kind": "accuracy", "signature": True},
                 "hp_rmse": {"kind": "rmse", "signature": True}}
    assert delta_mtl(model, base, described) == pytest.approx(100 * (0 + 0.1 + 0.25) / 3, abs=1e-3)


def test_single_label_baseline_decodes_combinations(tiny_data, tmp_path):
    meta = train(tiny_data, TrainConfig(model="single-label", **FAST), tmp_path / "sl")
    assert meta.members == ["single-label"] and list(meta.heads) == ["combination"]
    assert len(meta.heads["combination"].state) == 2 * 3 * 2  # victims × attacks × values
    batch = tmp_path / "x.safetensors"
    save_file({"images": load_split(tiny_data, "test")["images"][:2].contiguous()}, str(batch))
    for row in attribute(tmp_path / "sl", [str(batch)])["results"]:
        assert row["attack"] in ("fgsm", "pgd", "cw") and row["victim"] in ("tiny-resnet", "tiny-vgg")
        (name, hp), = row["hyperparameters"].items()
        assert hp["value"] in ((20.0, 100.0) if name == "eps" else (1.0, 3.0))  # a class, so a grid value
    evaluate(tmp_path / "sl", tiny_data, out=tmp_path / "eval")
    made = {p.name for p in (tmp_path / "eval").glob("*.png")}
    # attack and victim decoded from the combination class get their confusion matrices too
    assert {"confusion_attack.png", "confusion_victim.png", "confusion_combination.png"} <= made


def test_a_head_plugin_is_built_trained_and_reported_without_core_changes(tiny_data, tmp_path):
    with registered(NormPlugin(), "norm-head"):
        meta = train(tiny_data, TrainConfig(**FAST), tmp_path / "run")
        assert set(meta.loss_sigmas["mtaa"]) == {"attack", "victim", "hyperparameter", "norm"}
        assert meta.heads["norm"].plugin == "norm-head"
        assert meta.final_test_metrics["norm_accuracy"] == pytest.approx(
            recomputed_accuracy(tmp_path / "run", tiny_data, "norm"), abs=1e-6)
        (row,) = attribute(tmp_path / "run", [str(_one_png(tiny_data, tmp_path))])["results"]
        assert row["norm"] in ("L2", "Linf") and 0 < row["norm_probability"] <= 1
        evaluate(tmp_path / "run", tiny_data, out=tmp_path / "eval")
        page = (tmp_path / "eval" / "report.html").read_text()
        assert "<h2>Head: norm</h2>" in page and 'alt="confusion_norm"' in page  # its own section
        assert (tmp_path / "eval" / "cells_norm.png").exists()
    assert json.loads((tmp_path / "run" / "run.json").read_text())["heads"]["norm"]["plugin"] == "norm-head"
    with pytest.raises(AttribkitError, match="trained with head 'norm' from plugin 'norm-head', which is not installed"):
        load_run(tmp_path / "run")  # without the plugin the run has a head nobody builds


def test_a_run_keeps_its_heads_when_a_head_plugin_is_installed_later(mtaa_run, tiny_data, tmp_path):
    out, _ = mtaa_run
    with registered(NormPlugin(), "norm-head"):
        _, members = load_run(out)  # trained before the plugin existed: no norm head, weights still load
        assert set(members["mtaa"].net.heads) == {"attack", "victim", "hyperparameter"}
        (row,) = attribute(out, [str(_one_png(tiny_data, tmp_path))])["results"]
        assert "norm" not in row


def _one_png(data, tmp_path):
    img = load_split(data, "test")["images"][0, 0]
    path = tmp_path / "one.png"
    Image.fromarray((img.numpy() * 255).round().astype(np.uint8), "L").save(path)
    return path


def test_data_whose_labels_do_not_match_the_run_is_refused(mtaa_run, tiny_zoo, tmp_path):
    from attribkit.generation.engine import generate
    from attribkit.generation.scenario import parse_scenario

    from conftest import TINY_SCENARIO

    other = parse_scenario({**TINY_SCENARIO, "zoo": str(tiny_zoo), "attacks": TINY_SCENARIO["attacks"][:1],
                            "victims": ["tiny-resnet"]})
    generate(other, tmp_path / "other")
    with pytest.raises(AttribkitError, match="attack labels .* do not match"):
        evaluate(mtaa_run[0], tmp_path / "other")


def test_train_refuses_a_used_out_folder(tiny_data, mtaa_run):
    with pytest.raises(AttribkitError, match="not empty"):
        train(tiny_data, TrainConfig(**FAST), mtaa_run[0])


def test_train_on_a_missing_data_set(tmp_path):
    with pytest.raises(DataError, match="not an attribkit data set"):
        train(tmp_path, TrainConfig(**FAST), tmp_path / "run")


def test_cli_train_evaluate_and_bad_config(tiny_data, tiny_zoo, tmp_path):
    runner = CliRunner()
    run = tmp_path / "cli-run"
    result = runner.invoke(cli, ["train", "--data", str(tiny_data), "--out", str(run), "--width", "0.125",
                                 "--epochs", "1", "--batch-size", "16", "--input-scale", "1", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["model"] == "mtaa"
    assert summary["test"]["attack_accuracy"] == pytest.approx(recomputed_accuracy(run, tiny_data, "attack"), abs=1e-6)
    result = runner.invoke(cli, ["evaluate", "--run", str(run), "--data", str(tiny_data), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["examples"] > 0 and (run / "evaluation" / "evaluation.md").exists()
    assert report["attack_accuracy"] == summary["test"]["attack_accuracy"]  # same model, same test split
    listed = runner.invoke(cli, ["victims", "list", "--zoo", str(tiny_zoo), "--json"])
    assert [v["name"] for v in json.loads(listed.stdout)] == ["tiny-resnet", "tiny-vgg"]
    for argv, message in ((["--width", "0"], "width must be in (0, 4]"),
                          (["--backbone", "vit"], "unknown backbone 'vit'")):
        bad = runner.invoke(cli, ["train", "--data", str(tiny_data), "--out", str(tmp_path / "x"), *argv])
        assert bad.exit_code == 1 and bad.stderr.startswith("error:") and message in bad.stderr
        assert "Traceback" not in bad.output


def test_hp_rmse_is_in_eps_times_255_for_linf_attacks_and_in_kappa_for_cw(mtaa_run, tiny_data, tmp_path):
    out, _ = mtaa_run
    report = evaluate(out, tiny_data, out=tmp_path / "eval")
    meta, members = load_run(out)
    stats, info, attacks = meta.target_stats, meta.label_spaces.attack_info, list(meta.label_spaces.attacks)
    assert 20 <= stats["eps"]["mean"] <= 100 and 1 <= stats["kappa"]["mean"] <= 3  # the grids' display units
    data = load_split(tiny_data, "test")
    truth = torch.where(data["attack"] == attacks.index("cw"), data["hp_kappa"], data["hp_eps"])
    assert set(truth.tolist()) <= {20.0, 100.0, 1.0, 3.0}
    outputs = predict(members, quantize(data["images"]))
    pairs = [(a, h) for a in attacks for h in info[a].hyperparameters]
    predicted_attack = outputs["attack"].argmax(1)  # its regressor answers, in the units it was trained in
    value = torch.stack([outputs["hyperparameter"][i, pairs.index((attacks[a], info[attacks[a]].hyperparameters[0]))]
                         for i, a in enumerate(predicted_attack.tolist())])
    hp = [info[attacks[a]].hyperparameters[0] for a in predicted_attack.tolist()]
    value = value * torch.tensor([stats[h]["std"] for h in hp]) + torch.tensor([stats[h]["mean"] for h in hp])
    for i, attack in enumerate(attacks):
        rows = data["attack"] == i
        expected = ((value[rows] - truth[rows]) ** 2).mean().sqrt().item() if rows.any() else None
        assert report["hp_rmse_per_attack"][attack] == pytest.approx(expected, abs=1e-3), attack
    assert report["hp_rmse"] == pytest.approx(((value - truth) ** 2).mean().sqrt().item(), abs=1e-3)


def test_attribute_reads_a_jpeg_as_the_pixels_it_decodes_to(mtaa_run, tiny_data, tmp_path):
    out, _ = mtaa_run
    pixels = (load_split(tiny_data, "test")["images"][0, 0].numpy() * 255).round().astype(np.uint8)
    Image.fromarray(pixels, "L").save(tmp_path / "adv.jpg", quality=90)
    with Image.open(tmp_path / "adv.jpg") as im:
        decoded = np.asarray(im)
    assert not np.array_equal(decoded, pixels)  # JPEG is lossy: the model sees an altered perturbation
    (from_jpeg,) = attribute(out, [str(tmp_path / "adv.jpg")])["results"]
    save_file({"images": torch.from_numpy(decoded.astype(np.float32) / 255)[None, None]},
              str(tmp_path / "decoded.safetensors"))
    (from_pixels,) = attribute(out, [str(tmp_path / "decoded.safetensors")])["results"]
    assert from_jpeg["conversion"] is None  # read as it is, with no conversion to report
    assert from_jpeg == {**from_pixels, "input": from_jpeg["input"]}
    (in_folder,) = attribute(out, [str(tmp_path)])["results"]
    assert in_folder["input"] == str(tmp_path / "adv.jpg")
