"""The paper's ImageNet setting, end to end on CPU: 224-px colour images, an
external timm victim loaded from the user's safetensors checkpoint with
ImageNet normalisation, and a ResNet-101 attributor.

Nothing is downloaded: the images are the 20 ImageNet samples foolbox ships,
and the victim is a small timm network fitted to them here and saved as the
"pretrained" checkpoint. These tests prove the path, not accuracy.
"""

import json
import re
import runpy
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import save_file

from attribkit.attribution import attribute
from attribkit.cli import cli
from attribkit.data import load_dataset, split_dataset
from attribkit.errors import AttribkitError, DataError
from attribkit.evaluation import evaluate
from attribkit.generation.engine import generate
from attribkit.generation.scenario import NORMALIZATIONS, VictimRef, parse_scenario
from attribkit.generation.victims import resolve_victim
from attribkit.specs import Dataset
from attribkit.storage.dataset import load_split
from attribkit.training.config import TrainConfig
from attribkit.training.run import input_shape, load_run
from attribkit.training.trainer import train
from attribkit.victims.model import Victim

# 1.6 M parameters: one fitting step on 17 images at 224 px takes about a quarter of a second on 2 cores
VICTIM = "mobilenetv3_small_050"
# 19 classes among 20 images, one (609) twice: the split is stratified per class, and rounds a lone image's
# test share to none up to test_fraction 0.5 and the twins' to one above 0.25: 0.4 gives 19 train, 1 test
TEST_FRACTION, SEED = 0.4, 3
FIT_MARGIN = 1.0  # logits apart: far beyond what channels-last or another CPU changes in a prediction
DOCS = Path(__file__).resolve().parents[1] / "docs" / "imagenet.md"


def docs_block(first_line: str) -> str:
    """The code block of docs/imagenet.md that starts with ``first_line``."""
    blocks = [b for b in re.findall(r"```\w+\n(.*?)```", DOCS.read_text(), re.S) if b.startswith(first_line)]
    assert len(blocks) == 1, f"docs/imagenet.md has {len(blocks)} blocks starting {first_line!r}"
    return blocks[0]


@pytest.fixture(scope="module")
def samples():
    return load_dataset("imagenet-samples")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # foolbox's own imports (scipy.ndimage.filters)
def test_imagenet_samples_are_foolboxs_twenty_images_at_224_px(samples):
    import foolbox.utils

    assert samples.images.shape == (20, 3, 224, 224) and samples.images.dtype == torch.float32
    assert samples.num_classes == 1000 and len(samples.class_names) == 1000
    assert samples.labels.tolist() == [243, 559, 438, 990, 949, 853, 609, 609, 915, 455,
                                       541, 630, 741, 471, 129, 99, 251, 22, 317, 305]
    assert samples.class_names[243] == "bull mastiff" and samples.class_names[609] == "jeep, landrover"
    assert 0 <= samples.images.min() and samples.images.max() <= 1
    # the very pixels foolbox.utils.samples hands its own tests (read from the same files, no network)
    theirs, labels = foolbox.utils._samples("imagenet", 0, 20, (224, 224), "channels_first", (0, 1))
    assert torch.equal(torch.from_numpy(theirs), samples.images) and labels.tolist() == samples.labels.tolist()


def test_the_split_of_the_samples_leaves_both_sides_non_empty(samples):
    split = split_dataset(samples.labels, TEST_FRACTION, SEED)
    assert (len(split.train), len(split.test)) == (19, 1) and samples.labels[split.test].tolist() == [609]
    with pytest.raises(DataError, match="leaves an empty split"):  # the default 0.2 rounds every class to 0
        split_dataset(samples.labels, 0.2, SEED)


def test_an_external_victims_normalization_must_match_the_images_channels(tmp_path):
    grey = Dataset("grey", torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.int64), 10)
    ref = VictimRef("mine", VICTIM, str(tmp_path / "absent.safetensors"), *NORMALIZATIONS["imagenet"])
    with pytest.raises(AttribkitError, match="victim 'mine': mean has 3 values but grey has 1 colour channel$"):
        resolve_victim(ref, tmp_path, grey)


