"""Property-based fuzzing of the readers of untrusted input.

Whatever they are given, the scenario parser and attribute's image and
safetensors readers either return a well-formed result or raise
AttribkitError (one clear line at the CLI) — never another exception.
Deterministic (derandomize=True, no example database) and a few seconds in all.
"""

from __future__ import annotations

import io
import json
import math
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save as st_save

from attribkit.attribution import Item, _from_pil, _from_safetensors, collect_inputs
from attribkit.errors import AttribkitError
from attribkit.generation.scenario import Scenario, parse_scenario
from attribkit.storage import tensors_from_bytes

FUZZ = settings(derandomize=True, deadline=None, database=None, max_examples=250,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
SIZE = 8


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory(prefix="attribkit-fuzz-") as folder:
        yield Path(folder)


# --- the scenario parser -----------------------------------------------------------

VALID = {
    "name": "fuzz", "dataset": "mnist5k", "seed": 3, "victims": ["a", {"name": "b", "timm": "resnet18",
                                                                       "checkpoint": "b.safetensors"}],
    "cells": {"train": 4, "test": 2},
    "attacks": [{"name": "fgsm", "grid": {"eps": [20, 100]}},
                {"name": "pgd", "grid": {"eps": {"start": 10, "stop": 30, "step": 10}}, "settings": {"steps": 3}},
                {"name": "cw", "grid": {"kappa": [1]}, "settings": {"c": 5.0}}],
}
KEYS = sorted({"name", "dataset", "seed", "test_fraction", "zoo", "victims", "attacks", "cells", "batch_size",
               "max_attempts_factor", "keep_failed", "description", "train", "test", "grid", "settings", "eps",
               "kappa", "start", "stop", "step", "steps", "alpha", "c", "random_start", "timm", "checkpoint", "mean",
               "std", "resize_to", "fgsm", "pgd", "cw", "mnist5k", "digits", "folder:x"})

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2 ** 63), max_value=2 ** 63 - 1),
    st.sampled_from([0, 1, -1, 2, 255, 256, 10 ** 6, 2 ** 63 - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 0.5, 1.0, 1e-300, 1e300, math.nan, math.inf, -math.inf]),
    st.text(max_size=12), st.sampled_from(KEYS),
)
toml_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), inner, max_size=4)),
    max_leaves=12,
)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


def _mutate(data, path, action, value, key):
    """Replace or delete the value at path, or insert key: value into the table at path."""
    node = data
    for step in path[:-1] if action != "insert" else path:
        node = node[step]
    if action == "insert":
        if isinstance(node, dict):
            node[key] = value
        elif isinstance(node, list):
            node.append(value)
        return data
    if not path:
        return value if action == "replace" else data
    if action == "delete":
        node.pop(path[-1])
    else:
        node[path[-1]] = value
    return data


special = st.sampled_from([math.nan, math.inf, -math.inf, 0, -1, 0.0, 1e-300, 1e300, 2 ** 63 - 1, True, "", "x", [], {}])


@st.composite
def mutated_scenarios(draw):
    """The valid scenario with a few values replaced, removed or added anywhere in it."""
    data = json.loads(json.dumps(VALID))
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(data))
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "replace", "delete", "insert"]))
        value = draw(st.one_of(special, toml_values))
        data = _mutate(data, path, action, value, draw(st.sampled_from(KEYS)))
    return data


def _check_scenario(data):
    try:
        sc = parse_scenario(data)
    except AttribkitError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert isinstance(sc, Scenario)
    assert sc.train_per_cell >= 1 and sc.test_per_cell >= 1 and sc.batch_size >= 1
    assert 0 < sc.test_fraction < 1 and math.isfinite(sc.max_attempts_factor) and sc.max_attempts_factor >= 1
    for plan in sc.attacks:
        for values in plan.grid.values():
            assert values and all(math.isfinite(v) for v in values)
        assert plan.points()
    sc.fingerprint()  # serialisable as it will be written to manifest.json


@FUZZ
@given(mutated_scenarios())
def test_scenario_parser_on_mutated_scenarios(data):
    _check_scenario(data)


@FUZZ
@given(st.one_of(toml_values, st.dictionaries(st.sampled_from(KEYS), toml_values, max_size=8)))
def test_scenario_parser_on_arbitrary_values(data):
    if not isinstance(data, dict):
        with pytest.raises(AttribkitError):
            parse_scenario(data)
        return
    _check_scenario(data)


# --- attribute's image reader --------------------------------------------------------

