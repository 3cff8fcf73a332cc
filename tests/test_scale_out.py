"""Several real worker processes: for generate, torchrun (the launcher we
document), a worker killed half-way, and two job-array workers started at once,
whatever the number of workers, the data files must be byte-identical to one
process's; for train, two gloo workers (DistributedDataParallel).

Every process gets one thread (OMP_NUM_THREADS=1): torchrun sets that when it
starts several workers, and a CPU reduction may add in another order with
another thread count, so the single process must run with it too.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from attribkit import storage

pytestmark = pytest.mark.slow

ENV = {**os.environ, "ATTRIBKIT_DISABLE_PLUGIN_AUTOLOAD": "1", "GIT_PYTHON_REFRESH": "quiet",
       "OMP_NUM_THREADS": "1", "ATTRIBKIT_DEVICE": "cpu"}
for leftover in (storage.FAILPOINT_ENV, "RANK", "WORLD_SIZE", "LOCAL_RANK"):
    ENV.pop(leftover, None)

SCENARIO = """
name = "scale-out"
dataset = "mnist5k"
seed = 11
batch_size = 8
victims = ["tiny-resnet", "tiny-vgg"]
cells = { train = 3, test = 2 }
[[attacks]]
name = "fgsm"
grid = { eps = [30, 120] }
[[attacks]]
name = "pgd"
grid = { eps = [30, 120] }
settings = { steps = 3 }
[[attacks]]
name = "cw"
grid = { kappa = [1, 2] }
settings = { steps = 10 }
"""
UNITS = 2 * 3 * 2  # victims × attacks × splits


def command(scenario, out, zoo, *extra):
    return ["-m", "attribkit", "generate", "--scenario", str(scenario), "--out", str(out), "--zoo", str(zoo), *extra]


def torchrun(workers: int, *argv, env=None):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                           str(workers), *argv], env=env or ENV, capture_output=True, timeout=600)


def data_files(out):
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.safetensors"))}


def manifest_of(out):
    """The manifest minus what differs between any two runs: seconds, who made each shard, the hash over them."""
    data = json.loads((out / "manifest.json").read_text())
    data.pop("content_sha256")
    workers = set()
    for shard in data["shards"].values():
        shard.pop("seconds")
        workers.add(shard.pop("runtime")["worker"])
    return data, workers


@pytest.fixture(scope="module")
def setup(tiny_zoo, tmp_path_factory):
    """The scenario, and the data set one process makes of it."""
    root = tmp_path_factory.mktemp("scale")
    scenario = root / "scale.toml"
    scenario.write_text(SCENARIO)
    alone = root / "alone"
    done = subprocess.run([sys.executable, *command(scenario, alone, tiny_zoo)], env=ENV, capture_output=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr.decode()
    return scenario, alone


def test_torchrun_with_two_workers_makes_the_bytes_of_one_process(setup, tiny_zoo, tmp_path):
    scenario, alone = setup
    out = tmp_path / "torchrun"
    done = torchrun(2, *command(scenario, out, tiny_zoo, "--device", "cpu"))
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert data_files(out) == data_files(alone) and len(data_files(out)) == 1 + UNITS
    ours, workers = manifest_of(out)
    theirs, _ = manifest_of(alone)
    assert ours == theirs and ours["status"] == "complete"
    assert workers == {"0/2", "1/2"}  # both did work


def test_a_worker_killed_after_its_first_unit_is_finished_by_one_process(setup, tiny_zoo, tmp_path):
    scenario, alone = setup
    out = tmp_path / "killed"
    # worker 1 SIGKILLs itself after its first unit; torchrun then stops worker 0 too
    killed = torchrun(2, *command(scenario, out, tiny_zoo), env={**ENV, storage.FAILPOINT_ENV: "1:after-job@1"})
    assert killed.returncode != 0
    partial, workers = manifest_of(out)
    assert partial["status"] == "partial" and "1/2" in workers and len(partial["shards"]) < UNITS
    resumed = subprocess.run([sys.executable, *command(scenario, out, tiny_zoo)], env=ENV, capture_output=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert data_files(out) == data_files(alone)
    assert manifest_of(out)[0] == manifest_of(alone)[0]
    verified = subprocess.run([sys.executable, "-m", "attribkit", "verify", str(out)], env=ENV, capture_output=True)
    assert verified.returncode == 0, verified.stderr.decode()


def test_two_job_array_workers_started_at_once_on_an_empty_folder(setup, tiny_zoo, tmp_path):
    scenario, alone = setup
    out = tmp_path / "array"
    workers = [subprocess.Popen([sys.executable, *command(scenario, out, tiny_zoo, "--shard", f"{i}/2")], env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for i in (0, 1)]
    for worker in workers:
        _, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err.decode()
    assert data_files(out) == data_files(alone)
    ours, made_by = manifest_of(out)
    assert ours == manifest_of(alone)[0] and made_by == {"0/2", "1/2"}


WORKER = str(Path(__file__).with_name("ddp_worker.py"))


def test_two_gloo_workers_train_to_identical_weights(tiny_data, tmp_path):
    out = tmp_path / "run"
    done = torchrun(2, WORKER, "epoch", str(tiny_data), str(out))
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    ranks = [load_file(f"{out}.rank{r}.safetensors") for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])  # DDP kept the replicas in step
    meta = json.loads((out / "run.json").read_text())  # worker 0 wrote the run
    assert meta["runtime"]["workers"] == 2 and meta["final_test_metrics"]["examples"] > 0
    written = load_file(out / "weights.safetensors")
    assert all(torch.equal(written[f"mtaa/{k}"], v) for k, v in ranks[0].items())


def test_one_step_of_two_workers_matches_one_process(tiny_data, tmp_path):
    # with BatchNorm frozen every example's gradient is its own, and the average of the two
    # workers' mean gradients is the mean over the whole batch; only the summation order differs
    alone = subprocess.run([sys.executable, WORKER, "step", str(tiny_data), str(tmp_path / "alone")], env=ENV,
                           capture_output=True, timeout=600)
    assert alone.returncode == 0, alone.stderr.decode()[-3000:]
    done = torchrun(2, WORKER, "step", str(tiny_data), str(tmp_path / "two"))
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    one, two = load_file(tmp_path / "alone.rank0.safetensors"), load_file(tmp_path / "two.rank0.safetensors")
    assert one.keys() == two.keys() and any(k.startswith("grad.") for k in one)
    for key in one:
        assert torch.allclose(one[key], two[key], rtol=1e-4, atol=1e-6), key
    other = load_file(tmp_path / "two.rank1.safetensors")
    assert all(torch.equal(two[k], other[k]) for k in two)  # and both workers took the same step
