"""The typed records keep the files attribkit wrote before them readable: a
data set's label spaces keep their JSON layout byte for byte, and a run
written in format 1 (heads as name → plugin, single-label's classes at the
top level) loads and answers exactly as it did."""

import json
import shutil
import warnings

import pytest

import attribkit
from attribkit import AttribkitError, LabelSpaces, RunMeta, TrainConfig, storage
from attribkit.errors import DataError
from attribkit.records import AttackInfo
from attribkit.storage.dataset import load_split

# label_spaces as attribkit wrote them before the records existed (generate's manifest, format 1 runs)
OLD_LABEL_SPACES = {
    "attack": ["fgsm", "pgd_targeted", "cw"], "victim": ["tiny-resnet", "tiny-vgg"],
    "hyperparameters": {"eps": {"unit": "/255", "scale": 255.0, "symbol": "ε", "attacks": ["fgsm", "pgd_targeted"]},
                        "kappa": {"unit": "", "scale": 1.0, "symbol": "κ", "attacks": ["cw"]}},
    "attack_info": {"fgsm": {"norm": "Linf", "targeted": False, "hyperparameters": ["eps"]},
                    "pgd_targeted": {"norm": "Linf", "targeted": True, "hyperparameters": ["eps"]},
                    "cw": {"norm": "L2", "targeted": False, "hyperparameters": ["kappa"]}},
}


def test_label_spaces_round_trip_in_the_old_layout(tiny_data):
    spaces = LabelSpaces.from_json(json.loads(json.dumps(OLD_LABEL_SPACES)))
    assert spaces.attacks == ("fgsm", "pgd_targeted", "cw") and spaces.hp_names == ["eps", "kappa"]
    assert spaces.hyperparameters_of("cw") == ("kappa",) and spaces.targeted and not spaces.clean
    again = spaces.to_json()
    assert "clean" not in again and "extra" not in again  # unused: not written, so the bytes stay the same
    assert json.dumps(again, ensure_ascii=False) == json.dumps(OLD_LABEL_SPACES, ensure_ascii=False)
    assert LabelSpaces.from_json(again) == spaces
    # a generated data set's manifest, as written
    manifest = json.loads((tiny_data / "manifest.json").read_text())["label_spaces"]
    assert json.dumps(LabelSpaces.from_json(manifest).to_json()) == json.dumps(manifest)
    # the fields added since appear only when used, and round-trip too
    wider = LabelSpaces(spaces.attacks + ("clean",), spaces.victims + ("clean",), spaces.hyperparameters,
                        {**spaces.attack_info, "clean": AttackInfo("none", False, ())}, clean=True,
                        extra={"norm": ("L2", "Linf")})
    assert wider.to_json() == {**OLD_LABEL_SPACES, "attack": OLD_LABEL_SPACES["attack"] + ["clean"],
                               "victim": OLD_LABEL_SPACES["victim"] + ["clean"],
                               "attack_info": {**OLD_LABEL_SPACES["attack_info"],
                                               "clean": {"norm": "none", "targeted": False, "hyperparameters": []}},
                               "clean": True, "extra": {"norm": ["L2", "Linf"]}}
    assert LabelSpaces.from_json(json.loads(json.dumps(wider.to_json()))) == wider
    assert wider.clean_index == (3, len(wider.victims) - 1) and spaces.clean_index is None
    with pytest.raises(DataError, match="'clean' must be the last attack and victim label"):
        LabelSpaces(spaces.attacks, spaces.victims, spaces.hyperparameters, spaces.attack_info, clean=True)


def test_malformed_label_spaces_are_one_clear_error():
    bad = {**OLD_LABEL_SPACES, "attack_info": {**OLD_LABEL_SPACES["attack_info"], "cw": {"norm": "L2"}}}
    with pytest.raises(DataError, match=r"manifest.json: label_spaces.attack_info\['cw'\].hyperparameters must be"):
        LabelSpaces.from_json(bad, "manifest.json")


def _as_format_1(run):
    """Rewrite RUN's run.json as attribkit wrote it before format 2, its content hash re-recorded."""
    path = run / "run.json"
    meta = json.loads(path.read_text())
    heads = meta.pop("heads")
    if meta["config"]["model"] == "single-label":  # its head was no plugin: the classes were the run's own,
        old_heads = {}                                # as "attack|victim|values" strings
        combinations = [f"{a}|{v}|" + ("" if values is None else ",".join("-" if x is None else f"{x:g}" for x in values))
                        for a, v, values in heads["combination"]["state"]]
    else:
        old_heads, combinations = {n: h["plugin"] for n, h in heads.items()}, None
        assert all(h["state"] is None for h in heads.values())
    storage.write_json_record(path, {**meta, "format": "attribkit-run/1", "heads": old_heads,
                                     "combinations": combinations})
    return meta


