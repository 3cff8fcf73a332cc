import importlib.metadata as md
import json
import sys
import textwrap

import pytest
from click.testing import CliRunner

from attribkit import plugins
from attribkit.cli import cli
from attribkit.errors import UnknownNameError
from attribkit.hookspecs import hookimpl
from attribkit.specs import AttackSpec, Hyperparameter
from attribkit.testing import registered


BUILTIN_ATTACKS = {"fgsm", "pgd", "cw", "bim", "mifgsm", "deepfool", "square", "pgd_targeted"}


def _noop_attack(model, images, labels, grid, settings):
    return [images for _ in grid]


class AdHocAttacks:
    @hookimpl
    def register_attacks(self, register):
        register(AttackSpec("noop", _noop_attack, (Hyperparameter("strength", (1.0, 2.0)),), norm="L2"))


def test_builtins_register_the_papers_attacks_victims_and_datasets():
    reg = plugins.registry()
    assert set(reg.names("attacks")) == BUILTIN_ATTACKS
    assert reg.names("victims") == ["inception_v3", "resnet18", "resnet50", "vgg16", "vgg19"]
    assert {"mnist5k", "digits", "folder"} <= set(reg.names("datasets"))
    assert reg.tables["attacks"]["fgsm"].plugin == "attribkit.builtins.attacks"
    assert reg.errors() == []


def test_adhoc_plugin_registers_an_attack_visible_in_the_cli():
    with registered(AdHocAttacks(), "adhoc"):
        assert plugins.get("attacks", "noop").hyperparameters[0].grid == (1.0, 2.0)
        result = CliRunner().invoke(cli, ["list", "attacks", "--json"])
        assert result.exit_code == 0
        rows = {r["name"]: r for r in json.loads(result.stdout)}
        assert rows["noop"]["plugin"] == "adhoc"
        assert rows["noop"]["hyperparameters"][0]["name"] == "strength"
    assert "noop" not in plugins.registry().names("attacks")


def test_unknown_name_error_suggests_close_matches():
    with pytest.raises(UnknownNameError, match="did you mean fgsm"):
        plugins.get("attacks", "fgsn")


def test_duplicate_name_is_reported_naming_both_plugins_and_first_is_kept():
    class Duplicate:
        @hookimpl
        def register_attacks(self, register):
            register(AttackSpec("fgsm", _noop_attack, (Hyperparameter("eps", (1.0,)),)))

    with registered(Duplicate(), "dupe") as reg:
        errors = reg.plugins["dupe"].errors
        assert len(errors) == 1 and "'fgsm'" in errors[0] and "attribkit.builtins.attacks" in errors[0] \
            and "dupe" in errors[0]
        assert reg.tables["attacks"]["fgsm"].plugin == "attribkit.builtins.attacks"


def test_hook_that_raises_or_registers_a_wrong_object_is_reported_and_others_keep_working():
    class Raises:
        @hookimpl
        def register_attacks(self, register):
            raise RuntimeError("boom")

    class WrongObject:
        @hookimpl
        def register_victims(self, register):
            register({"name": "not-a-spec"})

    plugins.load_plugins()
    plugins.pm.register(Raises(), name="raises")
    plugins.pm.register(WrongObject(), name="wrong")
    reg = plugins.refresh()
    assert reg.plugins["raises"].errors == ["register_attacks: RuntimeError: boom"]
    assert "expected VictimSpec" in reg.plugins["wrong"].errors[0]
    assert set(reg.names("attacks")) == BUILTIN_ATTACKS


def test_malformed_hyperparameter_is_reported_with_the_plugin_name():
    class BadGrid:
        @hookimpl
        def register_attacks(self, register):
            register(AttackSpec("bad", _noop_attack, (Hyperparameter("eps", ()),)))

    plugins.load_plugins()
    plugins.pm.register(BadGrid(), name="badgrid")
    errors = plugins.refresh().errors()
    assert errors == ["plugin 'badgrid': register_attacks: AttribkitError: hyperparameter 'eps' declares an empty grid"]


@pytest.fixture
def fake_entry_points(monkeypatch, tmp_path):
    """Entry points of the group 'attribkit', made of modules written to tmp_path."""
    monkeypatch.delenv(plugins.DISABLE_AUTOLOAD_ENV, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    made = []

    def make(name: str, source: str | None):
        module = f"akplug_{name.replace('-', '_')}"
        if source is not None:
            (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        made.append(md.EntryPoint(name=name, value=module, group=plugins.ENTRY_POINT_GROUP))
        sys.modules.pop(module, None)

    monkeypatch.setattr(plugins.md, "entry_points", lambda group: [ep for ep in made if ep.group == group])
    return make


GOOD_PLUGIN = """
    from attribkit.hookspecs import hookimpl
    from attribkit.specs import AttackSpec, Hyperparameter

    def run(model, images, labels, grid, settings):
        return [images for _ in grid]

    @hookimpl
    def register_attacks(register):
        register(AttackSpec("{name}", run, (Hyperparameter("strength", (1.0,)),)))
"""


def test_broken_entry_point_is_reported_and_the_cli_keeps_working(fake_entry_points):
    fake_entry_points("good", GOOD_PLUGIN.format(name="ep-attack"))
    fake_entry_points("broken", "raise ImportError('missing dependency foo')")
    fake_entry_points("absent", None)  # module does not exist
    reg = plugins.registry()
    assert "ep-attack" in reg.names("attacks")
    assert reg.plugins["good"].source == "entry point"
    assert reg.plugins["broken"].errors == ["ImportError: missing dependency foo"]
    assert "ModuleNotFoundError" in reg.plugins["absent"].errors[0]
    result = CliRunner().invoke(cli, ["plugins", "--json"])
    assert result.exit_code == 0
    by_name = {p["name"]: p for p in json.loads(result.stdout)}
    assert by_name["good"]["registered"] == {"attacks": ["ep-attack"]}
    assert by_name["broken"]["errors"] and by_name["absent"]["errors"]


def test_misspelled_hook_is_an_error_at_load(fake_entry_points):
    fake_entry_points("typo", """
        from attribkit.hookspecs import hookimpl

        @hookimpl
        def register_atacks(register):
            pass
    """)
    reg = plugins.registry()
    assert "register_atacks" in reg.plugins["typo"].errors[0]
    assert not plugins.pm.has_plugin("typo")


def test_disable_autoload_and_load_only_named(fake_entry_points, monkeypatch):
    fake_entry_points("one", GOOD_PLUGIN.format(name="attack-one"))
    fake_entry_points("two", GOOD_PLUGIN.format(name="attack-two"))
    monkeypatch.setenv(plugins.LOAD_ONLY_ENV, "two")
    assert "attack-one" not in plugins.registry().names("attacks")
    assert "attack-two" in plugins.registry().names("attacks")
    plugins.reset()
    monkeypatch.setenv(plugins.DISABLE_AUTOLOAD_ENV, "1")
    assert set(plugins.registry().names("attacks")) == BUILTIN_ATTACKS


def test_every_hook_is_exercised_by_the_builtins():
    reg = plugins.registry()
    hooks = {h for p in reg.plugins.values() for h in p.hooks}
    # register_heads arrives with the MTAA model; every other hook has a built-in implementation
    assert hooks == {f"register_{k}" for k in plugins.KINDS}
