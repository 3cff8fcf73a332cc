"""Several workers make one data set: the split of the work, the shards' records and
their merge, and the finer unit of work. In-process here; tests/test_scale_out.py
starts real processes (torchrun, job arrays, a killed worker)."""

import json

import pytest
import torch
from click.testing import CliRunner

from attribkit import Runtime, storage
from attribkit.cli import cli
from attribkit.generation.engine import generate
from attribkit.generation.scenario import parse_scenario
from attribkit.generation.units import Unit, assign, plan_units
from attribkit.storage import read_tensors
from attribkit.storage.dataset import read_manifest, shard_record_file

SCENARIO = {
    "name": "workers", "dataset": "mnist5k", "seed": 5, "batch_size": 8,
    "victims": ["tiny-resnet", "tiny-vgg"], "cells": {"train": 3, "test": 2},
    "attacks": [{"name": "fgsm", "grid": {"eps": [30, 120]}},
                {"name": "pgd", "grid": {"eps": [30, 120]}, "settings": {"steps": 2}}],
}


def scenario(zoo, **changes):
    return parse_scenario({**SCENARIO, "zoo": str(zoo), **changes})


def data_files(out):
    """Every data file's bytes (the shards' own records carry timings and who made them)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.safetensors"))}


def comparable(manifest):
    data = manifest.to_json()
    for shard in data["shards"].values():
        shard.pop("seconds")
        shard.pop("runtime")
    return data


@pytest.fixture(scope="module")
def alone(tiny_zoo, tmp_path_factory):
    out = tmp_path_factory.mktemp("alone") / "data"
    return out, generate(scenario(tiny_zoo), out)


def test_every_unit_goes_to_exactly_one_worker_longest_first():
    units = [Unit("v", f"a{i}", "train") for i in range(7)]
    costs = {u: c for u, c in zip(units, [5, 1, 9, 3, 3, 8, 2])}
    shares = assign(units, costs, 3)
    assert sorted(u.shard for share in shares for u in share) == sorted(u.shard for u in units)
    # 9 → w0, 8 → w1, 5 → w2, 3 → w2, 3 → w1 (tied with w2: the lower rank), 2 → w2, 1 → w0
    loads = [sum(costs[u] for u in share) for share in shares]
    assert loads == [10, 11, 10]
    assert shares[0] == [units[1], units[2]]  # in plan order within a worker
    assert assign(units, costs, 1) == [units]
    assert assign(units, costs, 3) == shares  # the same on every worker: no randomness, no talking


def test_the_point_unit_makes_one_shard_per_grid_point(tiny_zoo):
    sc = scenario(tiny_zoo, work_unit="point")
    names = [u.shard for u in plan_units(sc)]
    assert len(names) == 2 * 2 * 2 * 2 and len(set(names)) == len(names)
    assert "tiny-vgg__pgd__test__eps120.safetensors" in names
    assert sc.fingerprint() != scenario(tiny_zoo).fingerprint()  # other shards: another data set
    assert "work_unit" not in scenario(tiny_zoo).to_dict()  # data sets made before it keep their fingerprint
    with pytest.raises(Exception, match="work_unit must be"):
        scenario(tiny_zoo, work_unit="batch")


def test_workers_one_after_another_make_the_bytes_of_one_process(alone, tiny_zoo, tmp_path):
    out, whole = alone
    shared = tmp_path / "shared"
    first = generate(scenario(tiny_zoo), shared, runtime=Runtime(rank=1, world_size=3))
    assert first.status == "partial" and 0 < len(first.shards) < len(whole.shards)
    generate(scenario(tiny_zoo), shared, runtime=Runtime(rank=0, world_size=3))
    last = generate(scenario(tiny_zoo), shared, runtime=Runtime(rank=2, world_size=3))
    assert last.status == "complete"
    assert data_files(shared) == data_files(out)
    assert comparable(last) == comparable(whole)
    workers = {s.runtime["worker"] for s in read_manifest(shared).shards.values()}
    assert workers == {"0/3", "1/3", "2/3"}
    assert {s.runtime["device"] for s in last.shards.values()} == {"cpu"}


def test_a_point_shard_holds_what_the_job_made_at_that_point_for_fgsm(alone, tiny_zoo, tmp_path):
    # FGSM draws nothing per point and attacks each example on its own: alone, a point
    # takes the very examples it took beside the others
    out, _ = alone
    points = tmp_path / "points"
    generate(scenario(tiny_zoo, work_unit="point"), points, runtime=Runtime(rank=1, world_size=2))
    manifest = generate(scenario(tiny_zoo, work_unit="point"), points, runtime=Runtime(rank=0, world_size=2))
    assert manifest.status == "complete" and len(manifest.shards) == 16
    job, _ = read_tensors(out / "shards" / "tiny-resnet__fgsm__train.safetensors")
    point, _ = read_tensors(points / "shards" / "tiny-resnet__fgsm__train__eps120.safetensors")
    rows = job["hp_eps"] == 120
    assert rows.any()
    for key in ("images", "clean_index", "margin"):
        assert torch.equal(point[key], job[key][rows]), key


def test_a_shard_whose_worker_died_before_merging_is_merged_not_remade(alone, tiny_zoo, tmp_path):
    out, whole = alone
    copy = tmp_path / "copy"
    for p in out.rglob("*"):
        if p.is_file():
            (copy / p.relative_to(out)).parent.mkdir(parents=True, exist_ok=True)
            (copy / p.relative_to(out)).write_bytes(p.read_bytes())
    name = sorted(whole.shards)[0]
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["shards"][name]
    manifest["status"] = "partial"
    storage.write_json_record(copy / "manifest.json", manifest)  # as a worker killed before its merge leaves it
    made = (copy / "shards" / name).stat().st_mtime_ns
    result = CliRunner().invoke(cli, ["generate", "--scenario", "x", "--out", str(copy), "--merge"])
    assert result.exit_code == 1 and "scenario 'x' is neither a file nor a built-in" in result.output
    toml = tmp_path / "workers.toml"
    toml.write_text(_toml(tiny_zoo))
    result = CliRunner().invoke(cli, ["generate", "--scenario", str(toml), "--out", str(copy), "--merge", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "complete"
    assert (copy / "shards" / name).stat().st_mtime_ns == made
    assert comparable(read_manifest(copy)) == comparable(whole)


def test_a_damaged_shard_record_is_reported_and_its_shard_made_again(alone, tiny_zoo, tmp_path):
    out, whole = alone
    shared = tmp_path / "shared"
    generate(scenario(tiny_zoo), shared, runtime=Runtime(rank=0, world_size=2))
    mine = sorted(read_manifest(shared).shards)[0]
    record = shared / shard_record_file(mine)
    record.write_text(record.read_text().replace('"examples"', '"examples_"'))
    manifest = json.loads((shared / "manifest.json").read_text())
    del manifest["shards"][mine]
    storage.write_json_record(shared / "manifest.json", manifest)
    with pytest.warns(UserWarning, match=r"__train\.json' does not match its recorded content hash.*its shard will be made again"):
        generate(scenario(tiny_zoo), shared, runtime=Runtime(rank=0, world_size=2))
    final = generate(scenario(tiny_zoo), shared, runtime=Runtime(rank=1, world_size=2))
    assert final.status == "complete" and data_files(shared) == data_files(out)


def _toml(zoo) -> str:
    return f"""
name = "workers"
dataset = "mnist5k"
seed = 5
batch_size = 8
zoo = "{zoo}"
victims = ["tiny-resnet", "tiny-vgg"]
cells = {{ train = 3, test = 2 }}
[[attacks]]
name = "fgsm"
grid = {{ eps = [30, 120] }}
[[attacks]]
name = "pgd"
grid = {{ eps = [30, 120] }}
settings = {{ steps = 2 }}
"""
