"""The CLI is thin: `train`'s options are TrainConfig's fields, the demo is a
library call, generate's summary is the engine's, and plugins can add commands
without being able to break or replace the built-in ones."""

import dataclasses
import inspect
import json

import click
import pytest
from click.testing import CliRunner

from attribkit import cli as cli_module
from attribkit import pipeline
from attribkit.cli import cli
from attribkit.errors import AttribkitError
from attribkit.generation.engine import summarise
from attribkit.storage.dataset import read_manifest
from attribkit.hookspecs import hookimpl
from attribkit.testing import registered
from attribkit.training.config import TrainConfig

FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _capture_train(monkeypatch) -> list:
    """The configs `attribkit train` would train, without training: whatever
    training returns, the command stops with one error line after the call."""
    passed = []

    def fake_train(data_dir, config, out, **_):
        passed.append(config)
        raise AttribkitError("stopped by the test")

    monkeypatch.setattr(cli_module, "_train", fake_train)
    return passed


def _invoke_train(tmp_path, *argv):
    result = CliRunner().invoke(cli, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), *argv])
    assert result.exit_code == 1 and result.stderr.splitlines()[-1] == "error: stopped by the test", result.output
    return result


def _train_params():
    return {p.name: p for p in cli.commands["train"].params}


def test_every_train_config_field_is_an_option_of_train():
    params = _train_params()
    missing = sorted(set(FIELDS) - set(params))
    assert not missing, f"TrainConfig fields without an `attribkit train` option: {missing}"
    for name, f in FIELDS.items():  # a repeatable option's default is click's "none given": ()
        assert params[name].multiple or params[name].default == f.default, name


def _a_value_other_than_the_default(f) -> tuple[list[str], object]:
    """The argv that sets field ``f`` away from its default, and the value it should reach."""
    meta, (option, *_) = f.metadata, _train_params()[f.name].opts
    if f.type == "bool":
        return [option], not f.default
    if f.type.startswith("tuple["):
        return [option, "attack", option, "victim"], ("attack", "victim")
    if "choices" in meta:
        value = next(c for c in meta["choices"] if c != f.default)
    elif f.type == "str":
        value = "convnet"
    elif f.type == "float":
        value = 0.5 if f.default != 0.5 else 0.25
    else:
        value = f.default + 1
    return [option, str(value)], value


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_every_train_config_field_reaches_the_config_from_the_cli(name, monkeypatch, tmp_path):
    passed = _capture_train(monkeypatch)
    argv, value = _a_value_other_than_the_default(FIELDS[name])
    _invoke_train(tmp_path, *argv)
    assert passed == [dataclasses.replace(TrainConfig(), **{name: value})]


def test_train_help_keeps_todays_options_and_adds_the_missing_fields():
    result = CliRunner().invoke(cli, ["train", "--help"])
    assert result.exit_code == 0, result.output
    for option in ("--data", "--out", "--model", "--backbone", "--width", "--epochs", "--batch-size",
                   "--input-scale", "--stem", "--pool", "--lr", "--schedule", "--weight-decay", "--validation",
                   "--per-cell", "--loss", "--regression", "--no-perturbation", "--no-task-specific", "--no-fusion",
                   "--head", "--seed", "--no-verify", "--json", "--ae-weight", "--no-quantize", "--no-label-values"):
        assert f"  {option} " in result.output, option


def test_new_train_options_reach_run_json(tiny_data, tmp_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, [
        "train", "--data", str(tiny_data), "--out", str(run), "--width", "0.125", "--epochs", "1", "--batch-size",
        "16", "--input-scale", "1", "--no-quantize", "--ae-weight", "0.5", "--no-label-values", "--json"])
    assert result.exit_code == 0, result.output
    saved = json.loads((run / "run.json").read_text())["config"]
    assert saved == TrainConfig(width=0.125, epochs=1, batch_size=16, input_scale=1, quantize=False, ae_weight=0.5,
                                label_values=False).to_dict()
    assert (saved["quantize"], saved["ae_weight"], saved["label_values"]) == (False, 0.5, False)


def test_a_bad_mode_is_one_error_line_from_the_config_too():
    with pytest.raises(AttribkitError, match="loss must be one of uncertainty, sum, got 'max'"):
        TrainConfig(loss="max")


# --- generate's summary -------------------------------------------------------------

def _summary_as_the_cli_computed_it(manifest):  # the CLI's own copy before the engine's summarise, verbatim
    cells = {}
    for shard in manifest["shards"].values():
        key = (shard["attack"], shard["victim"])
        c = cells.setdefault(key, {"attack": shard["attack"], "victim": shard["victim"], "train": 0, "test": 0,
                                   "attempted": 0, "succeeded": 0})
        c[shard["split"]] += shard["examples"]
        c["attempted"] += sum(x["attempted"] for x in shard["cells"])
        c["succeeded"] += sum(x["succeeded"] for x in shard["cells"])
    for c in cells.values():
        c["success_rate"] = round(c["succeeded"] / c["attempted"], 4) if c["attempted"] else None
    return {"scenario": manifest["scenario"]["name"], "status": manifest["status"], "totals": manifest.get("totals"),
            "cells": list(cells.values())}