@pytest.fixture(scope="module")
def single_label_run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "single-label"
    attribkit.train(tiny_data, TrainConfig(model="single-label", width=0.125, epochs=1, batch_size=16, input_scale=1), out)
    return out


@pytest.mark.parametrize("kind", ["mtaa", "single-label"])
def test_a_format_1_run_loads_and_answers_the_same(kind, tiny_run, single_label_run, tiny_data, tmp_path):
    original = tiny_run if kind == "mtaa" else single_label_run
    batch = tmp_path / "x.safetensors"
    storage.save_tensors(batch, {"images": load_split(tiny_data, "test")["images"][:8].contiguous()})
    before = attribkit.attribute(original, [str(batch)])
    old = tmp_path / "old"
    shutil.copytree(original, old)
    _as_format_1(old)
    assert json.loads((old / "run.json").read_text())["format"] == "attribkit-run/1"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # verified as it stands: no notice of an unrecorded hash either
        meta, members = attribkit.load_run(old)
        after = attribkit.attribute(old, [str(batch)])
    new_meta, _ = attribkit.load_run(original)
    if kind == "single-label":
        assert meta.heads == {} and len(meta.legacy_state) == len(new_meta.heads["combination"].state)
        assert all(isinstance(c, str) for c in meta.legacy_state)
    else:
        assert {n: h.plugin for n, h in meta.heads.items()} == {n: h.plugin for n, h in new_meta.heads.items()}
    assert meta.members == new_meta.members and meta.label_spaces == new_meta.label_spaces
    assert meta.final_test_metrics == new_meta.final_test_metrics
    assert {k: v for k, v in after.items() if k not in ("run", "run_sha256")} == \
        {k: v for k, v in before.items() if k not in ("run", "run_sha256")}
    assert len(after["results"]) == 8 and all("attack" in r and "victim" in r for r in after["results"])


def test_an_unknown_run_format_is_refused_naming_it(tiny_run, tmp_path):
    run = tmp_path / "future"
    shutil.copytree(tiny_run, run)
    meta = json.loads((run / "run.json").read_text())
    storage.write_json_record(run / "run.json", {**meta, "format": "attribkit-run/9"})
    with pytest.raises(AttribkitError) as caught:
        attribkit.load_run(run)
    message = str(caught.value)
    assert "'attribkit-run/9'" in message and "'attribkit-run/2'" in message and "\n" not in message
    with pytest.raises(DataError, match="run format 'attribkit-run/9'; this attribkit reads attribkit-run/1, "
                                        "attribkit-run/2"):
        RunMeta.from_json({**meta, "format": "attribkit-run/9"}, "run.json")


def _rewritten(run, tmp_path, change):
    """A copy of RUN whose run.json ``change`` edited, its content hash re-recorded (a hand edit done carefully)."""
    copy = tmp_path / "edited"
    shutil.copytree(run, copy)
    meta = json.loads((copy / "run.json").read_text())
    change(meta)
    storage.write_json_record(copy / "run.json", meta)
    return copy


@pytest.mark.parametrize("change, says", [
    (lambda m: m.update(members=5), "members must be a list of names"),
    (lambda m: m.update(data=[1]), "data must be dict"),
    (lambda m: m.update(heads=[]), "heads must be dict"),
])
def test_a_malformed_run_record_is_one_clear_error(tiny_run, tmp_path, change, says):
    with pytest.raises(AttribkitError, match=says) as caught:
        attribkit.load_run(_rewritten(tiny_run, tmp_path, change))
    assert "\n" not in str(caught.value)


def test_single_label_classes_that_do_not_fit_the_label_spaces_are_refused_at_load(single_label_run, tmp_path):
    def victim_99(meta):
        meta["heads"]["combination"]["state"][0][1] = 99

    with pytest.raises(AttribkitError, match=r"does not describe a model .*single-label class \[0, 99") as caught:
        attribkit.load_run(_rewritten(single_label_run, tmp_path, victim_99))
    assert "\n" not in str(caught.value)


