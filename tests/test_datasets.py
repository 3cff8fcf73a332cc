import numpy as np
import pytest
import torch
from PIL import Image

from attribkit.data import load_dataset, split_dataset
from attribkit.errors import AttribkitError, DataError
from attribkit.generation.engine import generate
from attribkit.generation.scenario import parse_scenario
from attribkit.storage.dataset import load_split
from attribkit.storage import read_tensors
from attribkit.training.config import TrainConfig
from attribkit.training.trainer import train
from attribkit.victims import save_victim
from attribkit.victims.train import make_record, train_victim


def test_mnist5k_is_the_embedded_real_digits(mnist):
    assert mnist.images.shape == (5000, 1, 28, 28)
    assert mnist.images.dtype == torch.float32
    assert 0.0 == mnist.images.min() and mnist.images.max() == 1.0
    assert torch.bincount(mnist.labels).tolist() == [500] * 10


def test_sklearn_digits():
    ds = load_dataset("digits")
    assert ds.images.shape == (1797, 1, 8, 8) and ds.num_classes == 10
    assert ds.images.max() == 1.0


def test_split_is_disjoint_stratified_and_seeded(mnist):
    a = split_dataset(mnist.labels, 0.2, seed=3)
    b = split_dataset(mnist.labels, 0.2, seed=3)
    c = split_dataset(mnist.labels, 0.2, seed=4)
    assert set(a.train.tolist()).isdisjoint(a.test.tolist())
    assert len(a.train) + len(a.test) == 5000
    assert torch.bincount(mnist.labels[a.test]).tolist() == [100] * 10
    assert torch.equal(a.train, b.train) and torch.equal(a.test, b.test)
    assert not torch.equal(a.test, c.test)


def _write_folder(root, size=(12, 12), mode="L"):
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            arr = np.full((*size[::-1], 3) if mode == "RGB" else size[::-1], 40 * i + (100 if cls == "dog" else 0),
                          dtype=np.uint8)
            Image.fromarray(arr, mode).save(root / cls / f"{i}.png")


def test_folder_dataset_reads_class_subfolders(tmp_path):
    _write_folder(tmp_path)
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.images.shape == (6, 1, 12, 12)
    assert ds.class_names == ("cat", "dog") and ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert ds.images[4, 0, 0, 0].item() == pytest.approx(140 / 255)


def test_folder_dataset_rgb(tmp_path):
    _write_folder(tmp_path, mode="RGB")
    assert load_dataset(f"folder:{tmp_path}").images.shape == (6, 3, 12, 12)


def test_folder_dataset_rejects_unreadable_and_mixed_images(tmp_path):
    _write_folder(tmp_path)
    (tmp_path / "dog" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read image .*broken.png"):
        load_dataset(f"folder:{tmp_path}")
    (tmp_path / "dog" / "broken.png").unlink()
    # a header that reads and pixels that do not: found while decoding, after the sizes were checked
    noise = np.random.default_rng(0).integers(0, 256, (12, 12), dtype=np.uint8)  # does not compress away
    Image.fromarray(noise, "L").save(tmp_path / "dog" / "truncated.png")
    png = (tmp_path / "dog" / "truncated.png").read_bytes()
    (tmp_path / "dog" / "truncated.png").write_bytes(png[:len(png) - 40])
    with pytest.raises(DataError, match="cannot read image .*truncated.png': image file is truncated"):
        load_dataset(f"folder:{tmp_path}")
    (tmp_path / "dog" / "truncated.png").unlink()
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "cat" / "small.png")
    with pytest.raises(DataError, match="mixes image sizes"):
        load_dataset(f"folder:{tmp_path}")


@pytest.mark.parametrize("ref, message", [
    ("mnist", "unknown dataset 'mnist'"),
    ("folder", "needs an argument"),
    ("mnist5k:x", "takes no argument"),
    ("folder:/does/not/exist", "is not a directory"),
])
def test_bad_dataset_references(ref, message):
    with pytest.raises(AttribkitError, match=message):
        load_dataset(ref)


def _digits_folder(root, per_class=20):
    """sklearn's digits as a folder data set: one subfolder of 8×8 PNGs per class."""
    digits = load_dataset("digits")
    for c in range(10):
        (root / f"class{c}").mkdir(parents=True)
        for k, i in enumerate(torch.nonzero(digits.labels == c).flatten()[:per_class].tolist()):
            pixels = (digits.images[i, 0].numpy() * 255).round().astype(np.uint8)
            Image.fromarray(pixels, "L").save(root / f"class{c}" / f"{k:02d}.png")
    return f"folder:{root}"


@pytest.mark.parametrize("kind", ["digits", "folder"])
def test_a_scenario_generates_and_trains_on_8px_digits(kind, tmp_path):
    ref = "digits" if kind == "digits" else _digits_folder(tmp_path / "images")
    dataset = load_dataset(ref)
    record = make_record("resnet18", dataset, 1 / 16, name="tiny")
    assert record.image_size == 8 and record.resize_to is None  # a ResNet takes 8 px as they are
    victim, record = train_victim(record, dataset, epochs=2, seed=0)
    save_victim(tmp_path / "zoo", record, victim)
    sc = parse_scenario({"name": kind, "dataset": ref, "zoo": str(tmp_path / "zoo"), "victims": ["tiny"], "seed": 1,
                         "cells": {"train": 4, "test": 2}, "batch_size": 8, "keep_failed": True,
                         "max_attempts_factor": 1, "attacks": [{"name": "fgsm", "grid": {"eps": [30, 90]}}]})
    manifest = generate(sc, tmp_path / "data")
    assert manifest.dataset["name"] == ref and manifest.dataset["shape"][-2:] == [8, 8]
    clean, _ = read_tensors(tmp_path / "data" / "clean.safetensors")
    assert torch.equal(clean["images"], dataset.images) and torch.equal(clean["labels"], dataset.labels)
    split = split_dataset(dataset.labels, sc.test_fraction, sc.seed)
    for name, quota in (("train", sc.train_per_cell), ("test", sc.test_per_cell)):
        data = load_split(tmp_path / "data", name)
        assert data["images"].shape == (2 * quota, 1, 8, 8)  # two ε, failures kept: each cell its quota
        assert set(data["clean_index"].tolist()) <= set(getattr(split, name).tolist())
        assert torch.equal(data["label"], dataset.labels[data["clean_index"]])
        with torch.no_grad():  # only images the victim got right were attacked
            assert torch.equal(victim(dataset.images[data["clean_index"]]).argmax(1), data["label"])
        assert (data["linf"] <= data["hp_eps"] / 255 + 1e-6).all()
    meta = train(tmp_path / "data", TrainConfig(width=0.125, epochs=1, batch_size=4), tmp_path / "run")
    assert (meta.in_chans, meta.image_size) == (1, 8)
