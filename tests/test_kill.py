"""SIGKILL, not an exception: each command is killed at seeded points — at a
chosen write, before or after its rename (the ATTRIBKIT_FAILPOINT hook in
attribkit.storage), and once from outside at a seeded moment — then run again
until it finishes. The result must be byte-identical to an uninterrupted run.

The process boundary is the point here, so these tests start real processes.
Every run, the uninterrupted one included, is a fresh process of the same
interpreter on the same machine: bytes are compared within one machine only.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from attribkit import storage

pytestmark = pytest.mark.slow

ENV = {**os.environ, "ATTRIBKIT_DISABLE_PLUGIN_AUTOLOAD": "1", "GIT_PYTHON_REFRESH": "quiet"}
ENV.pop(storage.FAILPOINT_ENV, None)


def attribkit(*argv, failpoint=None, kill_after=None, seed=0):
    """Run ``attribkit ARGV`` in a new process; SIGKILL it at a failpoint
    ("N:before-rename" / "N:after-rename"), or from outside: ``kill_after`` =
    (file, seconds) waits for the file to exist (None: for nothing), then the
    seconds. Returns the exit code (-9 when killed)."""
    env = {**ENV, **({storage.FAILPOINT_ENV: failpoint} if failpoint else {})}
    proc = subprocess.Popen([sys.executable, "-m", "attribkit", *map(str, argv)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if kill_after:
        marker, delay = kill_after
        while marker is not None and proc.poll() is None and not marker.exists():
            time.sleep(0.02)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"attribkit {' '.join(map(str, argv))} failed: {err.decode()}")
    return proc.returncode


def seeded_failpoints(seed, count, highest):
    rng = random.Random(seed)
    return [f"{rng.randint(1, highest)}:{rng.choice(['before-rename', 'after-rename'])}" for _ in range(count)]


def files_of(folder):
    """Every file's bytes, leaving out temporaries of killed writes and the lock workers share."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.endswith(".tmp") and p.name != storage.LOCK}


def without_timings(record):
    """A JSON record minus what differs between any two runs: wall-clock seconds and the hash over them."""
    if isinstance(record, dict):
        return {k: without_timings(v) for k, v in record.items() if k not in ("seconds", "content_sha256")}
    if isinstance(record, list):
        return [without_timings(v) for v in record]
    return record


SCENARIO = """
name = "kill"
dataset = "mnist5k"
seed = 3
victims = ["tiny-resnet"]
batch_size = 8
[cells]
train = 4
test = 2
[[attacks]]
name = "fgsm"
grid.eps = [30, 120]
[[attacks]]
name = "pgd"
grid.eps = [30, 120]
settings = { steps = 5 }
[[attacks]]
name = "cw"
grid.kappa = [1, 2]
settings = { steps = 15 }
"""


def test_generate_killed_at_seeded_points_resumes_to_the_same_bytes(tiny_zoo, tmp_path):
    scenario = tmp_path / "kill.toml"
    scenario.write_text(SCENARIO)
    args = lambda out: ("generate", "--scenario", scenario, "--out", out, "--zoo", tiny_zoo)
    assert attribkit(*args(tmp_path / "whole")) == 0
    out = tmp_path / "killed"
    # a fresh run writes clean + manifest, then shard, its record and the manifest per job; a
    # resumed one writes the manifest first: writes 1-3 exist in every run that has a job left
    for point in seeded_failpoints(seed=10, count=4, highest=3):
        assert attribkit(*args(out), failpoint=point) == -signal.SIGKILL, point
    attribkit(*args(out), kill_after=(out / "manifest.json", random.Random(11).uniform(0.2, 1.5)))
    assert attribkit(*args(out)) == 0

    whole, killed = files_of(tmp_path / "whole"), files_of(out)
    manifest = json.loads(killed.pop("manifest.json"))
    assert manifest["status"] == "complete"
    assert without_timings(manifest) == without_timings(json.loads(whole.pop("manifest.json")))
    records = sorted(name for name in whole if name.endswith(".json"))  # each shard's own, with its seconds
    assert records == sorted(name for name in killed if name.endswith(".json")) and len(records) == 6
    for name in records:
        assert without_timings(json.loads(killed.pop(name))) == without_timings(json.loads(whole.pop(name)))
    assert killed == whole and len(killed) == 1 + 6  # clean + one shard per (attack, split)
    verified = subprocess.run([sys.executable, "-m", "attribkit", "verify", str(out)], env=ENV, capture_output=True)
    assert verified.returncode == 0, verified.stderr.decode()


def test_victims_train_killed_at_seeded_points_leaves_no_half_victim(tmp_path):
    args = lambda zoo: ("victims", "train", "--out", zoo, "--arch", "resnet18", "--arch", "vgg16",
                        "--width", 1 / 16, "--epochs", 1)
    assert attribkit(*args(tmp_path / "whole")) == 0
    zoo = tmp_path / "killed"
    # weights, then the record that makes a victim count: a kill in between leaves no victim
    assert attribkit(*args(zoo), failpoint="2:before-rename") == -signal.SIGKILL
    assert (zoo / "resnet18.safetensors").exists() and not list(zoo.glob("*.json"))
    assert attribkit(*args(zoo), failpoint="3:after-rename") == -signal.SIGKILL  # resnet18 done, vgg16 half
    assert sorted(p.name for p in zoo.glob("*.json")) == ["resnet18.json"]
    finished = (zoo / "resnet18.safetensors").stat().st_mtime_ns
    assert attribkit(*args(zoo)) == 0
    assert (zoo / "resnet18.safetensors").stat().st_mtime_ns == finished  # kept, not trained again
    whole, killed = files_of(tmp_path / "whole"), files_of(zoo)
    assert sorted(killed) == sorted(whole) == ["resnet18.json", "resnet18.safetensors", "vgg16.json", "vgg16.safetensors"]
    for name in whole:
        if name.endswith(".json"):
            assert without_timings(json.loads(killed[name])) == without_timings(json.loads(whole[name]))
        else:
            assert killed[name] == whole[name], name


def test_train_killed_at_any_moment_leaves_nothing_to_trip_on(tiny_data, tmp_path):
    args = lambda out: ("train", "--data", tiny_data, "--out", out, "--width", 0.125, "--epochs", 1,
                        "--batch-size", 16, "--input-scale", 1)
    assert attribkit(*args(tmp_path / "whole")) == 0
    out = tmp_path / "runs" / "killed"
    # the run's four files are written into a hidden sibling folder, renamed into place at the end
    for point in seeded_failpoints(seed=20, count=3, highest=4):
        assert attribkit(*args(out), failpoint=point) == -signal.SIGKILL, point
        assert not out.exists()
    # and once from outside, at a seeded moment: most of a run's time is training, which writes nothing
    if attribkit(*args(out), kill_after=(None, random.Random(21).uniform(2.5, 4.5))) == -signal.SIGKILL:
        assert not out.exists()
        assert attribkit(*args(out)) == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["killed"]  # no leftovers beside it
    whole, killed = files_of(tmp_path / "whole"), files_of(out)
    assert killed["weights.safetensors"] == whole["weights.safetensors"]
    assert killed["metrics.json"] == whole["metrics.json"] and killed["metrics.csv"] == whole["metrics.csv"]
    assert without_timings(json.loads(killed["run.json"])) == without_timings(json.loads(whole["run.json"]))
