"""``attribkit attribute``: which attack, victim and hyperparameter made these images.

Inputs are PNG/JPEG files, folders of them, or safetensors batches (key
``images``, (N, C, H, W), float in [0, 1] or uint8). Only lossless
conversions are made, and each is reported; anything that would change the
pixels the model reads (resizing, colour to grey) is refused.

Inputs are streamed: folders are walked one directory at a time, safetensors
batches read one file at a time, and images decoded and answered
``batch_size`` at a time (:func:`iter_attributions`), so memory does not grow
with the number of inputs. Every argument is checked (it exists; a folder
holds an image) before any work starts; an image that cannot be read is found
when its batch is decoded, after the rows of earlier batches were yielded.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path, PurePath

import numpy as np
import torch

from .errors import AttribkitError
from .runtime import Runtime, runtime_of
from .storage import read_bytes, sha256_file, tensors_from_bytes
from .training.models import heads_of, predict_with_features
from .training.run import RUN_FILE, input_shape, load_run, load_trust
from .trust.fitted import Trust, verdict

BATCH_SIZE = 256  # images decoded, stacked and answered at a time

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class Item:
    source: str
    image: torch.Tensor  # (C, H, W) float in [0, 1]
    conversion: str | None = None


IMAGE_FORMATS = ("PNG", "JPEG", "MPO")  # what the bytes must be, whatever the name says (MPO: a camera's JPEG)


def _size_error(source: str, w: int, h: int, size: int) -> AttribkitError:
    return AttribkitError(f"{source}: is {w}×{h} px but the model reads {size}×{size}; resizing would "
                          f"destroy the perturbation, so it was rejected")


def _from_pil(path: Path, channels: int, size: int) -> Item:
    import warnings

    from PIL import Image

    _regular_file(path)
    try:
        with warnings.catch_warnings():
            # PIL warns above Image.MAX_IMAGE_PIXELS (and refuses at twice that, below); the size is checked
            # here from the header, before anything is decoded, so a big image costs nothing
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.format not in IMAGE_FORMATS:
                    raise AttribkitError(f"{str(path)!r} is a {im.format} image; attribkit reads PNG and JPEG")
                if im.size != (size, size):
                    raise _size_error(str(path), *im.size, size)
                if im.format == "PNG" and any("16" in str(tile[3]) for tile in im.tile):
                    # PIL would silently keep only the high byte of a 16-bit colour PNG
                    raise AttribkitError(f"{str(path)!r} is a 16-bit PNG; attribkit reads 8-bit images, and "
                                         f"dropping the low byte would change the perturbation")
                im.load()
                pic = im.copy()
    except AttribkitError:
        raise
    except Image.DecompressionBombError as exc:
        raise AttribkitError(f"{str(path)!r} is too large to decode safely ({exc}); the model reads "
                             f"{size}×{size} px") from None
    except Exception as exc:  # a damaged file: OSError, but also SyntaxError, ValueError, zlib and struct errors
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AttribkitError(f"cannot decode image {str(path)!r}: {detail}") from None
    notes = []
    if pic.mode == "P":
        pic = pic.convert("RGBA" if "transparency" in pic.info else "RGB")
        notes.append("palette → RGB")
    if pic.mode in ("RGBA", "LA"):
        alpha = np.asarray(pic.getchannel("A"))
        if alpha.min() < 255:
            raise AttribkitError(f"{path}: has transparent pixels; flatten it yourself, attribkit will not guess a background")
        pic = pic.convert("RGB" if pic.mode == "RGBA" else "L")
        notes.append("dropped an opaque alpha channel")
    if pic.mode == "1":
        pic = pic.convert("L")
        notes.append("1-bit → 8-bit grey (lossless)")
    if pic.mode not in ("L", "RGB"):
        raise AttribkitError(f"{path}: unsupported image mode {pic.mode!r} (attribkit reads 8-bit grey or RGB, "
                             f"palette, 1-bit, and opaque alpha)")
    arr = np.asarray(pic, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1).copy())
    return _fit(Item(str(path), tensor, "; ".join(notes) or None), channels, size)


def _fit(item: Item, channels: int, size: int) -> Item:
    c, h, w = item.image.shape
    if (h, w) != (size, size):
        raise _size_error(item.source, w, h, size)
    notes = [item.conversion] if item.conversion else []
    if c != channels:
        if channels == 1 and c == 3 and torch.equal(item.image[0], item.image[1]) and torch.equal(item.image[1], item.image[2]):
            item.image = item.image[:1]
            notes.append("grey RGB → 1 channel (lossless)")
        elif channels == 3 and c == 1:
            item.image = item.image.expand(3, -1, -1).clone()
            notes.append("1 channel → RGB (lossless)")
        else:
            raise AttribkitError(f"{item.source}: has {c} colour channels but the model reads {channels}; "
                                 f"converting would change the perturbation, so it was rejected")
    if not torch.isfinite(item.image).all():
        raise AttribkitError(f"{item.source}: contains NaN or infinite values")
    item.conversion = "; ".join(notes) or None
    return item


def _from_safetensors(path: Path, channels: int, size: int) -> list[Item]:
    return list(_iter_safetensors(path, channels, size))


def _regular_file(path: Path) -> None:
    """Refuse what is not a plain file (a FIFO, a device) before opening it: reading a FIFO named x.png
    in a folder of uploads would wait for a writer forever."""
    if path.exists() and not path.is_dir() and not path.is_file():
        raise AttribkitError(f"{str(path)!r} is not a regular file (a pipe, socket or device); attribkit reads "
                             f"image files")


def _iter_safetensors(path: Path, channels: int, size: int) -> Iterator[Item]:
    """The batch's images, one at a time: the file is read and checked as a whole (one file in memory),
    each image converted to float32 only when it is taken."""
    _regular_file(path)
    tensors, _ = tensors_from_bytes(read_bytes(path, error=AttribkitError), str(path), AttribkitError)
    if "images" not in tensors:
        raise AttribkitError(f"{str(path)!r} has no tensor named 'images' (found: {', '.join(tensors) or 'no tensors'})")
    images = tensors.pop("images")
    del tensors
    if images.ndim != 4:
        raise AttribkitError(f"{str(path)!r}: 'images' must be (N, C, H, W), got {tuple(images.shape)}")
    if images.dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.uint8):
        raise AttribkitError(f"{str(path)!r}: 'images' has dtype {str(images.dtype).removeprefix('torch.')}; "
                             f"expected float in [0, 1] or uint8")
    if images.numel() == 0:
        raise AttribkitError(f"{str(path)!r}: 'images' is empty (shape {tuple(images.shape)})")
    if images.dtype == torch.float64:
        images = images.float()  # checked as float32, as the model reads it (1e300 is infinite there)
    if images.dtype != torch.uint8:  # uint8 / 255 is always finite and in [0, 1]; float16 → float32 is exact
        if not torch.isfinite(images).all():
            raise AttribkitError(f"{str(path)!r}: 'images' contains NaN or infinite values")
        if images.min() < 0 or images.max() > 1:
            raise AttribkitError(f"{str(path)!r}: 'images' must lie in [0, 1] "
                                 f"(found {images.min():.3g}…{images.max():.3g})")
    for i, img in enumerate(images):
        img = img.float() / 255 if img.dtype == torch.uint8 else img.float()
        yield _fit(Item(f"{path}[{i}]", img), channels, size)


def _suffix(name: str) -> str:
    return PurePath(name).suffix.lower()


def _real_dir(entry: os.DirEntry) -> bool:
    """A folder to walk into: as pathlib's rglob, never through a symbolic link."""
    try:
        return entry.is_dir() and not entry.is_symlink()
    except OSError:
        return False


