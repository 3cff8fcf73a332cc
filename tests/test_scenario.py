from importlib import resources
from pathlib import Path

import pytest

from attribkit.errors import AttribkitError, ScenarioError
from attribkit.generation.scenario import Scenario, builtin_scenarios, load_scenario, parse_scenario


def base(**overrides):
    data = {
        "dataset": "mnist5k", "victims": ["a"], "cells": {"train": 4, "test": 2},
        "attacks": [{"name": "fgsm", "grid": {"eps": [10, 20]}}],
    }
    data.update(overrides)
    return data


def test_paper_scenario_is_table_1():
    sc = load_scenario("paper-mnist")
    assert [v.name for v in sc.victims] == ["inception_v3", "resnet18", "resnet50", "vgg16", "vgg19"]
    plans = {a.name: a for a in sc.attacks}
    assert plans["fgsm"].grid["eps"] == tuple(float(v) for v in range(10, 201, 10))
    assert plans["pgd"].settings == {"alpha": pytest.approx(10 / 255), "steps": 100, "random_start": True}
    assert plans["cw"].grid["kappa"] == tuple(float(v) for v in range(5, 101, 5))
    assert plans["cw"].settings["c"] == 50.0 and plans["cw"].settings["steps"] == 500
    assert sum(len(p.points()) for p in sc.attacks) * len(sc.victims) == 300
    assert (sc.train_per_cell, sc.test_per_cell) == (160, 20)


def test_builtin_scenarios_come_from_the_package_wherever_one_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # away from the checkout and its scenarios/ link
    assert set(builtin_scenarios()) == {"quick", "quick-unknown", "paper-mnist"}
    assert builtin_scenarios()["quick"].parent == Path(str(resources.files("attribkit") / "scenarios"))
    quick = load_scenario("quick")
    assert [v.name for v in quick.victims] == ["resnet18", "vgg16", "inception_v3"]
    assert {a.name: a.grid for a in quick.attacks} == {"fgsm": {"eps": (40.0, 80.0, 120.0, 160.0, 200.0)},
                                                       "pgd": {"eps": (40.0, 80.0, 120.0, 160.0, 200.0)},
                                                       "cw": {"kappa": (2.0, 4.0, 6.0, 8.0, 10.0)}}
    assert {a.name: a.settings["steps"] for a in quick.attacks if "steps" in a.settings} == {"pgd": 20, "cw": 60}
    assert (quick.train_per_cell, quick.test_per_cell, quick.batch_size, quick.max_attempts_factor) == (72, 18, 32, 3)
    with pytest.raises(ScenarioError, match="neither a file nor a built-in"):
        load_scenario("scenarios/quick.toml")  # a path is only ever a path
    (tmp_path / "mine.toml").write_text(builtin_scenarios()["quick"].read_text().replace("seed = 0", "seed = 5"))
    assert load_scenario("mine.toml").seed == 5 and load_scenario("mine.toml").name == "quick"


def test_grid_forms_and_defaults():
    sc = parse_scenario(base(attacks=[{"name": "pgd", "grid": {"eps": {"start": 10, "stop": 30, "step": 10}}},
                                      {"name": "cw"}]))
    assert sc.attacks[0].grid == {"eps": (10.0, 20.0, 30.0)}
    assert len(sc.attacks[1].grid["kappa"]) == 20  # the attack's declared default grid
    assert sc.attacks[1].points()[0] == {"kappa": 5.0}


def test_fingerprint_ignores_where_the_zoo_is_but_not_what_is_generated():
    assert parse_scenario(base(zoo="x")).fingerprint() == parse_scenario(base(zoo="y")).fingerprint()
    assert parse_scenario(base(seed=1)).fingerprint() != parse_scenario(base(seed=2)).fingerprint()


