import numpy as np
import pytest
import torch
from PIL import Image

from attribkit.data import load_dataset, split_dataset
from attribkit.errors import AttribkitError, DataError


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