def _encode(pic: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    pic.save(buf, fmt, **kw)
    return buf.getvalue()


_rng = np.random.default_rng(0)
_GREY = _rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)
SEEDS = {
    "L.png": _encode(Image.fromarray(_GREY, "L"), "PNG"),
    "RGB.png": _encode(Image.fromarray(np.repeat(_GREY[..., None], 3, 2), "RGB"), "PNG"),
    "RGBA.png": _encode(Image.fromarray(np.dstack([_GREY] * 3 + [np.full_like(_GREY, 255)]), "RGBA"), "PNG"),
    "LA.png": _encode(Image.fromarray(np.dstack([_GREY, np.full_like(_GREY, 255)]), "LA"), "PNG"),
    "P.png": _encode(Image.fromarray(_GREY, "L").convert("P"), "PNG"),
    "1.png": _encode(Image.fromarray(_GREY > 127).convert("1"), "PNG"),
    "I16.png": _encode(Image.fromarray(_GREY.astype(np.uint16) * 257), "PNG"),
    "L.jpg": _encode(Image.fromarray(_GREY, "L"), "JPEG", quality=90),
    "RGB.jpg": _encode(Image.fromarray(_rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8), "RGB"), "JPEG"),
}


def _png_with_size(seed: bytes, width: int, height: int, fix_crc: bool) -> bytes:
    """Rewrite the IHDR's width and height (a PNG's first chunk, at byte 16)."""
    data = bytearray(seed)
    data[16:24] = struct.pack(">II", width, height)
    if fix_crc:
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


@st.composite
def mutated_images(draw):
    name = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[name])
    kind = draw(st.sampled_from(["flip", "flip", "truncate", "splice", "size", "none"]))
    if kind == "flip":
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(data) - 1))
            data[at] ^= 1 << draw(st.integers(0, 7))
    elif kind == "truncate":
        data = data[:draw(st.integers(0, len(data)))]
    elif kind == "splice":
        at = draw(st.integers(0, len(data)))
        data[at:at + draw(st.integers(0, 16))] = draw(st.binary(max_size=16))
    elif kind == "size" and name.endswith(".png"):
        w = draw(st.one_of(st.integers(0, 64), st.sampled_from([SIZE, 2 ** 16, 2 ** 31 - 1, 2 ** 32 - 1])))
        h = draw(st.one_of(st.integers(0, 64), st.sampled_from([SIZE, 2 ** 16, 2 ** 31 - 1, 2 ** 32 - 1])))
        data = bytearray(_png_with_size(bytes(data), w, h, draw(st.booleans())))
    return name, bytes(data)


def _check_item(item: Item, channels: int) -> None:
    assert isinstance(item, Item)
    assert item.image.dtype == torch.float32 and tuple(item.image.shape) == (channels, SIZE, SIZE)
    assert torch.isfinite(item.image).all() and item.image.min() >= 0 and item.image.max() <= 1
    assert item.conversion is None or (isinstance(item.conversion, str) and "\n" not in item.conversion)


def _read_image(scratch: Path, name: str, data: bytes, channels: int):
    path = scratch / name
    path.write_bytes(data)
    try:
        item = _from_pil(path, channels, SIZE)
    except AttribkitError as exc:
        assert str(path) in str(exc) or path.name in str(exc), str(exc)
        assert "\n" not in str(exc)
        return None
    _check_item(item, channels)
    return item


@FUZZ
@given(mutated_images(), st.sampled_from([1, 3]))
def test_image_reader_on_mutated_png_and_jpeg(scratch, image, channels):
    name, data = image
    _read_image(scratch, name, data, channels)


@FUZZ
@given(st.binary(max_size=512), st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM"]))
def test_image_reader_on_arbitrary_bytes(scratch, data, magic):
    _read_image(scratch, "any.png", magic + data, 1)


def test_unmutated_seeds_read_as_documented(scratch):
    """The fuzzers' seeds themselves: every mode that has a lossless reading is read, the rest refused."""
    read = {name: _read_image(scratch, name, data, 1) for name, data in SEEDS.items()}
    assert {n for n, item in read.items() if item is None} == {"I16.png", "RGB.jpg"}
    for name in ("L.png", "RGB.png", "RGBA.png", "LA.png", "P.png"):
        assert torch.equal(read[name].image, torch.from_numpy(_GREY[None] / 255).float()), name


# --- attribute's safetensors reader ------------------------------------------------------

_BATCH = torch.from_numpy(_GREY[None, None] / 255).float().expand(2, 1, SIZE, SIZE)
ST_SEEDS = [
    st_save({"images": _BATCH.contiguous()}),
    st_save({"images": (_BATCH * 255).round().to(torch.uint8).contiguous(), "labels": torch.arange(2)}),
    st_save({"images": _BATCH.expand(2, 3, SIZE, SIZE).contiguous().half()}, metadata={"attribkit": "{}"}),
]
DTYPES = ["F32", "F16", "BF16", "F64", "U8", "I8", "I16", "I32", "I64", "BOOL", "U16", "F8_E4M3", "X1", "", "f32"]


def _header_bytes(header, body: bytes, claim: int | None = None) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if claim is None else claim) + raw + body


