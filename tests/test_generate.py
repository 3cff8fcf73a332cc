import json
import pytest
import torch
from click.testing import CliRunner

from attribkit.attacks import logit_margin
from attribkit.cli import cli
from attribkit.data import split_dataset
from attribkit.errors import DataError
from attribkit.generation.engine import generate
from attribkit.generation.scenario import load_scenario, parse_scenario
from attribkit.runtime import Quiet, Runtime, SilentTask
from attribkit.storage import read_tensors
from attribkit.storage.dataset import load_split, read_manifest
from attribkit.victims import load_victim

from conftest import TINY_SCENARIO as TINY


def tiny(zoo, **overrides):
    return parse_scenario({**TINY, "zoo": str(zoo), **overrides})


@pytest.fixture(scope="module")
def generated(tiny_data):
    return tiny_data, read_manifest(tiny_data)


def shard_bytes(out):
    return {p.name: p.read_bytes() for p in sorted((out / "shards").glob("*.safetensors"))}


def test_manifest_describes_a_complete_data_set(generated):
    out, manifest = generated
    assert manifest.status == "complete" and read_manifest(out).to_json() == manifest.to_json()
    assert manifest.label_spaces.attacks == ("fgsm", "pgd", "cw")
    assert manifest.label_spaces.victims == ("tiny-resnet", "tiny-vgg")
    assert manifest.label_spaces.hyperparameters["eps"].to_json() == {
        "unit": "/255", "scale": 255.0, "symbol": "ε", "attacks": ["fgsm", "pgd"]}
    assert len(manifest.shards) == 2 * 3 * 2
    assert set(manifest.versions) >= {"torch", "timm", "torchattacks", "python"}
    for shard in manifest.shards.values():
        for cell in shard.cells:
            assert cell["kept"] <= cell["succeeded"] <= cell["attempted"]
        assert shard.examples == sum(c["kept"] for c in shard.cells)
    assert manifest.totals["train"]["examples"] == sum(
        s.examples for s in manifest.shards.values() if s.split == "train")


def _rows_per_attack(manifest, split):
    return {a: sum(s.examples for s in manifest.shards.values() if s.split == split and s.attack == a)
            for a in manifest.label_spaces.attacks}


def _recomputed_margin(zoo, manifest, data):
    """Each row's margin, computed again from its victim's logits on the stored image."""
    margin = torch.full_like(data["margin"], float("nan"))
    for v, name in enumerate(manifest.label_spaces.victims):
        rows = data["victim"] == v
        with torch.no_grad():
            margin[rows] = logit_margin(load_victim(zoo, name)[0](data["images"][rows]), data["label"][rows])
    return margin


def test_examples_carry_labels_they_achieved(generated, tiny_zoo):
    out, manifest = generated
    attacks = manifest.label_spaces.attacks
    for split in ("train", "test"):
        data = load_split(out, split)
        assert {a: int((data["attack"] == i).sum()) for i, a in enumerate(attacks)} == _rows_per_attack(manifest, split)
        assert data["success"].all()
        assert data["images"].min() >= 0 and data["images"].max() <= 1
        linf_attack = data["attack"] != attacks.index("cw")
        assert (data["linf"][linf_attack] <= data["hp_eps"][linf_attack] / 255 + 1e-6).all()
        assert torch.isnan(data["hp_kappa"][linf_attack]).all() and torch.isnan(data["hp_eps"][~linf_attack]).all()
        # the victim, asked again, gives the margin that earned each row its label
        margin = _recomputed_margin(tiny_zoo, manifest, data)
        assert torch.allclose(margin, data["margin"], atol=1e-4)
        cw = ~linf_attack
        assert (margin[cw] >= data["hp_kappa"][cw] - 1e-4).all()
        assert (data["pred"] != data["label"]).all()


@pytest.fixture(scope="module")
def with_failures(tiny_zoo, tmp_path_factory):
    """Every attempted example kept: each cell holds exactly its quota, success or not."""
    sc = tiny(tiny_zoo, victims=["tiny-resnet"], keep_failed=True, max_attempts_factor=1)
    out = tmp_path_factory.mktemp("kept") / "all"
    return sc, out, generate(sc, out)


