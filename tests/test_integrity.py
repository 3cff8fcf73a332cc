"""Integrity: every file of a data set, zoo or run is hashed when written and
checked when read; damage is found, named, and re-made where it can be."""

import json
import os
import shutil
import warnings

import pytest
import torch
from click.testing import CliRunner

from attribkit import storage
from attribkit.cli import cli
from attribkit.errors import AttribkitError
from attribkit.generation.engine import generate
from attribkit.generation.scenario import parse_scenario
from attribkit.storage.dataset import data_files, load_split, read_manifest
from attribkit.training.run import load_run
from attribkit.versions import library_versions
from attribkit.victims import load_victim

from conftest import TINY_SCENARIO



def flip_last_byte(path):
    """Damage tensor data, not the header: the file still parses, only its hash tells."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def snapshot(folder):
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def strip_hashes(json_path):
    """What a folder written before hashes were recorded looks like."""
    data = json.loads(json_path.read_text())
    data.pop("files", None)
    data.pop("content_sha256", None)
    json_path.write_text(json.dumps(data, indent=2))


def rewrite_record(json_path, change):
    data = json.loads(json_path.read_text())
    change(data)
    storage.write_json_record(json_path, data)


@pytest.fixture
def data_copy(tiny_data, tmp_path):
    out = tmp_path / "data"
    shutil.copytree(tiny_data, out)
    return out


@pytest.fixture
def run(tiny_run):
    return tiny_run


def tiny(zoo, **overrides):
    return parse_scenario({**TINY_SCENARIO, "zoo": str(zoo), **overrides})


# --- the I/O module -----------------------------------------------------------

def test_writes_record_exactly_the_bytes_on_disk_and_leave_no_temporaries(tmp_path):
    record = storage.write_bytes(tmp_path / "a.bin", b"hello")
    assert record == storage.record_of_file(tmp_path / "a.bin") and record.bytes == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600
    tensors = {"x": torch.arange(6.0).reshape(2, 3), "y": torch.tensor([1, 2])}
    written = storage.save_tensors(tmp_path / "t.safetensors", tensors, {"k": 1})
    loaded, meta = storage.read_tensors(tmp_path / "t.safetensors", written)
    assert meta == {"k": 1} and all(torch.equal(loaded[k], v) for k, v in tensors.items())


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    storage.write_bytes(tmp_path / "a.bin", b"old")

    def refuse(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError):
        storage.write_bytes(tmp_path / "a.bin", b"new")
    assert (tmp_path / "a.bin").read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_a_json_record_carries_the_hash_of_its_own_content(tmp_path):
    path = tmp_path / "r.json"
    storage.write_json_record(path, {"format": "f/1", "n": 1.5, "nested": {"b": [1, None]}})
    assert storage.read_json_record(path, "f/1", "a record").hashed
    text = path.read_text().replace('"n": 1.5', '"n": 2.5')
    path.write_text(text)
    with pytest.raises(storage.IntegrityError, match="r.json' does not match its recorded content hash"):
        storage.read_json_record(path, "f/1", "a record")
    assert storage.read_json_record(path, "f/1", "a record", verify=False).data["n"] == 2.5


def test_a_changed_file_is_refused_naming_it(tmp_path):
    record = storage.write_bytes(tmp_path / "a.bin", b"abc")
    (tmp_path / "a.bin").write_bytes(b"abd")
    with pytest.raises(storage.IntegrityError, match=r"a.bin' does not match its recorded sha256 \(sha256 "):
        storage.read_bytes(tmp_path / "a.bin", record)
    (tmp_path / "a.bin").write_bytes(b"ab")
    with pytest.raises(storage.IntegrityError, match="2 bytes, recorded 3"):
        storage.read_bytes(tmp_path / "a.bin", record)


# --- data sets ----------------------------------------------------------------

def test_the_manifest_records_every_file_of_the_data_set(tiny_data):
    manifest = read_manifest(tiny_data)
    listed = data_files(manifest.shards)
    assert len(listed) == 1 + 2 * 3 * 2 and set(manifest.files) == set(listed)
    for name in listed:
        assert storage.record_of_file(tiny_data / name).to_json() == manifest.files[name]
    on_disk = json.loads((tiny_data / "manifest.json").read_text())
    assert on_disk["content_sha256"] == storage.content_hash(on_disk) == storage.content_hash(manifest.to_json())


def test_a_flipped_byte_in_a_shard_is_refused_by_train_evaluate_and_verify(data_copy, run, tmp_path):
    shard = sorted((data_copy / "shards").glob("*__test.safetensors"))[0]
    flip_last_byte(shard)
    with pytest.raises(storage.IntegrityError, match=f"{shard.name}' does not match its recorded sha256"):
        load_split(data_copy, "test")
    assert len(load_split(data_copy, "test", verify=False)["images"]) > 0  # the reader itself copes
    runner = CliRunner()
    before = snapshot(data_copy)
    for argv in (["train", "--data", str(data_copy), "--out", str(tmp_path / "r")],
                 ["evaluate", "--run", str(run), "--data", str(data_copy), "--out", str(tmp_path / "e")],
                 ["verify", str(data_copy)]):
        result = runner.invoke(cli, argv)
        assert result.exit_code == 1, argv
        assert "Traceback" not in result.output and result.stderr.startswith("error:")
        assert shard.name in result.output, argv
    assert snapshot(data_copy) == before and not (tmp_path / "r").exists()
    unchecked = runner.invoke(cli, ["evaluate", "--run", str(run), "--data", str(data_copy), "--out",
                                    str(tmp_path / "e"), "--no-verify", "--json"])
    assert unchecked.exit_code == 0, unchecked.output


def test_verify_reports_each_file(data_copy):
    ok = CliRunner().invoke(cli, ["verify", str(data_copy), "--json"])
    assert ok.exit_code == 0, ok.output
    report = json.loads(ok.stdout)
    assert report["ok"] and report["kind"] == "data set"
    assert {f["name"] for f in report["files"]} == {"manifest.json", *data_files(read_manifest(data_copy).shards)}
    shard = sorted((data_copy / "shards").glob("*.safetensors"))[1]
    flip_last_byte(shard)
    (data_copy / "clean.safetensors").unlink()
    bad = CliRunner().invoke(cli, ["verify", str(data_copy), "--json"])
    assert bad.exit_code == 1
    states = {f["name"]: f["state"] for f in json.loads(bad.stdout)["files"]}
    assert states.pop(f"shards/{shard.name}") == "changed" and states.pop("clean.safetensors") == "missing"
    assert set(states.values()) == {"ok"}
    assert bad.stderr.strip().splitlines() == [
        f"error: data set {str(data_copy)!r}: 2 of 14 files failed verification: clean.safetensors (missing), "
        f"shards/{shard.name} (changed)"]


def test_resume_remakes_a_damaged_or_missing_shard_and_says_so(data_copy, tiny_data, tiny_zoo):
    shards = sorted((data_copy / "shards").glob("*.safetensors"))
    flip_last_byte(shards[0])
    shards[1].unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in shards[2:]}
    with pytest.warns(storage.IntegrityNotice) as notices:
        generate(tiny(tiny_zoo), data_copy)
    said = " ".join(str(n.message) for n in notices)
    assert f"{shards[0].name}' does not match its recorded sha256" in said and f"{shards[1].name}' is missing" in said
    for name in (shards[0].name, shards[1].name):
        assert (data_copy / "shards" / name).read_bytes() == (tiny_data / "shards" / name).read_bytes()
    assert {p.name: p.stat().st_mtime_ns for p in shards[2:]} == kept  # the intact ones were not touched
    assert CliRunner().invoke(cli, ["verify", str(data_copy)]).exit_code == 0


def test_an_edited_manifest_is_refused_and_left_alone(data_copy, tiny_zoo):
    text = (data_copy / "manifest.json").read_text()
    (data_copy / "manifest.json").write_text(text.replace('"status": "complete"', '"status": "partial"'))
    before = snapshot(data_copy)
    with pytest.raises(storage.IntegrityError, match="manifest.json' does not match its recorded content hash"):
        generate(tiny(tiny_zoo), data_copy)
    assert snapshot(data_copy) == before


def test_resume_refuses_other_library_versions_unless_accepted(data_copy, tiny_zoo):
    shard = sorted((data_copy / "shards").glob("*.safetensors"))[0].name

    def older_torch_and_one_shard_unfinished(manifest):
        manifest["versions"]["torch"] = "0.0.1"
        del manifest["shards"][shard]
        del manifest["files"][f"shards/{shard}"]

    rewrite_record(data_copy / "manifest.json", older_torch_and_one_shard_unfinished)
    (data_copy / "shards" / shard.replace(".safetensors", ".json")).unlink()  # its worker never recorded it
    before = snapshot(data_copy)
    result = CliRunner().invoke(cli, ["generate", "--scenario", "x", "--out", str(data_copy)])  # name checked first
    assert result.exit_code == 1
    now = library_versions()["torch"]
    with pytest.raises(AttribkitError, match=f"other library versions \\(torch 0.0.1 → {now}\\)"):
        generate(tiny(tiny_zoo), data_copy)
    assert snapshot(data_copy) == before
    manifest = generate(tiny(tiny_zoo), data_copy, accept_versions=True)
    assert manifest.status == "complete" and manifest.versions["torch"] == "0.0.1"
    assert manifest.shards[shard].versions["torch"] == now
    assert sum(s.versions is not None for s in manifest.shards.values()) == 1  # only the shard made now
    on_disk = json.loads((data_copy / "manifest.json").read_text())
    assert sum("versions" in s for s in on_disk["shards"].values()) == 1


def test_an_older_data_set_loads_with_a_notice_and_verify_record_hashes_it(data_copy):
    strip_hashes(data_copy / "manifest.json")
    with pytest.warns(storage.IntegrityNotice, match="without a recorded sha256 .*attribkit verify --record"):
        expected = load_split(data_copy, "train")
    unrecorded = CliRunner().invoke(cli, ["verify", str(data_copy)])
    assert unrecorded.exit_code == 1 and "verify --record" in unrecorded.stderr
    recorded = CliRunner().invoke(cli, ["verify", "--record", str(data_copy), "--json"])
    assert recorded.exit_code == 0, recorded.output
    assert len(json.loads(recorded.stdout)["recorded"]) == 1 + 13
    with warnings.catch_warnings():
        warnings.simplefilter("error", storage.IntegrityNotice)  # no notice any more
        again = load_split(data_copy, "train")
    assert all(torch.equal(again[k], expected[k].to(again[k].dtype)) or torch.equal(
        again[k].isnan(), expected[k].isnan()) for k in expected)
    assert CliRunner().invoke(cli, ["verify", str(data_copy)]).exit_code == 0


def test_a_manifest_stripped_of_its_own_hash_is_noticed(data_copy):
    manifest = json.loads((data_copy / "manifest.json").read_text())
    del manifest["content_sha256"]  # the files keep theirs: the notice must not claim they lack them
    (data_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.warns(storage.IntegrityNotice, match="no content hash of its own") as caught:
        load_split(data_copy, "train")
    assert not any("without a recorded sha256" in str(w.message) for w in caught)


def test_record_never_blesses_a_damaged_file(data_copy):
    strip_hashes(data_copy / "manifest.json")
    rewrite_record(data_copy / "manifest.json", lambda m: m.update(
        files={"clean.safetensors": {"sha256": "0" * 64, "bytes": 1}}))
    before = snapshot(data_copy)
    result = CliRunner().invoke(cli, ["verify", "--record", str(data_copy)])
    assert result.exit_code == 1 and "clean.safetensors" in result.stdout
    assert snapshot(data_copy) == before


# --- runs -------------------------------------------------------------------------

def test_a_run_records_its_files_and_attribute_refuses_damaged_weights(run, tiny_data, tmp_path):
    meta = json.loads((run / "run.json").read_text())
    assert set(meta["files"]) == {"weights.safetensors", "metrics.json", "metrics.csv", "trust.safetensors"}
    assert not any(p.name.startswith(".") for p in run.parent.iterdir())  # the staging folder is gone
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    flip_last_byte(copy / "weights.safetensors")
    batch = tmp_path / "x.safetensors"
    storage.save_tensors(batch, {"images": load_split(tiny_data, "test")["images"][:2]})
    result = CliRunner().invoke(cli, ["attribute", "--run", str(copy), str(batch)])
    assert result.exit_code == 1 and "weights.safetensors' does not match its recorded sha256" in result.stderr
    assert "Traceback" not in result.output
    assert CliRunner().invoke(cli, ["attribute", "--run", str(copy), str(batch), "--no-verify"]).exit_code == 0
    assert CliRunner().invoke(cli, ["verify", str(run)]).exit_code == 0
    assert CliRunner().invoke(cli, ["verify", str(copy)]).exit_code == 1


def test_an_older_run_loads_with_a_notice(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    strip_hashes(copy / "run.json")
    with pytest.warns(storage.IntegrityNotice, match="no recorded sha256"):
        load_run(copy)
    result = CliRunner().invoke(cli, ["verify", "--record", str(copy)])
    assert result.exit_code == 0, result.output
    assert set(json.loads((copy / "run.json").read_text())["files"]) == {
        "weights.safetensors", "metrics.json", "metrics.csv", "trust.safetensors"}


# --- zoos ---------------------------------------------------------------------

def test_a_zoo_victim_records_its_weights_and_generate_refuses_damaged_ones(tiny_zoo, tmp_path):
    zoo = tmp_path / "zoo"
    shutil.copytree(tiny_zoo, zoo)
    record = json.loads((zoo / "tiny-resnet.json").read_text())
    assert record["files"]["tiny-resnet.safetensors"] == storage.record_of_file(zoo / "tiny-resnet.safetensors").to_json()
    assert CliRunner().invoke(cli, ["verify", str(zoo)]).exit_code == 0
    flip_last_byte(zoo / "tiny-resnet.safetensors")
    with pytest.raises(storage.IntegrityError, match="tiny-resnet.safetensors' does not match its recorded sha256"):
        load_victim(zoo, "tiny-resnet")
    scenario = tmp_path / "s.toml"
    scenario.write_text('dataset = "mnist5k"\nvictims = ["tiny-resnet"]\n[cells]\ntrain = 1\ntest = 1\n'
                        '[[attacks]]\nname = "fgsm"\n')
    argv = ["generate", "--scenario", str(scenario), "--out", str(tmp_path / "d"), "--zoo", str(zoo)]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 1 and "tiny-resnet.safetensors' does not match" in result.stderr
    assert not (tmp_path / "d").exists()
    load_victim(zoo, "tiny-resnet", verify=False)


def test_victims_train_retrains_a_damaged_victim(mnist, tmp_path):
    from attribkit.victims.train import train_zoo

    zoo = tmp_path / "zoo"
    (first,) = train_zoo(zoo, ["resnet18"], mnist, width=1 / 16, epochs=1)
    original = (zoo / "resnet18.safetensors").read_bytes()
    flip_last_byte(zoo / "resnet18.safetensors")
    with pytest.warns(storage.IntegrityNotice, match=r"does not match its recorded sha256 \(.*\); training victim 'resnet18' again"):
        (again,) = train_zoo(zoo, ["resnet18"], mnist, width=1 / 16, epochs=1)
    assert (zoo / "resnet18.safetensors").read_bytes() == original  # same seed, same bytes
    assert again.test_accuracy == first.test_accuracy