@st.composite
def crafted_safetensors(draw):
    """A header written by hand: any dtype, shape and offsets, over a body of any length."""
    shape = draw(st.lists(st.one_of(st.integers(0, 9), st.sampled_from([SIZE, -1, 2 ** 31, 2 ** 62])), max_size=5))
    start = draw(st.integers(0, 64))
    end = draw(st.one_of(st.integers(0, 2048), st.just(start + 4 * int(np.prod([max(s, 0) for s in shape]) or 0))))
    entry = {"dtype": draw(st.sampled_from(DTYPES)), "shape": shape, "data_offsets": [start, end]}
    if draw(st.booleans()):
        entry = draw(st.dictionaries(st.sampled_from(["dtype", "shape", "data_offsets"]), toml_values, max_size=3))
    header = {draw(st.sampled_from(["images", "pictures", "__metadata__"])): entry}
    if draw(st.booleans()):
        header["__metadata__"] = draw(st.one_of(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=2),
                                                toml_values))
    body = draw(st.binary(max_size=64)) + bytes(draw(st.integers(0, 2048)))
    claim = draw(st.one_of(st.none(), st.integers(0, 2 ** 64 - 1)))
    return _header_bytes(header, body, claim)


@st.composite
def mutated_safetensors(draw):
    data = bytearray(draw(st.sampled_from(ST_SEEDS)))
    kind = draw(st.sampled_from(["flip-header", "flip", "truncate", "length", "splice"]))
    header_end = 8 + int.from_bytes(data[:8], "little")
    if kind == "flip-header":
        at = draw(st.integers(0, header_end - 1))
        data[at] ^= 1 << draw(st.integers(0, 7))
    elif kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            at = draw(st.integers(0, len(data) - 1))
            data[at] ^= 1 << draw(st.integers(0, 7))
    elif kind == "truncate":
        data = data[:draw(st.integers(0, len(data)))]
    elif kind == "length":
        data[:8] = struct.pack("<Q", draw(st.one_of(st.integers(0, 2 ** 64 - 1), st.integers(0, len(data)))))
    else:
        at = draw(st.integers(8, header_end))
        data[at:at + draw(st.integers(0, 8))] = draw(st.binary(max_size=8))
    return bytes(data)


def _read_batch(scratch: Path, data: bytes, channels: int):
    path = scratch / "batch.safetensors"
    path.write_bytes(data)
    try:
        items = _from_safetensors(path, channels, SIZE)
    except AttribkitError as exc:
        assert "batch.safetensors" in str(exc) and "\n" not in str(exc), str(exc)
        return None
    assert items
    for item in items:
        _check_item(item, channels)
    return items


def _read_tensors(data: bytes):
    try:
        tensors, meta = tensors_from_bytes(data, "fuzz.safetensors")
    except AttribkitError as exc:
        assert "fuzz.safetensors" in str(exc) and "\n" not in str(exc), str(exc)
        return
    assert isinstance(tensors, dict) and isinstance(meta, dict)
    assert all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tensors.items())


@FUZZ
@given(st.one_of(mutated_safetensors(), crafted_safetensors()), st.sampled_from([1, 3]))
def test_safetensors_batch_reader(scratch, data, channels):
    _read_tensors(data)
    _read_batch(scratch, data, channels)


@FUZZ
@given(st.binary(max_size=256), st.integers(0, 2 ** 64 - 1))
def test_safetensors_reader_on_arbitrary_bytes(scratch, data, length):
    _read_tensors(data)
    _read_tensors(struct.pack("<Q", length) + data)
    _read_batch(scratch, struct.pack("<Q", min(length, len(data))) + data, 1)


def test_unmutated_batches_read(scratch):
    expected = [_BATCH[0], _BATCH[0], _BATCH[0].half().float()]  # float32, uint8 (exact: k/255), float16
    for data, want in zip(ST_SEEDS, expected):
        items = _read_batch(scratch, data, 1)
        assert items and all(torch.equal(i.image, want) for i in items)


def test_collect_inputs_on_a_folder_of_fuzzed_files(scratch):
    """A folder mixing good and broken images: refused as a whole, naming the broken one."""
    folder = scratch / "mixed"
    folder.mkdir(exist_ok=True)
    (folder / "a.png").write_bytes(SEEDS["L.png"])
    (folder / "b.png").write_bytes(SEEDS["L.png"][:40])
    with pytest.raises(AttribkitError, match="b.png"):
        collect_inputs([str(folder)], 1, SIZE)