def _listing(folder: Path) -> tuple[list[str], set[str]]:
    """One directory: every name in it, sorted as pathlib sorts its children, and which are folders."""
    names: list[str] = []
    dirs: set[str] = set()
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                names.append(entry.name)
                if _real_dir(entry):
                    dirs.add(entry.name)
    except PermissionError:  # rglob skips what it may not read
        pass
    names.sort(key=str.lower if os.name == "nt" else None)  # pathlib compares names case-folded on Windows
    return names, dirs


def walk_images(folder: str | Path) -> Iterator[Path]:
    """The images under ``folder``, lazily, in the order of ``sorted(p for p in Path(folder).rglob("*") if
    p.suffix.lower() in IMAGE_SUFFIXES)``: only one directory's names are held at a time (and those of the
    directories above it that are still to come).

    Paths sort part by part, so a folder ``a/`` and its contents come before a file ``a.png`` beside it
    (``"a" < "a.png"``): exactly the order of a walk that sorts each directory's names and descends into a
    folder where its name falls."""
    folder = Path(folder)
    names, dirs = _listing(folder)
    for name in names:
        path = folder / name
        if _suffix(name) in IMAGE_SUFFIXES:
            yield path  # a folder named x.png too, as rglob lists it: it is then refused as an image
        if name in dirs:
            yield from walk_images(path)


