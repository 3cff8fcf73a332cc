"""``attribkit attribute``: which attack, victim and hyperparameter made these images.

Inputs are PNG/JPEG files, folders of them, or safetensors batches (key
``images``, (N, C, H, W), float in [0, 1] or uint8). Only lossless
conversions are made, and each is reported; anything that would change the
pixels the model reads (resizing, colour to grey) is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import AttribkitError
from .storage import read_bytes, tensors_from_bytes
from .training.models import heads_of, predict
from .runtime import Runtime
from .training.run import input_shape, load_run

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
    tensors, _ = tensors_from_bytes(read_bytes(path, error=AttribkitError), str(path), AttribkitError)
    if "images" not in tensors:
        raise AttribkitError(f"{str(path)!r} has no tensor named 'images' (found: {', '.join(tensors)})")
    images = tensors["images"]
    if images.ndim != 4:
        raise AttribkitError(f"{str(path)!r}: 'images' must be (N, C, H, W), got {tuple(images.shape)}")
    if images.dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.uint8):
        raise AttribkitError(f"{str(path)!r}: 'images' has dtype {str(images.dtype).removeprefix('torch.')}; "
                             f"expected float in [0, 1] or uint8")
    if images.numel() == 0:
        raise AttribkitError(f"{str(path)!r}: 'images' is empty (shape {tuple(images.shape)})")
    if images.dtype == torch.uint8:
        images = images.float() / 255
    images = images.float()
    if not torch.isfinite(images).all():
        raise AttribkitError(f"{str(path)!r}: 'images' contains NaN or infinite values")
    if images.min() < 0 or images.max() > 1:
        raise AttribkitError(f"{str(path)!r}: 'images' must lie in [0, 1] (found {images.min():.3g}…{images.max():.3g})")
    return [_fit(Item(f"{path}[{i}]", img), channels, size) for i, img in enumerate(images)]


def collect_inputs(inputs: list[str], channels: int, size: int) -> list[Item]:
    items: list[Item] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise AttribkitError(f"folder {raw!r} has no PNG/JPEG images")
            items += [_from_pil(p, channels, size) for p in files]
        elif not path.exists():
            raise AttribkitError(f"input {raw!r} does not exist")
        elif path.suffix == ".safetensors":
            items += _from_safetensors(path, channels, size)
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            items.append(_from_pil(path, channels, size))
        else:
            raise AttribkitError(f"input {raw!r}: expected PNG/JPEG files, folders or .safetensors")
    if not items:
        raise AttribkitError("no input images")
    return items


def attribute(run: str | Path, inputs: list[str], verify: bool = True, runtime: Runtime | None = None) -> dict:
    """Every head's answer for each input. ``table`` holds the same as text, one
    column per answer, for a person to read. ``verify=False`` loads the run
    without checking its files' recorded hashes."""
    meta, members = load_run(run, verify, runtime)
    channels, size = input_shape(meta)
    items = collect_inputs(inputs, channels, size)
    outputs = predict(members, torch.stack([i.image for i in items]))
    heads = heads_of(members)
    answers = [head.answer(outputs) for head in heads.values()]
    results, shown = [], []
    for i, item in enumerate(items):
        row: dict = {"input": item.source}
        text: dict = {"input": item.source}
        for head, answer in zip(heads.values(), answers):
            row.update(answer[i])
            text.update(head.shown(answer[i]) if answer[i] else {})
        row["conversion"] = item.conversion
        text["note"] = item.conversion or ""
        results.append(row)
        shown.append(text)
    columns = [c for c in dict.fromkeys(k for text in shown for k in text) if c != "note"] + ["note"]
    return {"run": str(run), "model": meta.config["model"], "heads": list(heads), "results": results,
            "table": {"columns": columns, "rows": [[text.get(c, "–") for c in columns] for text in shown]}}
