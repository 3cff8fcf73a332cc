"""Images as they reach attribkit after being saved to disk.

Adversarial images are usually shared as files, and saving is not neutral: an
8-bit PNG rounds every pixel, and JPEG re-encoding destroys part of the
perturbation an attribution model relies on. :func:`as_saved` lets evaluation
report a model on its test images as each format would hand them back, and
:func:`jpeg_augment` lets training see re-encoded images so it degrades less.
"""

from __future__ import annotations

import io
import re

import numpy as np
import torch

from ..errors import AttribkitError

SAVED_AS = ("float", "png", "jpeg95", "jpeg75", "jpeg50")

_ACCEPTED = "'float', 'png' or 'jpegQ' with an integer quality Q from 1 to 100 (e.g. 'jpeg75')"
_MODES = {1: "L", 3: "RGB"}


def parse_saved_as(name: str) -> tuple[str, int | None]:
    """``"float"`` → ``("float", None)``, ``"png"`` → ``("png", None)``, ``"jpeg75"`` → ``("jpeg", 75)``."""
    if name in ("float", "png"):
        return name, None
    # ASCII digits without a leading zero: one spelling per quality, so reports and caches agree on names
    match = re.fullmatch(r"jpeg([1-9][0-9]{0,2})", name) if isinstance(name, str) else None
    if match is None or int(match.group(1)) > 100:
        raise AttribkitError(f"unknown saved-as format {name!r}; accepted: {_ACCEPTED}")
    return "jpeg", int(match.group(1))


def as_saved(images: torch.Tensor, saved_as: str) -> torch.Tensor:
    """``images`` (N, C, H, W) in [0, 1], C = 1 or 3, as reading them back after saving as ``saved_as``
    would give them: float32 on the CPU, same shape."""
    kind, quality = parse_saved_as(saved_as)
    _check_images(images)
    images = images.detach().to("cpu", torch.float32)  # no copy when already there
    if kind == "float":
        return images
    if kind == "png":
        # PNG is lossless, so an 8-bit PNG holds exactly the rounded pixels; this is
        # attribkit.training.data.quantize, repeated so that training may import this module
        return torch.round(images * 255) / 255
    return _jpeg(images, [quality] * len(images))


def jpeg_augment(images: torch.Tensor, probability: float, qualities: tuple[int, int],
                 generator: torch.Generator, *, batch: int | None = None, offset: int = 0) -> torch.Tensor:
    """Re-encode each image as JPEG with ``probability``, at a quality drawn uniformly from the
    integers ``qualities[0]..qualities[1]``; the others are returned as they are.

    Every call draws N uniforms and N qualities from ``generator`` whatever is chosen (probability 0
    included), so a later batch's draws never depend on an earlier batch's choices. ``images`` may be
    the slice ``offset:offset + len(images)`` of a batch of ``batch`` images (a worker's share): the
    draws are made for the whole batch, so each image gets the same choice however many workers
    share it. The result keeps the input's device and dtype; with nothing chosen it is the input itself.
    """
    if not (isinstance(probability, (int, float)) and 0 <= probability <= 1):
        raise AttribkitError(f"JPEG augmentation probability must be between 0 and 1, got {probability!r}")
    try:
        low, high = (int(q) for q in qualities)
    except (TypeError, ValueError):
        raise AttribkitError(
            f"JPEG augmentation qualities must be two integers (low, high), got {qualities!r}") from None
    if not 1 <= low <= high <= 100:
        raise AttribkitError(f"JPEG augmentation qualities must satisfy 1 <= low <= high <= 100, got {qualities!r}")
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise AttribkitError("JPEG augmentation needs a CPU torch.Generator, so that a seeded run repeats")
    _check_images(images)
    n = len(images) if batch is None else batch
    if not 0 <= offset <= offset + len(images) <= n:
        raise AttribkitError(f"images {offset}..{offset + len(images)} are not a slice of a batch of {n}")
    chosen = torch.rand(n, generator=generator) < probability  # p = 0 never chosen, p = 1 always ([0, 1) draws)
    drawn = torch.randint(low, high + 1, (n,), generator=generator)
    chosen, drawn = chosen[offset:offset + len(images)], drawn[offset:offset + len(images)]
    if not chosen.any():
        return images
    picked = chosen.nonzero().flatten()
    encoded = _jpeg(images[picked.to(images.device)].detach().to("cpu", torch.float32), drawn[picked].tolist())
    out = images.clone()
    out[picked.to(images.device)] = encoded.to(images.device, images.dtype)
    return out


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] not in _MODES:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise AttribkitError(f"images must be (N, C, H, W) with C = 1 (grey) or 3 (RGB), got {shape}")


def _jpeg(images: torch.Tensor, qualities: list[int]) -> torch.Tensor:
    """Each CPU float image through a JPEG file at its quality, back as float32 in [0, 1]."""
    from PIL import Image

    channels, height, width = images.shape[1:]
    # clamped because an out-of-range pixel would wrap around in uint8 instead of saturating as a saver does;
    # the batch is converted once and only the encoding is per image (per-image tensor ops cost more than it)
    pixels = torch.round(images.clamp(0, 1) * 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    out = np.empty_like(pixels)
    for i, quality in enumerate(qualities):
        buffer = io.BytesIO()
        # every option that changes the bytes is pinned, so the result does not move with Pillow's defaults;
        # 4:2:0 chroma subsampling is Pillow's own default (and most cameras' and sites')
        Image.fromarray(pixels[i, :, :, 0] if channels == 1 else pixels[i]).save(
            buffer, format="JPEG", quality=quality, subsampling=2, optimize=False, progressive=False)
        buffer.seek(0)
        with Image.open(buffer, formats=["JPEG"]) as decoded:
            if decoded.mode != _MODES[channels]:
                decoded = decoded.convert(_MODES[channels])
            out[i] = np.asarray(decoded).reshape(height, width, channels)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous().to(torch.float32) / 255