def _has_image(folder: Path) -> bool:
    """Whether walk_images(folder) yields anything; stops at the first image, in whatever order the disk lists."""
    subfolders = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if _suffix(entry.name) in IMAGE_SUFFIXES:
                    return True
                if _real_dir(entry):
                    subfolders.append(entry.name)
    except PermissionError:
        return False
    return any(_has_image(folder / name) for name in subfolders)


def check_inputs(inputs: list[str]) -> None:
    """Every argument, before any work: it exists, is of a kind attribkit reads, and a folder holds an
    image. Cheap: no image is opened (a damaged one is found when it is decoded)."""
    if not inputs:
        raise AttribkitError("no input images")
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            if not _has_image(path):
                raise AttribkitError(f"folder {raw!r} has no PNG/JPEG images")
        elif not path.exists():
            raise AttribkitError(f"input {raw!r} does not exist")
        elif not path.is_file():
            _regular_file(path)
        elif path.suffix != ".safetensors" and path.suffix.lower() not in IMAGE_SUFFIXES:
            raise AttribkitError(f"input {raw!r}: expected PNG/JPEG files, folders or .safetensors")


def iter_inputs(inputs: list[str], channels: int, size: int) -> Iterator[Item]:
    """Every input image, decoded lazily in order: files, folders (see :func:`walk_images`) and safetensors
    batches (one file at a time). Call :func:`check_inputs` first."""
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            for p in walk_images(path):
                yield _from_pil(p, channels, size)
        elif path.suffix == ".safetensors":
            yield from _iter_safetensors(path, channels, size)
        else:
            yield _from_pil(path, channels, size)


def collect_inputs(inputs: list[str], channels: int, size: int) -> list[Item]:
    """Every input image, decoded, in a list (for a few images; :func:`iter_attributions` streams)."""
    check_inputs(inputs)
    return list(iter_inputs(inputs, channels, size))


