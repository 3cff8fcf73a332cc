"""Trust outside the closed world: unknown-attack scores, temperatures and verdicts, stored with the run
and reported by attribute and evaluate."""

import json
import shutil

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from attribkit import plugins
from attribkit.attribution import SCHEMA, attribute
from attribkit.cli import cli
from attribkit.errors import AttribkitError
from attribkit.evaluation import evaluate
from attribkit.records import Labels
from attribkit.storage import sha256_file
from attribkit.training.config import TrainConfig
from attribkit.training.run import load_trust, read_run_meta
from attribkit.training.trainer import train
from attribkit.trust.fitted import Trust, fit_trust, verdict
from attribkit.trust.unknown import METHODS, fit_scorer, unknown_scores


def _clusters(seed=0, n=200, d=6):
    """Two tight Gaussian classes in d dimensions, and points far from both."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[4.0] + [0.0] * (d - 1), [-4.0] + [0.0] * (d - 1)])
    classes = torch.arange(n) % 2
    known = centres[classes] + 0.5 * torch.randn(n, d, generator=g)
    far = torch.zeros(20, d)
    far[:, 1] = 6 + torch.randn(20, generator=g)  # off the axis the classes lie on
    return known, classes, far


@pytest.mark.parametrize("method", ["mahalanobis", "knn"])
def test_feature_scores_rank_far_points_above_every_known_one(method):
    known, classes, far = _clusters()
    state = fit_scorer(method, known, classes)
    logits = torch.zeros(len(known), 2)
    inside = unknown_scores(method, state, known, logits)
    outside = unknown_scores(method, state, far, torch.zeros(len(far), 2))
    assert outside.min() > inside.max()
    # one image's score does not depend on the others answered with it
    assert torch.allclose(unknown_scores(method, state, known[:7], logits[:7]), inside[:7])


def test_mahalanobis_is_the_squared_distance_to_the_nearest_class_mean():
    known, classes, _ = _clusters(d=3)
    state = fit_scorer("mahalanobis", known, classes)
    x = torch.tensor([[4.0, 0.3, -0.2]])
    precision = state["precision"]
    expected = min(float((x.double() - m) @ precision @ (x.double() - m).T) for m in state["means"])
    assert unknown_scores("mahalanobis", state, x, torch.zeros(1, 2)).item() == pytest.approx(expected, rel=1e-5)


def test_logit_scores_follow_the_confidence():
    logits = torch.tensor([[9.0, 0.0], [0.2, 0.0]])
    for method in ("msp", "energy"):
        sure, unsure = unknown_scores(method, {}, torch.zeros(2, 1), logits).tolist()
        assert sure < unsure, method


class _Head(torch.nn.Module):
    task = "classification"

    def __init__(self, name, classes):
        super().__init__()
        self.name, self.classes = name, classes

    def target(self, labels):
        y = labels.attack
        return y, torch.ones_like(y, dtype=torch.bool)


def _labels(attack):
    n = len(attack)
    return Labels(attack, torch.zeros(n, dtype=torch.long), torch.zeros(n, 0), torch.full((n,), -1))


def test_fit_trust_rejects_the_asked_share_of_validation_and_calibrates(tiny_data):
    from attribkit.records import LabelSpaces

    spaces = read_run_meta_spaces(tiny_data)
    known, classes, _ = _clusters(n=400)
    train_part, valid_part = slice(0, 200), slice(200, 400)
    logits = torch.nn.functional.one_hot(classes, len(spaces.attacks)).float() * 20  # overconfident, always right
    logits[200:210] = logits[200:210].flip(1)  # …but wrong on ten validation images
    heads = {"attack": _Head("attack", list(spaces.attacks))}
    trust = fit_trust(heads, spaces, ({"attack": logits[train_part]}, known[train_part], _labels(classes[train_part])),
                      ({"attack": logits[valid_part]}, known[valid_part], _labels(classes[valid_part])),
                      false_rejection=0.1)
    assert isinstance(spaces, LabelSpaces) and trust.attack_head == "attack"
    scores = trust.scores(trust.calibrated({"attack": logits[valid_part]}), known[valid_part])
    assert float((scores > trust.threshold).double().mean()) <= 0.1
    assert trust.fitted["validation_rejected"] <= 0.1
    assert trust.temperatures["attack"] > 1  # 5 % wrong at logit gap 20: softened
    # a temperature changes probabilities, never the predicted class
    calibrated = trust.calibrated({"attack": logits})["attack"]
    assert torch.equal(calibrated.argmax(1), logits.argmax(1))


def read_run_meta_spaces(data_dir):
    from attribkit.storage.dataset import read_manifest

    return read_manifest(data_dir).label_spaces


def test_verdicts():
    assert verdict({"attack": "pgd"}, 3.0, 2.0) == "unknown"
    assert verdict({"attack": "clean"}, 3.0, 2.0) == "unknown"  # unlike anything known, clean included
    assert verdict({"attack": "clean"}, 1.0, 2.0) == "clean"
    assert verdict({"attack": "pgd"}, 2.0, 2.0) == "attributed"  # at the threshold: accepted
    assert verdict({"attack": "pgd"}, None, None) == "attributed"  # a run without a threshold
    assert verdict({"attack": "pgd"}, float("nan"), 2.0) == "unknown"  # a score that says nothing: fail closed


def test_train_says_what_it_fitted_and_warns_when_it_is_rough(tiny_data, tmp_path):
    plugins.reset()
    result = CliRunner().invoke(cli, ["train", "--data", str(tiny_data), "--out", str(tmp_path / "run"), "--width",
                                      "0.125", "--epochs", "1", "--batch-size", "16", "--input-scale", "1", "--json"])
    assert result.exit_code == 0, result.output
    trust = json.loads(result.stdout)["trust"]
    assert trust == read_run_meta(tmp_path / "run").trust and trust["unknown"]["method"] == "mahalanobis"
    examples = trust["fitted"]["temperatures_and_threshold"]["examples"]
    assert examples < 100 and f"fitted on {examples} validation images" in result.stderr  # the tiny data set


def test_a_run_with_a_validation_split_stores_its_trust(tiny_run):
    meta = read_run_meta(tiny_run)
    trust = load_trust(tiny_run, meta)
    assert isinstance(trust, Trust) and trust.method == "mahalanobis" and trust.false_rejection == 0.05
    assert set(trust.temperatures) >= {"attack", "victim"} and all(t > 0 for t in trust.temperatures.values())
    assert set(trust.state) == {"means", "precision"}
    assert meta.files["trust.safetensors"]["sha256"] == sha256_file(tiny_run / "trust.safetensors")
    assert trust.fitted["temperatures_and_threshold"]["split"] == "validation"
    assert trust.fitted["scorer"]["examples"] == meta.data["train"]


def test_a_damaged_trust_file_is_refused(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    raw = bytearray((run / "trust.safetensors").read_bytes())
    raw[-1] ^= 1
    (run / "trust.safetensors").write_bytes(bytes(raw))
    result = CliRunner().invoke(cli, ["attribute", "--run", str(run), str(_batch(tmp_path))])
    assert result.exit_code == 1 and "trust.safetensors" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("edit, words", [
    (lambda t: t["unknown"].update(threshold=float("nan")), "unknown.threshold must be a finite number"),
    (lambda t: t["unknown"].update(threshold=True), "unknown.threshold must be a finite number"),
    (lambda t: t["unknown"].update(threshold="2.5"), "unknown.threshold must be a finite number"),
    (lambda t: t["unknown"].update(false_rejection=7), "unknown.false_rejection must be within"),
    (lambda t: t["temperatures"].update(attack=float("inf")), "temperature 'attack' must be a finite number"),
    (lambda t: t["temperatures"].update(attack=1e-300), "temperature 'attack' must be within"),
    (lambda t: t["unknown"].update(attack_head="nosuch"), "'nosuch' is not one of the run's calibrated heads"),
    (lambda t: t.update(temperatures={}), "is not one of the run's calibrated heads (none)"),
    (lambda t: t["unknown"].update(method="bogus"), "unknown.method must be one of"),
    (lambda t: t["unknown"].update(method=["mahalanobis"]), "unknown.method must be one of"),
    (lambda t: t["unknown"].update(attack_head={"a": 1}), "is not one of the run's calibrated heads"),
    (lambda t: t.update(fitted=3), "fitted must be a table"),
    (lambda t: t.update(unknown=[]), "lacks its \"unknown\" or \"temperatures\" table"),
])
def test_a_trust_record_no_fit_could_give_is_refused(tiny_run, edit, words):
    """Each of these would silently turn every verdict one way (a NaN threshold accepts everything)."""
    meta = read_run_meta(tiny_run)
    trust = load_trust(tiny_run, meta)
    record = json.loads(json.dumps(meta.trust))
    edit(record)
    with pytest.raises(AttribkitError, match=words.replace("(", r"\(").replace(")", r"\)")):
        Trust.from_json(record, trust.state, "run.json")


def test_scorer_tensors_with_nan_are_refused(tiny_run):
    meta = read_run_meta(tiny_run)
    trust = load_trust(tiny_run)  # the meta is read when not given
    assert trust.threshold == load_trust(tiny_run, meta).threshold
    state = {**trust.state, "means": trust.state["means"].clone()}
    state["means"][0, 0] = float("nan")
    with pytest.raises(AttribkitError, match="NaN or infinite"):
        Trust.from_json(meta.trust, state, "run.json")


def test_a_run_json_stripped_of_its_own_hash_is_noticed(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    record = json.loads((run / "run.json").read_text())
    record["trust"]["unknown"]["threshold"] = 1e9  # accept everything: the edit an attacker would make
    del record["content_sha256"]
    (run / "run.json").write_text(json.dumps(record))
    result = CliRunner().invoke(cli, ["attribute", "--run", str(run), str(_batch(tmp_path)), "--json"])
    assert result.exit_code == 0 and "no content hash of its own" in result.stderr


def test_json_output_has_no_bare_nan():
    from attribkit.cli import _strict_json

    text = _strict_json({"a": float("nan"), "b": [float("inf"), 1.5], "c": {"d": -float("inf")}, "e": "nan"})
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c}")) == \
        {"a": None, "b": [None, 1.5], "c": {"d": None}, "e": "nan"}


def _batch(tmp_path, n=4, seed=0):
    path = tmp_path / "batch.safetensors"
    save_file({"images": torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))}, str(path))
    return path


def test_attribute_reports_verdicts_scores_and_who_answered(tiny_run, tmp_path, monkeypatch):
    batch = _batch(tmp_path)
    report = attribute(tiny_run, [str(batch)])
    assert report["schema"] == SCHEMA and report["run_sha256"] == sha256_file(tiny_run / "run.json")
    assert report["attribkit"] and report["calibrated"] is True
    threshold = load_trust(tiny_run, read_run_meta(tiny_run)).threshold
    for row in report["results"]:
        assert row["unknown_threshold"] == threshold
        assert row["verdict"] == ("unknown" if row["unknown_score"] > threshold else "attributed")
    # the verdict follows the threshold: at -inf every image is unknown, at +inf none
    import attribkit.attribution as attribution

    for value, expected in ((float("-inf"), {"unknown"}), (float("inf"), {"attributed"})):
        def moved(run, meta, verify=True, _load=load_trust, _value=value):
            trust = _load(run, meta, verify)
            trust.threshold = _value
            return trust
        monkeypatch.setattr(attribution, "load_trust", moved)
        assert {r["verdict"] for r in attribute(tiny_run, [str(batch)])["results"]} == expected


def test_jsonl_lines_name_the_schema_and_the_run(tiny_run, tmp_path):
    result = CliRunner().invoke(cli, ["attribute", "--run", str(tiny_run), str(_batch(tmp_path)), "--jsonl"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 4
    assert {line["schema"] for line in lines} == {SCHEMA}
    assert {line["run_sha256"] for line in lines} == {sha256_file(tiny_run / "run.json")}
    assert all(line["verdict"] in ("attributed", "unknown") for line in lines)


@pytest.fixture(scope="module")
def run_without_validation(tiny_data, tmp_path_factory):
    plugins.reset()
    out = tmp_path_factory.mktemp("noval") / "run"
    train(tiny_data, TrainConfig(width=0.125, epochs=1, batch_size=16, input_scale=1, validation=0), out)
    return out


def test_a_run_without_validation_has_no_trust_and_says_so(run_without_validation, tmp_path):
    meta = read_run_meta(run_without_validation)
    assert meta.trust is None and load_trust(run_without_validation, meta) is None
    assert not (run_without_validation / "trust.safetensors").exists()
    report = attribute(run_without_validation, [str(_batch(tmp_path))])
    assert report["calibrated"] is False
    assert all(r["verdict"] == "attributed" and r["unknown_score"] is None for r in report["results"])


def test_evaluate_reports_calibration_unknowns_and_saved_formats(tiny_run, tiny_data, tmp_path):
    report = evaluate(tiny_run, tiny_data, out=tmp_path / "ev", unknown=[tiny_data], saved_as=["png", "jpeg50"])
    trust = report["trust"]
    assert trust["calibrated"] is True
    for head in ("attack", "victim"):
        c = trust["calibration"][head]
        assert 0 <= c["ece"] <= 1 and 0 <= c["ece_uncalibrated"] <= 1 and c["temperature"] > 0
    known = trust["evaluated_split"]
    assert sum(known["verdicts"].values()) == report["examples"]
    # the data set scored as its own "unknown": every test image is in it, so the counts agree
    outside = trust["unknown"][0]
    assert outside["examples"] == report["examples"] and outside["verdicts"] == known["verdicts"]
    # every attack of it is one the run knows: nothing is outside, so no overall AUROC
    assert outside["outside_examples"] == 0 and outside["auroc"] is None
    assert set(outside["per_attack"]) == {"fgsm", "pgd", "cw"}
    for name, group in outside["per_attack"].items():
        assert sum(group["called"].values()) == group["examples"] and group["attack_accuracy"] is not None
    for victim, group in outside["per_victim"].items():  # the same victims: their families are the run's
        assert group["family"] == victim.removeprefix("tiny-").replace("resnet", "resnet18").replace("vgg", "vgg16")
        assert group["victim_family_accuracy"] is not None
    assert list(trust["saved_as"]) == ["png", "jpeg50"]
    assert trust["saved_as"]["png"]["attack_accuracy"] == report["attack_accuracy"]  # the run quantizes: png = as scored
    assert trust["saved_as"]["png"]["rejected"] == known["rejected"]  # so are its verdicts
    assert 0 <= trust["saved_as"]["jpeg50"]["rejected"] <= 1
    assert "adversarial_called_clean" not in trust["saved_as"]["png"]  # the run has no clean class
    md = (tmp_path / "ev" / "evaluation.md").read_text()
    assert "## Trust" in md and "Saved as" in md and "Outside the run" in md
    assert "Every attack here is one the run knows" in md  # tiny_data scored as its own "unknown"
    assert "reliability.png" in {p.split("/")[-1] for p in report["plots"]}
    assert "unknown_scores.png" in {p.split("/")[-1] for p in report["plots"]}
    page = (tmp_path / "ev" / "report.html").read_text()
    assert "<h2>Trust</h2>" in page and "<th>ECE (%)</th>" in page and "Outside the run" in page


def test_evaluate_cli_takes_unknown_data_sets_and_formats(tiny_run, tiny_data, tmp_path):
    result = CliRunner().invoke(cli, ["evaluate", "--run", str(tiny_run), "--data", str(tiny_data), "--out",
                                      str(tmp_path / "ev"), "--unknown", str(tiny_data), "--saved-as", "png, jpeg75",
                                      "--json"])
    assert result.exit_code == 0, result.output
    trust = json.loads(result.stdout)["trust"]
    assert list(trust["saved_as"]) == ["png", "jpeg75"] and trust["unknown"][0]["data"] == str(tiny_data)
    none = CliRunner().invoke(cli, ["evaluate", "--run", str(tiny_run), "--data", str(tiny_data), "--out",
                                    str(tmp_path / "ev2"), "--saved-as", "none", "--json"])
    assert none.exit_code == 0 and "saved_as" not in json.loads(none.stdout)["trust"]


@pytest.mark.parametrize("formats, words", [("none,png", "'none' stands alone"),
                                            ("png,,jpeg75", "has an empty entry")])
def test_saved_as_lists_with_a_slip_are_refused(tiny_run, tiny_data, tmp_path, formats, words):
    result = CliRunner().invoke(cli, ["evaluate", "--run", str(tiny_run), "--data", str(tiny_data), "--out",
                                      str(tmp_path / "ev"), "--saved-as", formats])
    assert result.exit_code == 2 and words in result.output and not (tmp_path / "ev").exists()


def test_evaluate_api_takes_lists_not_lone_strings(tiny_run, tiny_data, tmp_path):
    with pytest.raises(AttribkitError, match=r"saved_as must be a list of formats.*\['png'\]"):
        evaluate(tiny_run, tiny_data, out=tmp_path / "ev", saved_as="png")
    with pytest.raises(AttribkitError, match="unknown must be a list of data set folders"):
        evaluate(tiny_run, tiny_data, out=tmp_path / "ev", unknown=str(tiny_data))
    report = evaluate(tiny_run, tiny_data, out=tmp_path / "ev", unknown=None, saved_as=None)  # None: none
    assert "unknown" not in report["trust"] and "saved_as" not in report["trust"]


def test_evaluate_will_not_write_into_a_run_or_a_data_set(tiny_run, tiny_data, tmp_path):
    before = {p.name: p.stat().st_mtime_ns for p in tiny_data.rglob("*")}
    for out, words in ((tiny_data, "a run or data set folder"), (tiny_data / "shards", "inside a data set"),
                       (tiny_run, "a run or data set folder")):
        result = CliRunner().invoke(cli, ["evaluate", "--run", str(tiny_run), "--data", str(tiny_data), "--out",
                                          str(out), "--saved-as", "none"])
        assert result.exit_code == 1 and words in result.output and "Traceback" not in result.output
    assert {p.name: p.stat().st_mtime_ns for p in tiny_data.rglob("*")} == before


def test_evaluate_refuses_an_unknown_format_in_one_line(tiny_run, tiny_data, tmp_path):
    result = CliRunner().invoke(cli, ["evaluate", "--run", str(tiny_run), "--data", str(tiny_data),
                                      "--out", str(tmp_path / "ev"), "--saved-as", "png,gif"])
    assert result.exit_code == 1 and "gif" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "ev").exists()


def test_jpeg_augmentation_is_recorded_reproducible_and_changes_the_model(tiny_data, tmp_path):
    from safetensors.torch import load_file

    plugins.reset()
    config = TrainConfig(width=0.125, epochs=1, batch_size=16, input_scale=1, validation=0, heads=("attack",))
    runs = {}
    for name, jpeg in (("plain", 0.0), ("jpeg", 0.5), ("jpeg-again", 0.5)):
        train(tiny_data, TrainConfig(**{**config.to_dict(), "heads": ("attack",), "jpeg": jpeg}), tmp_path / name)
        runs[name] = load_file(str(tmp_path / name / "weights.safetensors"))
    assert json.loads((tmp_path / "jpeg" / "run.json").read_text())["config"]["jpeg"] == 0.5
    assert all(torch.equal(runs["jpeg"][k], runs["jpeg-again"][k]) for k in runs["jpeg"])
    assert not all(torch.equal(runs["jpeg"][k], runs["plain"][k]) for k in runs["jpeg"])


def test_trust_options_are_checked():
    with pytest.raises(AttribkitError, match="unknown_score must be one of"):
        TrainConfig(unknown_score="vibes")
    for share in (0.0, 1.0):  # none rejected, or all: no threshold to choose
        with pytest.raises(AttribkitError, match="false_rejection must be a share in"):
            TrainConfig(false_rejection=share)
    refused = CliRunner().invoke(cli, ["train", "--data", "d", "--out", "o", "--false-rejection", "0"])
    assert refused.exit_code == 2 and "0<x<1" in refused.output
    with pytest.raises(AttribkitError, match="jpeg must be a share"):
        TrainConfig(jpeg=1.5)
    assert set(METHODS) == {"mahalanobis", "knn", "msp", "energy"}


def test_narrowing_to_some_attacks_relabels_as_a_data_set_of_them(tiny_data):
    from attribkit.training.data import load_attribution_data, narrow_attacks

    data = load_attribution_data(tiny_data, "test")
    only = narrow_attacks(data, ["cw", "fgsm"])  # the data set's order is kept, not the order asked
    assert only.label_spaces.attacks == ("fgsm", "cw") and only.label_spaces.victims == data.label_spaces.victims
    assert only.label_spaces.hp_names == ["eps", "kappa"]
    assert len(only) == int((data.labels.attack != 1).sum())
    assert only.labels.attack.tolist() == [0 if a == 0 else 1 for a in data.labels.attack.tolist() if a != 1]
    linf = narrow_attacks(data, ["fgsm", "pgd"])  # κ goes with C&W
    assert linf.label_spaces.hp_names == ["eps"] and linf.labels.hp.shape == (len(linf), 1)
    assert linf.label_spaces.hyperparameters["eps"].attacks == ("fgsm", "pgd")
    assert torch.equal(linf.labels.hp[:, 0], data.labels.hp[data.labels.attack != 2, 0])
    assert narrow_attacks(data, ["fgsm", "pgd", "cw"]) is data
    with pytest.raises(AttribkitError, match="attack 'deepfool' is not in the data set"):
        narrow_attacks(data, ["deepfool"])
    with pytest.raises(AttribkitError, match="at least two classes"):  # an attack head with nothing to choose
        narrow_attacks(data, ["fgsm"])


def test_a_run_of_some_attacks_scores_the_others_as_unknown(tiny_data, tmp_path):
    plugins.reset()
    run = tmp_path / "run"
    meta = train(tiny_data, TrainConfig(width=0.125, epochs=1, batch_size=16, input_scale=1, attacks=("fgsm", "pgd")),
                 run)
    assert meta.label_spaces.attacks == ("fgsm", "pgd") and meta.label_spaces.hp_names == ["eps"]
    report = evaluate(run, tiny_data, out=tmp_path / "ev", unknown=[tiny_data], saved_as=[])
    assert set(report["tables"]["attack_accuracy"]) == {"fgsm", "pgd"}  # scored on its own attacks only
    outside = report["trust"]["unknown"][0]
    held = outside["per_attack"]["cw"]
    assert "attack_accuracy" not in held and 0 <= held["auroc"] <= 1
    assert outside["outside_examples"] == held["examples"] and outside["auroc"] == held["auroc"]
    assert set(held["called"]) <= {"fgsm", "pgd"} and sum(held["called"].values()) == held["examples"]
    assert report["trust"]["unknown"][0]["per_attack"]["fgsm"]["attack_accuracy"] is not None


def test_a_trust_file_of_another_model_is_one_clear_error(tiny_run, tmp_path):
    from attribkit import storage

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    for tensors, words in (({"means": torch.zeros(2, 3), "precision": torch.eye(3)}, "fitted on 3 features"),
                           ({"means": torch.zeros(2, 3)}, "lacks its 'precision' tensor")):
        storage.save_tensors(run / "trust.safetensors", tensors)
        result = CliRunner().invoke(cli, ["attribute", "--run", str(run), str(_batch(tmp_path)), "--no-verify"])
        assert result.exit_code == 1 and words in result.output and "Traceback" not in result.output


def test_a_run_without_a_classification_head_is_saved_without_trust(tiny_data, tmp_path):
    plugins.reset()
    with pytest.warns(Warning, match="no classification head"):
        meta = train(tiny_data, TrainConfig(width=0.125, epochs=1, batch_size=16, input_scale=1,
                                            heads=("hyperparameter",)), tmp_path / "run")
    assert meta.trust is None and (tmp_path / "run" / "weights.safetensors").exists()
    assert not (tmp_path / "run" / "trust.safetensors").exists()


def test_a_victim_only_run_reports_no_attack_numbers(tiny_data, tmp_path):
    plugins.reset()
    run = tmp_path / "run"
    train(tiny_data, TrainConfig(width=0.125, epochs=1, batch_size=16, input_scale=1, heads=("victim",)), run)
    report = evaluate(run, tiny_data, out=tmp_path / "ev", unknown=[tiny_data], saved_as=[])
    outside = report["trust"]["unknown"][0]
    assert all("attack_accuracy" not in g for g in outside["per_attack"].values())  # not 0 %: never answered
    assert all(g["victim_family_accuracy"] is not None for g in outside["per_victim"].values())


def test_unknown_data_of_another_image_shape_is_refused_in_one_line(tiny_run, tiny_data, tmp_path, monkeypatch):
    import attribkit.trust.report as trust_report
    from attribkit.training.data import AttributionData

    real = trust_report.load_attribution_data

    def colour(path, split, verify=True, stream=False):
        d = real(path, split, verify, stream)
        return AttributionData(d.images.expand(-1, 3, -1, -1), d.clean, d.labels, d.label_spaces, d.fingerprint,
                               d.clean_index)
    monkeypatch.setattr(trust_report, "load_attribution_data", colour)
    with pytest.raises(AttribkitError, match=r"holds 3×28×28 images, but the run reads 1×28×28"):
        evaluate(tiny_run, tiny_data, out=tmp_path / "ev", unknown=[tiny_data], saved_as=[])
    assert not (tmp_path / "ev").exists()


def test_a_clean_answer_is_a_clean_verdict_only_for_a_run_with_the_clean_class():
    assert verdict({"attack": "clean"}, 1.0, 2.0, clean_class=False) == "attributed"
    assert verdict({"attack": "clean"}, 1.0, 2.0, clean_class=True) == "clean"