def test_generate_summary_is_the_engines_and_prints_as_before(tiny_data):
    manifest = read_manifest(tiny_data)
    as_json = manifest.to_json()  # the layout the CLI's copy read
    assert json.dumps(summarise(manifest), indent=2) == json.dumps(_summary_as_the_cli_computed_it(as_json), indent=2)
    assert summarise(manifest)["totals"] == manifest.totals  # what generate recorded, from the same function


# --- the demo as a library call ----------------------------------------------------

def test_the_demo_is_a_library_call_with_the_clis_defaults():
    params = inspect.signature(pipeline.demo).parameters
    for name in ("victim_epochs", "backbone", "epochs", "width", "input_scale"):
        assert params[name].default == pipeline.DEMO[name]
    assert params["scenario"].default == "quick" and params["runtime"].default is None
    assert cli_module.DEMO is pipeline.DEMO  # bench/attributor.py imports it from the CLI
    demo_params = {p.name: p.default for p in cli.commands["demo"].params}
    assert {k: demo_params[k] for k in ("victim_epochs", "backbone", "epochs", "width", "input_scale")} == \
        {k: params[k].default for k in ("victim_epochs", "backbone", "epochs", "width", "input_scale")}
    result = CliRunner().invoke(cli, ["demo", "--help"])
    assert result.exit_code == 0 and "--victim-epochs" in result.output


def test_the_demo_refuses_bad_options_before_any_work_without_progress(tmp_path):
    with pytest.raises(AttribkitError, match="width must be in"):
        pipeline.demo(tmp_path / "demo", width=0)
    assert not (tmp_path / "demo").exists()


# --- plugins that add commands -------------------------------------------------------

class Hello:
    @hookimpl
    def register_commands(self, cli):
        @cli.command()
        @click.option("--name", default="world")
        def hello(name):
            """Say hello."""
            click.echo(f"hello {name}")


class Raises:
    @hookimpl
    def register_commands(self, cli):
        @cli.command()
        def half():
            """Added before the hook failed: dropped with it."""

        raise RuntimeError("boom")


class NotACommand:
    @hookimpl
    def register_commands(self, cli):
        cli.commands["oops"] = print


class ReplacesTrain:
    @hookimpl
    def register_commands(self, cli):
        @cli.command("train")
        def train():
            click.echo("not the real train")

        @cli.command("hello")
        def hello():
            click.echo("a second hello")


def _plugins_json():
    result = CliRunner().invoke(cli, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    return {p["name"]: p for p in json.loads(result.stdout)}


def test_a_plugin_adds_a_command_listed_in_help_and_by_plugins():
    with registered(Hello(), "hello-plugin"):
        result = CliRunner().invoke(cli, ["hello", "--name", "attribkit"])
        assert result.exit_code == 0, result.output
        assert result.stdout == "hello attribkit\n"
        assert "hello" in CliRunner().invoke(cli, ["--help"]).output
        info = _plugins_json()["hello-plugin"]
        assert "register_commands" in info["hooks"]
        assert info["registered"] == {"commands": ["hello"]} and info["errors"] == []
    gone = CliRunner().invoke(cli, ["hello"])  # unregistered with its plugin
    assert gone.exit_code != 0 and "No such command" in gone.stderr
    assert "hello" not in cli.commands  # the group itself only ever holds the built-ins


def test_a_plugin_whose_hook_raises_is_reported_and_every_other_command_works():
    with registered(Hello(), "hello-plugin"), registered(Raises(), "raises"), registered(NotACommand(), "oops"):
        listed = _plugins_json()
        assert listed["raises"]["errors"] == ["register_commands: RuntimeError: boom"]
        assert "commands" not in listed["raises"]["registered"]
        assert listed["oops"]["errors"][0].endswith("'oops' is a builtin_function_or_method, not a click command")
        assert CliRunner().invoke(cli, ["hello"]).stdout == "hello world\n"
        assert CliRunner().invoke(cli, ["half"]).exit_code != 0
        assert CliRunner().invoke(cli, ["oops"]).exit_code != 0
        assert CliRunner().invoke(cli, ["list", "attacks", "--json"]).exit_code == 0
        assert CliRunner().invoke(cli, ["--help"]).exit_code == 0


def test_a_plugin_cannot_replace_a_built_in_or_another_plugins_command(monkeypatch, tmp_path):
    with registered(Hello(), "hello-plugin"), registered(ReplacesTrain(), "replaces"):
        errors = _plugins_json()["replaces"]["errors"]
        assert len(errors) == 2
        assert "'train' is built in" in errors[0] and "replaces" in errors[0]
        assert "'hello' is already registered by plugin 'hello-plugin'" in errors[1]
        assert CliRunner().invoke(cli, ["hello"]).stdout == "hello world\n"
        passed = _capture_train(monkeypatch)
        result = _invoke_train(tmp_path)
        assert passed == [TrainConfig()] and "not the real" not in result.output
        assert "'train' is built in" in result.stderr  # the refusal is also warned of, like any plugin error
    assert cli.commands["train"] is cli_module.train_cmd