def test_a_model_without_an_attack_head_trains_answers_and_is_scored(tiny_data, tmp_path):
    """The regressor reads attack logits only when an attack head shares its network (eq. 7)."""
    out = tmp_path / "no-attack"
    meta = attribkit.train(tiny_data, TrainConfig(heads=("victim", "hyperparameter"), width=0.125, epochs=1,
                                                  batch_size=16, input_scale=1), out)
    assert set(meta.loss_sigmas["mtaa"]) == {"victim", "hyperparameter"}
    batch = tmp_path / "x.safetensors"
    storage.save_tensors(batch, {"images": load_split(tiny_data, "test")["images"][:4].contiguous()})
    answers = attribkit.attribute(out, [str(batch)])
    # no attack head: nothing says whose hyperparameter the value would be, so none is claimed
    assert all("victim" in r and "attack" not in r and "hyperparameters" not in r for r in answers["results"])
    assert "hyperparameter" not in answers["table"]["columns"]
    report = attribkit.evaluate(out, tiny_data, out=tmp_path / "evaluation")
    assert "attack_accuracy" not in report and report["hp_rmse"] == meta.final_test_metrics["hp_rmse"] is not None


# --- the public API and the records it hands back ------------------------------------

def test_the_public_functions_are_not_shadowed_by_their_modules():
    """Importing the modules that implement the API (as any caller of the internals does)
    leaves ``attribkit.train`` and the rest the functions; run fresh, so nothing was looked up before."""
    import subprocess
    import sys

    script = """
import inspect
import attribkit.training.trainer, attribkit.evaluation, attribkit.attribution, attribkit.generation.engine
import attribkit.verification, attribkit.pipeline
import attribkit
expected = {"train": attribkit.training.trainer.train, "generate": attribkit.generation.engine.generate,
            "attribute": attribkit.attribution.attribute, "evaluate": attribkit.evaluation.evaluate,
            "verify": attribkit.verification.verify, "demo": attribkit.pipeline.demo}
for name, function in expected.items():
    value = getattr(attribkit, name)
    assert inspect.isfunction(value) and value is function, (name, value)
for name in attribkit.__all__:
    assert getattr(attribkit, name) is not None, name
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
    # and in this process, whatever the tests before imported
    for name in ("train", "generate", "attribute", "evaluate", "verify", "demo"):
        assert callable(getattr(attribkit, name)) and not isinstance(getattr(attribkit, name), type(attribkit))
    assert all(getattr(attribkit, name) is not None for name in attribkit.__all__)
    assert sorted(attribkit.__all__) == dir(attribkit)


def test_a_manifest_round_trips_its_json_in_the_same_order(tiny_data):
    from attribkit.records import Manifest, Shard
    from attribkit.storage.dataset import read_manifest

    on_disk = json.loads((tiny_data / "manifest.json").read_text())
    written = {k: v for k, v in on_disk.items() if k != "content_sha256"}
    manifest = Manifest.from_json(json.loads(json.dumps(on_disk)), "manifest.json")
    assert all(isinstance(s, Shard) for s in manifest.shards.values()) and manifest.status == "complete"
    # json.dumps keeps key order: the same text means the same keys in the same order, at every depth
    assert json.dumps(manifest.to_json(), ensure_ascii=False) == json.dumps(written, ensure_ascii=False)
    assert json.dumps(read_manifest(tiny_data).to_json(), ensure_ascii=False) == json.dumps(written, ensure_ascii=False)
    assert storage.content_hash(manifest.to_json()) == on_disk["content_sha256"]


def test_a_manifest_with_a_malformed_shard_is_one_data_error(tiny_data, tmp_path):
    from attribkit.storage.dataset import read_manifest

    data = json.loads((tiny_data / "manifest.json").read_text())
    shard = sorted(data["shards"])[0]
    data["shards"][shard]["examples"] = str(data["shards"][shard]["examples"])
    out = tmp_path / "bad"
    out.mkdir()
    storage.write_json_record(out / "manifest.json", data)  # its content hash is right: only the field is wrong
    with pytest.raises(DataError) as caught:
        read_manifest(out)
    message = str(caught.value)
    assert f"shards[{shard!r}].examples must be int" in message and "manifest.json" in message
    assert "\n" not in message


def test_a_runtime_looks_plugins_up_in_what_is_installed_now():
    from attribkit import Runtime, plugins
    from attribkit.testing import registered

    assert Runtime().plugins is plugins.registry()

    class Nothing:
        pass

    with registered(Nothing(), "nothing") as installed:  # what is installed now, not when Runtime was imported
        assert Runtime().plugins is installed is plugins.registry()
    assert Runtime(registry=installed).plugins is installed