def test_kept_failures_are_marked_by_the_attacks_own_criterion(with_failures):
    sc, out, manifest = with_failures
    attacks = manifest.label_spaces.attacks
    for split, quota in (("train", sc.train_per_cell), ("test", sc.test_per_cell)):
        data = load_split(out, split)
        assert _rows_per_attack(manifest, split) == {a.name: quota * len(a.points()) for a in sc.attacks}
        cw = data["attack"] == attacks.index("cw")
        assert torch.equal(data["success"][cw], data["margin"][cw] >= data["hp_kappa"][cw])
        assert torch.equal(data["success"][~cw], data["pred"][~cw] != data["label"][~cw])
        assert (data["linf"][~cw] <= data["hp_eps"][~cw] / 255 + 1e-6).all()


def test_no_clean_image_is_in_both_splits(generated, mnist):
    out, _ = generated
    train, test = load_split(out, "train"), load_split(out, "test")
    split = split_dataset(mnist.labels, 0.2, seed=7)
    assert set(train["clean_index"].tolist()) <= set(split.train.tolist())
    assert set(test["clean_index"].tolist()) <= set(split.test.tolist())
    clean, _ = read_tensors(out / "clean.safetensors")
    assert torch.equal(clean["images"][train["clean_index"]], mnist.images[train["clean_index"]])
    assert torch.equal(train["label"], mnist.labels[train["clean_index"]])


class InterruptAfter(Quiet):
    """A progress sink that stops generation (as Ctrl-C would) when the N-th job's bar is done."""

    def __init__(self, jobs):
        self.left = jobs

    def task(self, description, total, completed=0):
        sink = self

        class Job(SilentTask):
            def done(self, info=None, keep=True):
                if description != "all cells":
                    sink.left -= 1
                    if sink.left == 0:
                        raise KeyboardInterrupt
        return Job()


def test_resume_after_interruption_keeps_finished_shards_and_matches(generated, tiny_zoo, tmp_path):
    """Also proves that the same seed gives the same data, byte for byte: it is compared with another run."""
    out, _ = generated
    target = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        generate(tiny(tiny_zoo), target, runtime=Runtime(progress=InterruptAfter(3)))
    partial = read_manifest(target)
    assert partial.status == "partial" and len(partial.shards) == 3
    kept = {p.name: p.stat().st_mtime_ns for p in (target / "shards").glob("*.safetensors")}
    assert len(kept) == 3
    final = generate(tiny(tiny_zoo), target)
    assert final.status == "complete"
    assert all((target / "shards" / name).stat().st_mtime_ns == t for name, t in kept.items())
    assert shard_bytes(target) == shard_bytes(out)


def test_out_of_another_scenario_is_refused_and_left_alone(generated, tiny_zoo):
    out, _ = generated
    before = shard_bytes(out)
    with pytest.raises(DataError, match="holds data of scenario 'tiny' with other settings"):
        generate(tiny(tiny_zoo, seed=8), out)
    assert shard_bytes(out) == before and read_manifest(out).status == "complete"