def test_builtin_scenarios_keep_their_fingerprints():
    # a data set resumes only under the fingerprint it was started with: new keys must leave these alone
    # quick changed on purpose once, when it gained its clean class ([clean]; it was 3accd7c55a467ca9)
    assert load_scenario("quick").fingerprint() == "9ac767d9b64f9b68"
    assert load_scenario("paper-mnist").fingerprint() == "4be0fa3bf8ff41e0"
    without_clean = {**load_scenario("quick").to_dict(), "clean": None}
    assert Scenario(**{**without_clean, "victims": load_scenario("quick").victims,
                       "attacks": load_scenario("quick").attacks}).fingerprint() == "3accd7c55a467ca9"


EXTERNAL = {"name": "mine", "timm": "resnet50", "checkpoint": "mine.safetensors"}


def test_a_named_normalization_is_its_mean_and_std():
    named = parse_scenario(base(victims=[{**EXTERNAL, "normalization": "imagenet"}]))
    typed = parse_scenario(base(victims=[{**EXTERNAL, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}]))
    assert named.victims == typed.victims and named.fingerprint() == typed.fingerprint()
    assert named.victims[0].mean == (0.485, 0.456, 0.406) and named.victims[0].std == (0.229, 0.224, 0.225)
    inception = parse_scenario(base(victims=[{**EXTERNAL, "normalization": "inception"}])).victims[0]
    assert inception.mean == inception.std == (0.5, 0.5, 0.5)
    assert named.fingerprint() != parse_scenario(base(victims=[EXTERNAL])).fingerprint()


@pytest.mark.parametrize("victim, message", [
    ({**EXTERNAL, "normalization": "cifar"}, r"victims\[0\].normalization: unknown 'cifar' \(known: imagenet, inception; "
                                             r"or give mean and std\)"),
    ({**EXTERNAL, "normalization": 1}, r"victims\[0\].normalization: expected str"),
    ({**EXTERNAL, "normalization": "imagenet", "std": [0.2]}, "either normalization or mean and std, not both"),
    ({"name": "zoo-victim", "normalization": "imagenet"}, "only an external victim"),
])
def test_bad_normalizations_are_refused(victim, message):
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(base(victims=[victim]))


@pytest.mark.parametrize("overrides, message", [
    ({"colour": 1}, "unknown key 'colour'"),
    ({"cells": {"train": 4}}, r"cells.test: expected int, got NoneType"),
    ({"cells": {"train": "4", "test": 2}}, r"cells.train: expected int, got str"),
    ({"attacks": [{"name": "fgsm", "grid": {"eps": []}}]}, "empty grid"),
    ({"attacks": [{"name": "fgsm", "grid": {"eps": {"start": 50, "stop": 10, "step": 10}}}]}, "inverted grid"),
    ({"attacks": [{"name": "fgsm", "grid": {"eps": {"start": 10, "stop": 50, "step": 0}}}]}, "step must be positive"),
    ({"attacks": [{"name": "fgsm", "grid": {"eps": [10, "x"]}}]}, "expected int or float, got str"),
    ({"attacks": [{"name": "fgsm", "grid": {"eps": [10, 300]}}]}, "outside"),
    ({"attacks": [{"name": "fgsm", "grid": {"kappa": [1]}}]}, "fgsm has no hyperparameter 'kappa'"),
    ({"attacks": [{"name": "pgd", "settings": {"stepz": 3}}]}, "unknown setting 'stepz'"),
    ({"attacks": [{"name": "pgd", "settings": {"steps": "many"}}]}, "settings.steps: expected"),
    ({"attacks": [{"name": "boundary"}]}, "unknown attack 'boundary'"),
    ({"attacks": []}, "attacks is empty"),
    ({"victims": ["a", "a"]}, "lists a name twice"),
    ({"dataset": "cifar"}, "unknown dataset 'cifar'"),
    ({"victims": [{"name": "x", "timm": "resnet34"}]}, "needs both 'timm' and 'checkpoint'"),
])
def test_malformed_scenarios_are_rejected_with_a_clear_message(overrides, message):
    with pytest.raises(AttribkitError, match=message):
        parse_scenario(base(**overrides))


def test_unreadable_scenario_files(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed")
    with pytest.raises(ScenarioError, match="cannot read scenario"):
        load_scenario(bad)
    with pytest.raises(ScenarioError, match="neither a file nor a built-in"):
        load_scenario(tmp_path / "missing.toml")