def _fit_victim(images: torch.Tensor, labels: torch.Tensor, path) -> Victim:
    """A timm victim fitted until every given image is classified right by FIT_MARGIN,
    saved as a plain timm state dict: the stand-in for the user's pretrained checkpoint."""
    import timm

    torch.manual_seed(0)
    victim = Victim(timm.create_model(VICTIM, pretrained=False, num_classes=1000, in_chans=3),
                    *NORMALIZATIONS["imagenet"])
    for m in victim.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            # every step sees the same whole batch: its statistics become the eval-mode ones at once
            m.momentum = 1.0
    opt = torch.optim.Adam(victim.parameters(), lr=3e-3)
    for _ in range(100):
        victim.train()
        loss = torch.nn.functional.cross_entropy(victim(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        victim.eval()
        with torch.no_grad():
            logits = victim(images)
        true = logits.gather(1, labels[:, None]).squeeze(1)
        if (true - logits.scatter(1, labels[:, None], -torch.inf).amax(1)).min() > FIT_MARGIN:
            break
    else:
        pytest.fail(f"{VICTIM} did not fit {len(images)} images in 100 steps")
    save_file(victim.net.state_dict(), str(path))
    return victim


@pytest.fixture(scope="module")
def imagenet_data(samples, tmp_path_factory):
    """The victim's checkpoint, which clean images it gets right, and a generated data set."""
    root = tmp_path_factory.mktemp("imagenet")
    split = split_dataset(samples.labels, TEST_FRACTION, SEED)
    # three training images of classes never fitted: the fit only ever pushes their logits down,
    # so the victim gets them wrong and generation must pass them over
    singletons = [i for i in split.train.tolist() if (samples.labels == samples.labels[i]).sum() == 1]
    held_out = torch.tensor(singletons[:3])
    fitted = torch.ones(20, dtype=torch.bool)
    fitted[held_out] = False
    _fit_victim(samples.images[fitted], samples.labels[fitted], root / "mine.safetensors")
    scenario = parse_scenario({
        "name": "imagenet-tiny", "dataset": "imagenet-samples", "seed": SEED, "test_fraction": TEST_FRACTION,
        "victims": [{"name": "mine", "timm": VICTIM, "checkpoint": str(root / "mine.safetensors"),
                     "normalization": "imagenet"}],
        "cells": {"train": 3, "test": 1}, "batch_size": 4, "keep_failed": True, "max_attempts_factor": 1,
        "attacks": [{"name": "fgsm", "grid": {"eps": [8, 32]}},
                    {"name": "pgd", "grid": {"eps": [8, 32]}, "settings": {"steps": 2, "alpha": 8 / 255}}],
    })
    manifest = generate(scenario, root / "data")
    return root, held_out, manifest


def test_generation_attacks_224_px_colour_images_the_external_victim_gets_right(samples, imagenet_data):
    root, held_out, manifest = imagenet_data
    victim = manifest.victims["mine"]
    assert victim["timm_name"] == VICTIM and victim["in_chans"] == 3 and victim["image_size"] == 224
    assert (victim["mean"], victim["std"]) == tuple(map(list, NORMALIZATIONS["imagenet"]))
    assert manifest.dataset == {"name": "imagenet-samples", "images": 20, "shape": [3, 224, 224], "num_classes": 1000}
    assert (manifest.split["train"], manifest.split["test"]) == (19, 1)
    # the checkpoint as the user would hand it over: rebuilt here, independently of generation
    import timm
    from safetensors.torch import load_file

    net = timm.create_model(VICTIM, pretrained=False, num_classes=1000, in_chans=3)
    net.load_state_dict(load_file(str(root / "mine.safetensors")))
    with torch.no_grad():
        right = Victim(net, *NORMALIZATIONS["imagenet"]).eval()(samples.images).argmax(1) == samples.labels
    assert not right[held_out].any() and right.sum() == 17  # the precondition: some wrong, both splits have right ones
    for split, per_cell in (("train", 3), ("test", 1)):
        data = load_split(root / "data", split)
        assert data["images"].shape == (4 * per_cell, 3, 224, 224)  # 2 attacks × 2 ε, failures kept
        used = data["clean_index"]
        assert right[used].all() and not torch.isin(used, held_out).any()
        assert torch.equal(data["label"], samples.labels[used])
        assert (data["linf"] <= data["hp_eps"] / 255 + 1e-6).all() and (data["linf"] > 0).all()


@pytest.fixture(scope="module")
def imagenet_run(imagenet_data):
    root, _, _ = imagenet_data
    config = TrainConfig(backbone="resnet101", width=1 / 16, epochs=1, batch_size=8, input_scale=1)
    meta = train(root / "data", config, root / "run")
    return root, meta


def test_a_resnet101_attributor_trains_and_attributes_a_224_px_png(samples, imagenet_run, tmp_path):
    root, meta = imagenet_run
    assert meta.config["backbone"] == "resnet101" and meta.config["input_scale"] == 1
    loaded, _ = load_run(root / "run")
    assert input_shape(loaded) == (3, 224)
    adv = load_split(root / "data", "test")["images"][0]
    png = tmp_path / "suspect.png"
    Image.fromarray((adv.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), "RGB").save(png)
    result = CliRunner().invoke(cli, ["attribute", "--run", str(root / "run"), str(png), "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)["results"]
    assert row["input"] == str(png) and row["conversion"] is None
    assert row["attack"] in ("fgsm", "pgd") and row["victim"] == "mine"
    assert set(row["hyperparameters"]) == {"eps"}
    # the source image at its own size is refused, not silently resized to 224
    big = tmp_path / "source.png"
    Image.fromarray((samples.images[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8), "RGB").resize(
        (512, 512)).save(big)
    with pytest.raises(AttribkitError, match="is 512×512 px but the model reads 224×224"):
        attribute(root / "run", [str(big)])


def test_evaluate_scores_the_imagenet_run(imagenet_run):
    root, _ = imagenet_run
    report = evaluate(root / "run", root / "data")
    assert report["split"] == "test" and report["model"] == "mtaa" and report["examples"] == 4
    assert set(report["tables"]["attack_accuracy"]) == {"fgsm", "pgd"}
    assert report["victim_accuracy"] == 1.0  # one victim: the only answer there is
    assert (root / "run" / "evaluation" / "perturbations.png").is_file()  # drawn from 224-px colour images


def test_the_scenario_in_the_docs_parses_with_real_timm_names():
    import timm

    sc = parse_scenario(tomllib.loads(docs_block("# imagenet.toml")))
    assert sc.dataset == "folder:imagenet-224" and (sc.train_per_cell, sc.test_per_cell) == (160, 20)
    assert [v.name for v in sc.victims] == ["resnet18", "resnet50", "vgg16", "vgg19", "inception_v3"]
    for v in sc.victims:
        assert timm.is_model(v.timm) and v.checkpoint == f"checkpoints/{v.name}.safetensors"
        expected = "inception" if v.name == "inception_v3" else "imagenet"
        assert (v.mean, v.std) == NORMALIZATIONS[expected]
        assert v.resize_to == (299 if v.name == "inception_v3" else None)
    assert sum(len(a.points()) for a in sc.attacks) == 60


def test_the_docs_preparation_gives_the_checkpoints_label_order(samples, tmp_path, monkeypatch):
    """Sorted WordNet-id folders are the class order of ImageNet checkpoints: foolbox's
    samples, filed by their label's WordNet id and prepared by the docs' script, keep their labels."""
    import importlib.util

    from timm.data import ImageNetInfo

    wnids = ImageNetInfo().label_names()
    for wnid in wnids:
        (tmp_path / "val" / wnid).mkdir(parents=True)
    folder = Path(importlib.util.find_spec("foolbox").submodule_search_locations[0]) / "data"
    for f in folder.glob("imagenet_*_*.jpg"):
        shutil.copy(f, tmp_path / "val" / wnids[int(f.stem.split("_")[-1])] / f.name)
    (tmp_path / "prepare.py").write_text(docs_block("# prepare.py"))
    monkeypatch.setattr("sys.argv", ["prepare.py", str(tmp_path / "val"), str(tmp_path / "224"), "10"])
    runpy.run_path(str(tmp_path / "prepare.py"), run_name="__main__")
    prepared = load_dataset(f"folder:{tmp_path / '224'}")
    assert prepared.num_classes == 1000 and prepared.images.shape == (20, 3, 224, 224)
    assert sorted(prepared.labels.tolist()) == sorted(samples.labels.tolist())
    assert prepared.class_names[609] == "n03594945"  # the jeep's WordNet id