def test_foreign_non_empty_out_is_refused(tiny_zoo, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty and holds no attribkit data set"):
        generate(tiny(tiny_zoo), tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_failed_attacks_are_excluded_and_counted(tiny_zoo, tmp_path):
    # no optimisation step: C&W hands back each clean image, which the victim classifies
    # correctly (margin < 0), so it never reaches κ = 1 and every attempt fails, on any machine
    sc = tiny(tiny_zoo, victims=["tiny-resnet"], attacks=[{"name": "cw", "grid": {"kappa": [1]},
                                                           "settings": {"steps": 0}}], max_attempts_factor=2)
    manifest = generate(sc, tmp_path / "fail")
    quota = {"train": sc.train_per_cell, "test": sc.test_per_cell}
    for shard in manifest.shards.values():
        (cell,) = shard.cells
        assert shard.examples == 0 and cell["succeeded"] == 0 and cell["kept"] == 0
        batches = -(-int(sc.max_attempts_factor * quota[shard.split]) // sc.batch_size)
        assert cell["attempted"] == batches * sc.batch_size
    data = load_split(tmp_path / "fail", "train")
    assert data["images"].shape == (0, 1, 28, 28) and len(data["hp_kappa"]) == 0


def test_cli_generate_json_and_resume(tiny_zoo, tmp_path):
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(
        'name = "cli"\ndataset = "mnist5k"\nvictims = ["tiny-resnet"]\nbatch_size = 8\n'
        '[cells]\ntrain = 2\ntest = 1\n[[attacks]]\nname = "fgsm"\ngrid.eps = [50, 100]\n')
    args = ["generate", "--scenario", str(scenario), "--out", str(tmp_path / "d"), "--zoo", str(tiny_zoo), "--json"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert summary["status"] == "complete"
    (cell,) = summary["cells"]
    assert (cell["attack"], cell["victim"]) == ("fgsm", "tiny-resnet")
    shards = read_manifest(tmp_path / "d").shards.values()
    for key in ("attempted", "succeeded"):
        assert cell[key] == sum(c[key] for s in shards for c in s.cells)
    assert cell["success_rate"] == round(cell["succeeded"] / cell["attempted"], 4)
    sc = load_scenario(scenario)
    quota = {"train": sc.train_per_cell, "test": sc.test_per_cell}
    for s in shards:
        assert cell[s.split] == s.examples == sum(c["kept"] for c in s.cells)
        for c in s.cells:  # the engine's stopping rule, batch by batch
            budget = sc.max_attempts_factor * quota[s.split]
            assert c["attempted"] % sc.batch_size == 0 and sc.batch_size <= c["attempted"] < budget + sc.batch_size
            assert c["kept"] == min(quota[s.split], c["succeeded"])
            assert c["kept"] == quota[s.split] or c["attempted"] >= budget
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and json.loads(again.stdout)["cells"] == summary["cells"]


@pytest.mark.parametrize("argv, message", [
    (["generate", "--scenario", "nope.toml", "--out", "x"], "neither a file nor a built-in"),
    (["list", "victims"], None),
    (["victims", "train", "--arch", "resnet19", "--out", "z"], "unknown victim 'resnet19'"),
    (["victims", "train", "--dataset", "cifar", "--out", "z"], "unknown dataset 'cifar'"),
])
def test_cli_errors_are_one_line_without_traceback(argv, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, argv)
    if message is None:
        assert result.exit_code == 0
        return
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert "Traceback" not in result.output


def test_cli_generate_missing_victim_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["generate", "--scenario", "quick", "--out", "d", "--zoo", "emptyzoo"])
    assert result.exit_code == 1
    assert "victim 'resnet18' is not in zoo 'emptyzoo' (run `attribkit victims train` first)" in result.stderr
    assert not (tmp_path / "d").exists()


def test_any_timm_model_with_a_local_checkpoint_is_a_victim(tmp_path, mnist):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = timm.create_model("test_resnet", pretrained=False, num_classes=10, in_chans=1)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    order = torch.randperm(len(mnist.images))
    for i in range(0, 1000, 50):  # an untrained net predicts one class: every clean image it attacks is one digit
        idx = order[i:i + 50]
        loss = torch.nn.functional.cross_entropy(net((mnist.images[idx] - 0.5) / 0.5), mnist.labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    save_file(net.state_dict(), str(tmp_path / "mine.safetensors"))
    sc = parse_scenario({**TINY, "victims": [{"name": "mine", "timm": "test_resnet",
                                              "checkpoint": str(tmp_path / "mine.safetensors"),
                                              "mean": [0.5], "std": [0.5]}],
                         "attacks": [{"name": "fgsm", "grid": {"eps": [200]}}], "keep_failed": True,
                         "max_attempts_factor": 1})
    manifest = generate(sc, tmp_path / "out")
    victim = manifest.victims["mine"]
    assert victim["timm_name"] == "test_resnet" and victim["architecture"] == "" and victim["mean"] == [0.5]
    data = load_split(tmp_path / "out", "train")
    assert len(data["images"]) == sc.train_per_cell
    with torch.no_grad():
        expected = net.eval()((mnist.images[data["clean_index"]] - 0.5) / 0.5).argmax(1)
    assert torch.equal(expected, data["label"])  # only images the checkpoint classified correctly were attacked


def test_generate_with_more_attacks_and_mixed_hyperparameters(tiny_zoo, tmp_path):
    sc = tiny(tiny_zoo, victims=["tiny-resnet"], cells={"train": 2, "test": 1}, batch_size=4, attacks=[
        {"name": "bim", "grid": {"eps": [60]}, "settings": {"steps": 3}},
        {"name": "mifgsm", "grid": {"eps": [60]}, "settings": {"steps": 3}},
        {"name": "deepfool", "grid": {"overshoot": [0.02, 0.5]}, "settings": {"steps": 10}},
        {"name": "square", "grid": {"eps": [100]}, "settings": {"n_queries": 30}}],
        keep_failed=True, max_attempts_factor=1)
    manifest = generate(sc, tmp_path / "more")
    spaces = manifest.label_spaces
    assert spaces.attacks == ("bim", "mifgsm", "deepfool", "square")
    assert spaces.hyperparameters["overshoot"].attacks == ("deepfool",)
    assert spaces.attack_info["deepfool"].norm == "L2"
    data = load_split(tmp_path / "more", "train")
    counts = torch.bincount(data["attack"], minlength=4).tolist()
    assert counts == [sc.train_per_cell * len(a.points()) for a in sc.attacks]  # failures kept: no cell is empty
    deepfool = data["attack"] == 2
    assert torch.isnan(data["hp_eps"][deepfool]).all() and not torch.isnan(data["hp_eps"][~deepfool]).any()
    overshoot = torch.tensor([0.02, 0.5])  # stored as float32
    assert sorted(data["hp_overshoot"][deepfool].tolist()) == overshoot.repeat_interleave(sc.train_per_cell).tolist()
    assert torch.equal(data["success"], data["pred"] != data["label"])  # all untargeted: success is a wrong class


def test_targeted_attacks_get_random_other_targets_and_succeed_only_on_them(tiny_zoo, tiny_resnet, tmp_path):
    sc = tiny(tiny_zoo, victims=["tiny-resnet"], cells={"train": 6, "test": 1}, batch_size=8, keep_failed=True,
              max_attempts_factor=1, attacks=[
                  {"name": "fgsm", "grid": {"eps": [60]}},
                  {"name": "pgd_targeted", "grid": {"eps": [30, 120]}, "settings": {"steps": 5}}])
    manifest = generate(sc, tmp_path / "targeted")
    assert manifest.label_spaces.attack_info["pgd_targeted"].targeted is True
    data = load_split(tmp_path / "targeted", "train")
    targeted = data["attack"] == 1
    assert (data["target"][~targeted] == -1).all()
    assert (data["target"][targeted] != data["label"][targeted]).all()
    assert len(set(data["target"][targeted].tolist())) > 1  # random, not a fixed shift
    # success means the victim predicts the target, not merely a wrong class
    assert torch.equal(data["success"][targeted], data["pred"][targeted] == data["target"][targeted])
    # a targeted margin is the target's logit over the best other one, from the victim's own logits
    with torch.no_grad():
        logits = tiny_resnet(data["images"][targeted])
    assert torch.allclose(data["margin"][targeted], -logit_margin(logits, data["target"][targeted]), atol=1e-4)


def test_pilot_stops_a_hopeless_grid_point_and_keeps_every_other_example(tiny_zoo, tmp_path):
    # κ = 10⁴ is out of any tiny victim's reach in 25 steps; κ = 1 is within it
    attacks = [{"name": "cw", "grid": {"kappa": [1, 10000]}, "settings": {"steps": 25}}]
    plain = generate(tiny(tiny_zoo, victims=["tiny-resnet"], attacks=attacks, max_attempts_factor=8), tmp_path / "a")
    piloted = generate(tiny(tiny_zoo, victims=["tiny-resnet"], attacks=attacks, max_attempts_factor=8, pilot=8),
                       tmp_path / "b")
    assert "pilot" not in plain.scenario and piloted.scenario["pilot"] == 8
    assert plain.fingerprint != piloted.fingerprint  # other data: a pilot run never resumes a plain one
    for shard, cells in ((s, piloted.shards[s].cells) for s in plain.shards):
        reachable, hopeless = cells
        assert hopeless["succeeded"] == 0 and hopeless["stopped_by_pilot"]
        assert hopeless["attempted"] == 8 < plain.shards[shard].cells[1]["attempted"]
        assert "stopped_by_pilot" not in reachable and reachable == plain.shards[shard].cells[0]
        a, _ = read_tensors(tmp_path / "a" / "shards" / shard)
        b, _ = read_tensors(tmp_path / "b" / "shards" / shard)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the same examples, bit for bit


def test_a_scenario_without_pilot_keeps_its_fingerprint(tiny_zoo):
    assert tiny(tiny_zoo).fingerprint() == tiny(tiny_zoo, pilot=0).fingerprint()
    with pytest.raises(Exception, match="pilot"):
        tiny(tiny_zoo, pilot=-1)
    with pytest.raises(Exception, match="pilot and keep_failed"):
        tiny(tiny_zoo, pilot=8, keep_failed=True)