def _start(run, inputs, batch_size, verify, runtime):
    """Load the run, check every input (cheap: nothing is decoded); then (meta, heads, its trust or None,
    (row, text) per input, lazily)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise AttribkitError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(inputs, (str, os.PathLike)):
        raise AttribkitError(f"inputs must be a list of paths, got the single path {str(inputs)!r}: "
                             f"write [{str(inputs)!r}]")
    inputs = [os.fspath(i) for i in inputs]
    rt = runtime_of(runtime)
    meta, members = load_run(run, verify, rt)  # a broken run is named first, as before streaming
    trust = load_trust(run, meta, verify)
    check_inputs(inputs)
    channels, size = input_shape(meta)
    heads = heads_of(members)
    return meta, heads, trust, _answers(members, heads, trust, meta.label_spaces.clean,
                                        iter_inputs(inputs, channels, size), batch_size, rt)


def _answers(members, heads, trust: Trust | None, clean_class: bool, items: Iterator[Item], batch_size: int,
             rt: Runtime) -> Iterator[tuple[dict, dict]]:
    """(row, text) for each item, ``batch_size`` items decoded, stacked and predicted at a time; a batch
    is let go before the next is decoded, so at most one is in memory."""
    threshold = trust.threshold if trust else None
    while True:
        batch = list(islice(items, batch_size))
        if not batch:
            return
        stacked = torch.stack([item.image for item in batch])
        about = [(item.source, item.conversion) for item in batch]
        del batch
        with rt.numerics_in_effect(), torch.no_grad():
            outputs, features = predict_with_features(members, stacked, features=trust is not None)
            del stacked
            if trust is not None:
                outputs = trust.calibrated(outputs)
                scores = trust.scores(outputs, features).tolist()
            else:
                scores = [None] * len(about)
            answers = [head.answer(outputs) for head in heads.values()]
        del outputs, features
        for i, (source, conversion) in enumerate(about):
            found: dict = {}
            for answer in answers:
                found.update(answer[i])
            said = verdict(found, scores[i], threshold, clean_class)
            row: dict = {"input": source, "verdict": said, **found}
            # the score beside the verdict (the threshold is the table's title): one column fewer for paths
            text: dict = {"input": source, "verdict": said if scores[i] is None else f"{said} ({scores[i]:.3g})"}
            for head, answer in zip(heads.values(), answers):
                text.update(head.shown(answer[i]) if answer[i] else {})
            row["unknown_score"] = None if scores[i] is None else round(scores[i], 6)
            row["unknown_threshold"] = threshold
            row["calibrated"] = trust is not None
            row["conversion"] = conversion
            text["note"] = conversion or ""
            yield row, text


def iter_attributions(run: str | Path, inputs: Iterable[str | Path], *, batch_size: int = BATCH_SIZE,
                      verify: bool = True, runtime: Runtime | None = None) -> Iterator[dict]:
    """Each input's answers as :func:`attribute`'s ``results`` hold them, one dict per image, in input
    order, yielded as each batch of ``batch_size`` images is answered.

    Loads the run and checks every input (exists; a folder holds an image) when called, so such errors
    come before any image is decoded; an image that cannot be decoded raises :class:`AttribkitError`
    naming it when its batch is reached, after the rows of earlier batches. Memory holds one batch, not
    every image."""
    *_, pairs = _start(run, inputs, batch_size, verify, runtime)
    return (row for row, _ in pairs)


def attribute(run: str | Path, inputs: list[str], verify: bool = True, runtime: Runtime | None = None, *,
              batch_size: int = BATCH_SIZE) -> dict:
    """Every head's answer for each input. ``table`` holds the same as text, one
    column per answer, for a person to read. ``verify=False`` loads the run
    without checking its files' recorded hashes. Images are decoded and
    answered ``batch_size`` at a time, but every row is returned: for very many
    inputs, :func:`iter_attributions` yields them as they come."""
    meta, heads, trust, pairs = _start(run, inputs, batch_size, verify, runtime)
    results, shown = [], []
    for row, text in pairs:
        results.append(row)
        shown.append(text)
    columns = [c for c in dict.fromkeys(k for text in shown for k in text) if c != "note"] + ["note"]
    return {**answered_by(run, meta), "heads": list(heads),
            "unknown_threshold": trust.threshold if trust else None, "results": results,
            "table": {"columns": columns, "rows": [[text.get(c, "–") for c in columns] for text in shown]}}


SCHEMA = "attribkit-attribution/1"


def answered_by(run: str | Path, meta) -> dict:
    """Who answered: the output's schema, the attribkit version, and the run (its run.json's sha256,
    which covers the hash of every file of the run)."""
    from . import __version__

    return {"schema": SCHEMA, "attribkit": __version__, "run": str(run),
            "run_sha256": sha256_file(Path(run) / RUN_FILE), "model": meta.config["model"],
            "calibrated": meta.trust is not None}
