"""The Runtime: which device, which numerics, which worker of how many."""

import os

import pytest
import torch
from click.testing import CliRunner

from attribkit import Runtime
from attribkit.cli import cli
from attribkit.errors import AttribkitError
from attribkit.runtime import parse_shard, resolve_device, worker_from_env

NO_GPU = not torch.cuda.is_available()


def test_cpu_and_auto_resolve_to_a_device_that_exists_here():
    assert Runtime().device == torch.device("cpu")
    assert resolve_device("CPU ") == torch.device("cpu")
    assert resolve_device("auto") == (torch.device("cuda", 0) if not NO_GPU else torch.device("cpu"))


@pytest.mark.parametrize("spec", ["mps", "gpu", "cuda:x", "cuda:-1", "", "cpu:0:1"])
def test_an_unknown_device_is_one_clear_error(spec):
    with pytest.raises(AttribkitError, match="expected cpu, cuda, cuda:N, or auto"):
        Runtime(device=spec)


@pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_asking_for_a_gpu_where_there_is_none_says_so(spec):
    with pytest.raises(AttribkitError, match="no CUDA GPU is usable here.*use --device cpu or auto"):
        Runtime(device=spec)


def test_precision_and_workers_are_checked():
    with pytest.raises(AttribkitError, match="precision 'fp8'"):
        Runtime(precision="fp8")
    with pytest.raises(AttribkitError, match="fp16 needs a GPU"):
        Runtime(precision="fp16")
    with pytest.raises(AttribkitError, match="worker 2 of 2"):
        Runtime(rank=2, world_size=2)
    assert Runtime(precision="bf16", rank=1, world_size=3).numerics == {
        "device": "cpu", "dtype": "float32", "tf32": False, "precision": "bf16"}
    assert Runtime(tf32=True).numerics["tf32"] is False  # TF32 is a CUDA rounding: on the CPU it never applies


def test_autocast_is_on_only_for_mixed_precision():
    x = torch.ones(2, 2)
    with Runtime().autocast():
        assert (x @ x).dtype == torch.float32
    with Runtime(precision="bf16").autocast():
        assert (x @ x).dtype == torch.bfloat16


@pytest.mark.parametrize("text, expected", [("0/1", (0, 1)), ("3/8", (3, 8)), (" 1 / 2 ", (1, 2))])
def test_shard_names_a_worker(text, expected):
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["2/2", "1", "a/b", "-1/2", "0/0", "1/2/3"])
def test_a_shard_that_names_no_worker_is_refused(text):
    with pytest.raises(AttribkitError, match="expected i/n with 0 ≤ i < n"):
        parse_shard(text)


def test_the_worker_comes_from_torchrun_s_environment(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert worker_from_env() == (0, 1)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert worker_from_env() == (1, 4)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(AttribkitError, match="RANK='4' and WORLD_SIZE='4' do not name a worker"):
        worker_from_env()


def test_the_cli_refuses_contradicting_workers_and_commands_that_run_alone(monkeypatch, tmp_path):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = CliRunner().invoke(cli, ["generate", "--scenario", "quick", "--out", str(tmp_path / "d"),
                                      "--shard", "0/2"])
    assert result.exit_code == 1 and "--shard 0/2 contradicts torchrun's RANK=1 WORLD_SIZE=2" in result.output
    result = CliRunner().invoke(cli, ["attribute", "--run", str(tmp_path), "x.png"])
    assert result.exit_code == 1 and "runs as one process, not as worker 1 of 2" in result.output
    assert not (tmp_path / "d").exists()


def test_every_computing_command_takes_a_device(monkeypatch):
    for argv in (["victims", "train"], ["generate"], ["train"], ["attribute"], ["evaluate"], ["demo"]):
        text = CliRunner().invoke(cli, [*argv, "--help"]).output
        assert "--device" in text and "--tf32" in text, argv
    assert "--precision" in CliRunner().invoke(cli, ["train", "--help"]).output
    result = CliRunner().invoke(cli, ["victims", "train", "--device", "tpu"])
    assert result.exit_code == 1 and "device 'tpu': expected cpu" in result.output
    assert os.environ["ATTRIBKIT_DEVICE"] == "cpu"  # conftest: the CLI's default here


def test_training_as_a_worker_outside_torchrun_says_how_to_start_it(monkeypatch, tmp_path):
    from attribkit import train
    from attribkit.training.config import TrainConfig

    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(AttribkitError, match="worker 1 of 2: MASTER_ADDR and MASTER_PORT not set; start the workers "
                                             "with torchrun"):
        train(tmp_path / "data", TrainConfig(), tmp_path / "run", runtime=Runtime(rank=1, world_size=2))
    assert not (tmp_path / "run").exists()
