"""On a GPU: every stage runs there, and the hot loops (an attack's steps, a training
step) never make the host wait for the device. Skipped where there is no CUDA GPU;
run it wherever there is one (README, "Scaling out")."""

import json
import traceback
import warnings
from contextlib import contextmanager

import pytest
import torch

from attribkit import Runtime, attribute, train
from attribkit.storage import save_tensors
from attribkit.generation.engine import generate
from attribkit.generation.scenario import parse_scenario
from attribkit.training.config import TrainConfig
from attribkit.training.data import load_attribution_data
from attribkit.training.models import applicable_heads, build_members, fit_heads
from attribkit.training.run import load_run
from attribkit.training.trainer import Objective

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")

from conftest import TINY_SCENARIO  # noqa: E402


@contextmanager
def host_syncs():
    """Collects every place in attribkit where the host waited for the GPU inside the block
    ("file:line" of attribkit's innermost frame), so that one run names them all: the "error"
    mode of set_sync_debug_mode stops at the first."""
    found: list[str] = []

    def record(message, category, filename, lineno, file=None, line=None):
        if "called a synchronizing" in str(message):
            ours = [f for f in traceback.extract_stack() if "/attribkit/" in f.filename]
            found.append(f"{ours[-1].filename}:{ours[-1].lineno}" if ours else f"{filename}:{lineno}")

    torch.cuda.synchronize()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield found
        finally:
            torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("attack, settings", [("fgsm", {}), ("pgd", {"steps": 5}),
                                              ("cw", {"steps": 20})])
def test_attacks_run_on_the_gpu_without_waiting_for_it(tiny_resnet, mnist, attack, settings):
    from attribkit import plugins

    spec = plugins.registry().get("attacks", attack)
    model = tiny_resnet.to("cuda")
    x, y = mnist.images[:16].to("cuda"), mnist.labels[:16].to("cuda")
    grid = [{h.name: h.to_natural(h.grid[0])} for h in spec.hyperparameters]
    with host_syncs() as syncs:
        advs = spec.run(model, x, y, grid, {**spec.settings, **settings})
    assert syncs == []
    assert all(a.device.type == "cuda" and a.shape == x.shape for a in advs)
    tiny_resnet.to("cpu")


def test_a_training_step_does_not_wait_for_the_gpu(tiny_data):
    data = load_attribution_data(tiny_data, "train")
    config = TrainConfig(width=0.125, input_scale=1)
    heads = fit_heads(applicable_heads(data.columns, config), data.labels, data.label_spaces, config)
    (member,) = build_members(config, data.label_spaces, {h: {"mean": 0.0, "std": 1.0} for h in
                                                          data.label_spaces.hp_names + ["*"]},
                              data.columns, 1, 28, heads).values()
    member.net.to("cuda")
    member.weighting.to("cuda")
    objective = Objective(member, config.ae_weight).train()
    opt = torch.optim.Adam(objective.parameters(), lr=1e-3)
    idx = torch.arange(16)
    x, clean, labels = data.images[idx].cuda(), data.clean[idx].cuda(), data.labels.take(idx).to("cuda")
    with host_syncs() as syncs:
        for _ in range(3):
            loss = objective(x, clean, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    assert syncs == []
    assert torch.isfinite(loss).item()


def test_the_pipeline_runs_on_the_gpu_and_records_it(tiny_zoo, tmp_path):
    rt = Runtime(device="cuda")
    sc = parse_scenario({**TINY_SCENARIO, "zoo": str(tiny_zoo)})
    manifest = generate(sc, tmp_path / "data", runtime=rt)
    assert manifest.status == "complete"
    assert all(s.runtime["device"].startswith("cuda:0") and s.runtime["tf32"] is False
               for s in manifest.shards.values())
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"run-{precision}"
        train(tmp_path / "data", TrainConfig(width=0.125, epochs=1, input_scale=1), out,
              runtime=Runtime(device="cuda", precision=precision))
        recorded = json.loads((out / "run.json").read_text())["runtime"]
        assert recorded["precision"] == precision and recorded["device"].startswith("cuda:0")
        meta, members = load_run(out)  # a run trained on the GPU loads on the CPU
        assert next(members[meta.members[0]].net.parameters()).device.type == "cpu"
    batch = tmp_path / "suspects.safetensors"
    save_tensors(batch, {"images": load_attribution_data(tmp_path / "data", "test").images[:5]})
    on_gpu = attribute(tmp_path / "run-fp32", [str(batch)], runtime=Runtime(device="cuda"))
    on_cpu = attribute(tmp_path / "run-fp32", [str(batch)])
    assert [r["attack"] for r in on_gpu["results"]] == [r["attack"] for r in on_cpu["results"]]
