"""The bad-input corpus: every command, every kind of file attribkit reads.

Three kinds of case, each run through the real CLI (in-process, click's
CliRunner) on copies of the session fixtures:

* must-refuse: a non-zero exit, exactly one line on stderr, starting with
  "error:", that names the offending input (file, key or option); no
  traceback; and nothing already on disk changed (every file's bytes and
  mtime, and the set of files and folders, are the same afterwards).
* must-accept: the documented lossless conversions (grey RGB → 1 channel,
  an opaque alpha channel, palette → RGB, 1-bit → grey, uint8 batches, …):
  the conversion is reported and the model receives exactly the expected
  pixels.
* must-warn: the command works, and says what it ignored.

Cases assert names and a few key words, never whole messages: integrity
checks may catch a damaged file before the reader does, and either is fine.
Corrupted data sets and runs are also read with ``--no-verify``, and JSON
records are edited *with* their content hash updated, so the readers
themselves are proven robust, not only the hashes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import save as st_save

import attribkit.attribution as attribute_module
from attribkit import plugins, storage
from attribkit.attribution import collect_inputs
from attribkit.cli import cli

SIZE = 28  # the tiny run reads 1×28×28
GREY = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE), dtype=np.uint8)  # every grey level, seeded


# --- fixtures -----------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus_run(tiny_run):
    return tiny_run


_DIGESTS: dict[tuple, str] = {}  # (device, inode, size, mtime): sha256 — a write in place changes the mtime


def _tree(root: Path) -> dict:
    """Every file (sha256, size, mtime) and folder under root."""
    snap = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            snap[os.path.relpath(os.path.join(dirpath, d), root) + "/"] = None
        for f in filenames:
            p = os.path.join(dirpath, f)
            st = os.lstat(p)
            if not stat.S_ISREG(st.st_mode):  # a FIFO or a link: its kind and times, never its contents
                snap[os.path.relpath(p, root)] = (stat.S_IFMT(st.st_mode), st.st_mtime_ns)
                continue
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            if key not in _DIGESTS:
                with open(p, "rb") as fh:
                    _DIGESTS[key] = hashlib.sha256(fh.read()).hexdigest()
            snap[os.path.relpath(p, root)] = (_DIGESTS[key], st.st_size, st.st_mtime_ns)
    return snap


@pytest.fixture(scope="module", autouse=True)
def fixtures_untouched(tiny_data, tiny_zoo, corpus_run):
    """No case may write into the shared session fixtures (cases work on copies)."""
    before = {p: _tree(p) for p in (tiny_data, tiny_zoo, corpus_run)}
    yield
    assert {p: _tree(p) for p in before} == before


@pytest.fixture(scope="module", autouse=True)
def one_thread(fixtures_untouched):
    """Each case runs a tiny network once: on a busy 2-core machine torch's second
    thread only waits for the first (~50× slower); the fixtures were built before."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Workspace:
    """A case's own folder: copies of the fixtures, and the inputs it writes."""

    def __init__(self, root: Path, data: Path, zoo: Path, run: Path):
        self.root, self._src = root, {"data": data, "zoo": zoo, "run": run}

    def _copy(self, kind: str) -> Path:
        """A copy made of hard links (cheap): every change a case makes goes through replace(),
        which unlinks first, so the session fixture itself is never written; fixtures_untouched checks."""
        dst = self.root / kind
        if not dst.exists():
            shutil.copytree(self._src[kind], dst, copy_function=os.link)
        return dst

    def data(self) -> Path:
        return self._copy("data")

    def zoo(self) -> Path:
        return self._copy("zoo")

    def run(self) -> Path:
        return self._copy("run")

    def out(self, name: str = "out") -> Path:
        """A path that does not exist yet (and must not exist after a refusal)."""
        return self.root / "new" / name

    def put(self, name: str, data: bytes | str) -> Path:
        path = self.root / "in" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        replace(path, data.encode() if isinstance(data, str) else data)
        return path

    def image(self, name: str, pic: Image.Image, fmt: str = "PNG", **save) -> Path:
        buf = io.BytesIO()
        pic.save(buf, fmt, **save)
        return self.put(name, buf.getvalue())

    def batch(self, name: str, tensors: dict[str, torch.Tensor]) -> Path:
        return self.put(name, st_save({k: v.contiguous() for k, v in tensors.items()}))


def replace(path: Path, data: bytes) -> None:
    """Write a new file at path (never into the old one, which may be a fixture's hard link)."""
    path.unlink(missing_ok=True)
    path.write_bytes(data)


def edit_json(path: Path, change: Callable, rehash: bool = True) -> None:
    """Apply change(data) (returning the new data, or None to keep the mutated one);
    with rehash, update the record's own content hash so only the reader can object."""
    data = json.loads(path.read_text())
    new = change(data)
    data = data if new is None else new
    if rehash and isinstance(data, dict) and storage.CONTENT_HASH in data:
        data[storage.CONTENT_HASH] = storage.content_hash(data)
    replace(path, json.dumps(data).encode())


def manifest_path(data: Path) -> Path:
    return data / "manifest.json"


def first_shard(data: Path, split: str = "train") -> str:
    manifest = json.loads(manifest_path(data).read_text())
    return sorted(n for n, s in manifest["shards"].items() if s["split"] == split)[0]


def set_data_file(data: Path, name: str, content: bytes, record: bool = True) -> Path:
    """Replace a data set file; with record, its recorded hash too (so it passes verification)."""
    replace(data / name, content)
    if record:
        edit_json(manifest_path(data), lambda m: m[storage.FILES].__setitem__(name, storage.FileRecord.of(content).to_json()))
    return data / name


def set_run_weights(run: Path, content: bytes, record: bool = True) -> Path:
    replace(run / "weights.safetensors", content)
    if record:
        edit_json(run / "run.json", lambda m: m[storage.FILES].__setitem__(
            "weights.safetensors", storage.FileRecord.of(content).to_json()))
    return run / "weights.safetensors"


def flip(data: bytes, at: int, bit: int = 0x01) -> bytes:
    b = bytearray(data)
    b[at % len(b)] ^= bit
    return bytes(b)


def st_header(header: dict | list | str, body: bytes = b"", claim: int | None = None) -> bytes:
    """A safetensors file by hand: 8-byte little-endian header length, JSON header, data."""
    raw = header if isinstance(header, str) else json.dumps(header)
    raw = raw.encode()
    return struct.pack("<Q", len(raw) if claim is None else claim) + raw + body


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(width: int, height: int, bit_depth: int = 1, colour: int = 0, idat: bytes | None = None) -> bytes:
    """A PNG by hand; without idat, a valid all-zero image streamed through zlib
    (a 30,000 × 30,000 1-bit bomb is ~110 kB)."""
    if idat is None:
        row = b"\0" * (1 + (width * bit_depth * (3 if colour == 2 else 1) + 7) // 8)
        z = zlib.compressobj(9)
        rows = 1000
        idat = b"".join(z.compress(row * min(rows, height - i)) for i in range(0, height, rows)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


_BOMB: dict[tuple[int, int], bytes] = {}


def bomb(width: int, height: int) -> bytes:
    if (width, height) not in _BOMB:
        _BOMB[(width, height)] = png_bytes(width, height)
    return _BOMB[(width, height)]


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small valid JPEG whose frame header (SOF0) is rewritten to claim another size."""
    buf = io.BytesIO()
    Image.fromarray(GREY, "L").save(buf, "JPEG", quality=90)
    data = bytearray(buf.getvalue())
    at = data.index(b"\xff\xc0")
    data[at + 5:at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def colour_image(size: int = SIZE) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def grey_rgb() -> np.ndarray:
    return np.repeat(GREY[..., None], 3, axis=2)


def with_alpha(arr: np.ndarray, alpha: int | np.ndarray = 255) -> np.ndarray:
    a = np.broadcast_to(np.asarray(alpha, np.uint8), arr.shape[:2])
    return np.concatenate([arr if arr.ndim == 3 else arr[..., None], a[..., None]], axis=2)


def grey_palette(transparent_index: int | None = None, use_transparent: bool = False) -> Image.Image:
    """A palette image whose palette is the 256 greys; pixel value = palette index."""
    pic = Image.fromarray(GREY, "L").convert("P")
    pic.putpalette([v for g in range(256) for v in (g, g, g)])
    idx = GREY.copy()
    if transparent_index is not None:
        # free the transparent index, then use it (or not) for one pixel
        idx[idx == transparent_index] = (transparent_index + 1) % 256
        if use_transparent:
            idx[0, 0] = transparent_index
    pic = Image.fromarray(idx, "P")
    pic.putpalette([v for g in range(256) for v in (g, g, g)])
    if transparent_index is not None:
        pic.info["transparency"] = transparent_index
    return pic


# --- the scenario files ---------------------------------------------------

SCENARIO = {
    "name": '"corpus"', "dataset": '"digits"', "victims": '["tiny-resnet"]', "top": "",
    "train": "2", "test": "1", "attack": '"fgsm"', "grid": "{ eps = [20, 100] }", "attack_extra": "",
}


def scenario_text(**over) -> str:
    v = {**SCENARIO, **over}
    return (f"name = {v['name']}\ndataset = {v['dataset']}\nvictims = {v['victims']}\n{v['top']}\n"
            f"[cells]\ntrain = {v['train']}\ntest = {v['test']}\n\n"
            f"[[attacks]]\nname = {v['attack']}\ngrid = {v['grid']}\n{v['attack_extra']}\n")


# --- the case tables ----------------------------------------------------------

@dataclass
class Call:
    argv: list
    names: tuple = ()  # each must appear in the error line; a tuple entry means "any of these"
    env: dict | None = None


@dataclass
class Case:
    id: str
    build: Callable[[Workspace], Call]


REFUSE: list[Case] = []


def refuse(case_id: str, names=(), env=None):
    """Register a must-refuse case whose builder returns argv (names default to none extra)."""
    def register(build):
        def full(w: Workspace) -> Call:
            got = build(w)
            got = got if isinstance(got, Call) else Call(got)
            return Call([str(a) for a in got.argv], (*got.names, *names), got.env or env)
        REFUSE.append(Case(case_id, full))
        return build
    return register


def refuse_both(case_id: str, names=()):
    """A damaged data set / run: refused with verification, and with --no-verify (the reader itself)."""
    def register(build):
        refuse(case_id, names)(build)
        def unverified(w: Workspace) -> Call:
            got = build(w)
            got = got if isinstance(got, Call) else Call(got)
            return Call([*got.argv, "--no-verify"], got.names, got.env)
        refuse(case_id + "--no-verify", names)(unverified)
        return build
    return register


# scenario TOML -> `generate`; the error names the file and the key

def _gen(w: Workspace, text: str | bytes, name: str = "bad.toml"):
    """generate with this scenario (cases that get as far as loading a data set use the small ``digits``)."""
    return ["generate", "--scenario", w.put(name, text), "--out", w.out("gen"), "--zoo", w.zoo()]


SCENARIO_CASES = [
    # id, scenario text (or overrides), names the line must hold besides the file
    ("syntax-error", "name = \n", ()),
    ("not-utf8", b"name = \"\xff\xfe\"\n", ()),
    ("nul-byte", 'name = "a\0b"\n', ()),
    ("deeply-nested", "x = " + "[" * 5000 + "]" * 5000 + "\n", ()),
    ("empty-file", "", ("dataset",)),
    ("missing-cells", "\n".join(line for line in scenario_text().splitlines()
                                if not line.startswith(("[cells]", "train =", "test ="))), ("cells",)),
    ("cells-is-array", scenario_text().replace("[cells]", "[[cells]]"), ("cells",)),
    ("cells-train-string", dict(train='"4"'), ("cells.train",)),
    ("cells-train-float", dict(train="2.5"), ("cells.train",)),
    ("cells-train-bool", dict(train="true"), ("cells.train",)),
    ("cells-train-zero", dict(train="0"), ("train",)),
    ("cells-test-negative", dict(test="-3"), ("test",)),
    ("cells-train-inf", dict(train="inf"), ("cells.train",)),
    ("cells-train-nan", dict(train="nan"), ("cells.train",)),
    ("cells-unknown-key", scenario_text().replace("test = 1", "test = 1\nvalidate = 1"), ("validate",)),
    ("test-fraction-nan", dict(top="test_fraction = nan"), ("test_fraction",)),
    ("test-fraction-one", dict(top="test_fraction = 1.0"), ("test_fraction",)),
    ("test-fraction-string", dict(top='test_fraction = "0.2"'), ("test_fraction",)),
    ("batch-size-zero", dict(top="batch_size = 0"), ("batch_size",)),
    ("batch-size-negative-huge", dict(top="batch_size = -9223372036854775808"), ("batch_size",)),
    ("max-attempts-nan", dict(top="max_attempts_factor = nan"), ("max_attempts_factor",)),
    ("max-attempts-inf", dict(top="max_attempts_factor = inf"), ("max_attempts_factor",)),
    ("max-attempts-below-one", dict(top="max_attempts_factor = 0.5"), ("max_attempts_factor",)),
    ("seed-string", dict(top='seed = "7"'), ("seed",)),
    ("seed-float", dict(top="seed = 1.5"), ("seed",)),
    ("keep-failed-string", dict(top='keep_failed = "yes"'), ("keep_failed",)),
    ("name-int", dict(name="5"), ("name",)),
    ("zoo-int", dict(top="zoo = 5"), ("zoo",)),
    ("unknown-top-key", dict(top="epochs = 3"), ("epochs",)),
    ("unknown-unicode-key", dict(top="\"épsilon\" = 1"), ("épsilon",)),
    ("dataset-unknown", dict(dataset='"mnist6k"'), ("mnist6k",)),
    ("dataset-int", dict(dataset="5"), ("dataset",)),
    ("dataset-empty", dict(dataset='""'), ("dataset",)),
    ("victims-empty", dict(victims="[]"), ("victims",)),
    ("victims-not-list", dict(victims='"tiny-resnet"'), ("victims",)),
    ("victims-int", dict(victims="[5]"), ("victims[0]",)),
    ("victims-twice", dict(victims='["tiny-resnet", "tiny-resnet"]'), ("victims",)),
    ("victim-unknown-key", dict(victims='[{ name = "x", layers = 3 }]'), ("layers",)),
    ("victim-no-name", dict(victims='[{ timm = "resnet18", checkpoint = "x" }]'), ("name",)),
    ("victim-timm-without-checkpoint", dict(victims='[{ name = "x", timm = "resnet18" }]'), ("checkpoint",)),
    ("victim-std-zero", dict(victims='[{ name = "x", timm = "resnet18", checkpoint = "c", std = [0.0] }]'), ("std",)),
    ("victim-mean-nan", dict(victims='[{ name = "x", timm = "resnet18", checkpoint = "c", mean = [nan] }]'), ("mean",)),
    ("victim-mean-string", dict(victims='[{ name = "x", timm = "resnet18", checkpoint = "c", mean = ["a"] }]'), ("mean",)),
    ("victim-resize-zero", dict(victims='[{ name = "x", timm = "resnet18", checkpoint = "c", resize_to = 0 }]'), ("resize_to",)),
    ("victim-resize-huge", dict(victims='[{ name = "x", timm = "resnet18", checkpoint = "c", resize_to = 100000 }]'), ("resize_to",)),
    ("attacks-empty", scenario_text().split("[[attacks]]")[0] + "attacks = []\n", ("attacks",)),
    ("attack-unknown", dict(attack='"pgdd"'), ("pgdd",)),
    ("attack-empty-name", dict(attack='""'), ("attack",)),
    ("attack-name-int", dict(attack="3"), ("name",)),
    ("attack-unknown-key", dict(attack_extra="epsilon = 3"), ("epsilon",)),
    ("attack-twice", scenario_text() + '\n[[attacks]]\nname = "fgsm"\n', ("attacks",)),
    ("grid-unknown-hyperparameter", dict(grid="{ kappa = [1] }"), ("kappa",)),
    ("grid-empty", dict(grid="{ eps = [] }"), ("eps",)),
    ("grid-nan", dict(grid="{ eps = [nan] }"), ("eps",)),
    ("grid-inf", dict(grid="{ eps = [inf] }"), ("eps",)),
    ("grid-out-of-range", dict(grid="{ eps = [300] }"), ("eps",)),
    ("grid-negative", dict(grid="{ eps = [-1] }"), ("eps",)),
    ("grid-string", dict(grid='{ eps = "20" }'), ("eps",)),
    ("grid-bool", dict(grid="{ eps = [true] }"), ("eps",)),
    ("grid-repeats", dict(grid="{ eps = [20, 20] }"), ("eps",)),
    ("grid-not-table", dict(grid="[20]"), ("grid",)),
    ("grid-range-inverted", dict(grid="{ eps = { start = 100, stop = 20, step = 10 } }"), ("eps",)),
    ("grid-range-step-zero", dict(grid="{ eps = { start = 10, stop = 20, step = 0 } }"), ("eps",)),
    ("grid-range-step-nan", dict(grid="{ eps = { start = 10, stop = 20, step = nan } }"), ("eps",)),
    ("grid-range-stop-inf", dict(grid="{ eps = { start = 10, stop = inf, step = 1 } }"), ("eps",)),
    ("grid-range-billions", dict(grid="{ eps = { start = 0, stop = 255, step = 1e-300 } }"), ("eps",)),
    ("grid-range-missing-stop", dict(grid="{ eps = { start = 10, step = 1 } }"), ("stop",)),
    ("settings-unknown", dict(attack='"pgd"', attack_extra="settings = { stepz = 3 }"), ("stepz",)),
    ("settings-string", dict(attack='"pgd"', attack_extra='settings = { steps = "3" }'), ("steps",)),
    ("settings-float-for-int", dict(attack='"pgd"', attack_extra="settings = { steps = 2.5 }"), ("steps",)),
    ("settings-negative", dict(attack='"pgd"', attack_extra="settings = { steps = -1 }"), ("steps",)),
    ("settings-nan", dict(attack='"pgd"', attack_extra="settings = { alpha = nan }"), ("alpha",)),
    ("settings-int-for-bool", dict(attack='"pgd"', attack_extra="settings = { random_start = 1 }"), ("random_start",)),
]

for _id, _text, _names in SCENARIO_CASES:
    def _build(w, text=_text, case_id=_id):
        body = scenario_text(**text) if isinstance(text, dict) else text
        return _gen(w, body, f"{case_id}.toml")
    refuse(f"scenario/{_id}", names=(f"{_id}.toml", *_names))(_build)


@refuse("scenario/cells-train-more-than-the-split", names=("cells.train",))
def _(w):
    return _gen(w, scenario_text(train="9223372036854775807"))


@refuse("scenario/is-a-folder", names=("scenario",))
def _(w):
    (w.root / "in" / "folder.toml").mkdir(parents=True)
    return ["generate", "--scenario", w.root / "in" / "folder.toml", "--out", w.out("gen")]


@refuse("scenario/neither-file-nor-builtin", names=("nosuch.toml",))
def _(w):
    return ["generate", "--scenario", "nosuch.toml", "--out", w.out("gen")]


@refuse("generate/victim-not-in-zoo", names=("nosuch-victim",))
def _(w):
    return _gen(w, scenario_text(victims='["nosuch-victim"]'))


@refuse("generate/victim-empty-name", names=(("victims[0]", "victim ''"),))
def _(w):
    return _gen(w, scenario_text(victims='[""]'))


@refuse("generate/checkpoint-missing", names=("nosuch.safetensors",))
def _(w):
    return _gen(w, scenario_text(victims='[{ name = "x", timm = "resnet18", checkpoint = "/nonexistent/nosuch.safetensors" }]'))


@refuse("generate/checkpoint-zero-bytes", names=("empty.safetensors",))
def _(w):
    ckpt = w.put("empty.safetensors", b"")
    return _gen(w, scenario_text(victims=f'[{{ name = "x", timm = "resnet18", checkpoint = "{ckpt}" }}]'))


@refuse("generate/checkpoint-not-safetensors", names=("weights.safetensors",))
def _(w):
    ckpt = w.put("weights.safetensors", b"PK\x03\x04 this is a zip, as torch.save writes")
    return _gen(w, scenario_text(victims=f'[{{ name = "x", timm = "resnet18", checkpoint = "{ckpt}" }}]'))


@refuse("generate/timm-model-unknown", names=("nosuchnet",))
def _(w):
    ckpt = w.put("ok.safetensors", st_save({"w": torch.zeros(1)}))
    return _gen(w, scenario_text(victims=f'[{{ name = "x", timm = "nosuchnet", checkpoint = "{ckpt}" }}]'))


@refuse("generate/dataset-folder-missing", names=("nonexistent-images",))
def _(w):
    return _gen(w, scenario_text(dataset='"folder:/nonexistent-images"'))


@refuse("generate/dataset-takes-no-argument", names=("mnist5k",))
def _(w):
    return _gen(w, scenario_text(dataset='"mnist5k:x"'))


@refuse("generate/out-not-a-data-set", names=("--out",))
def _(w):
    w.put("notes.txt", "mine")
    return ["generate", "--scenario", w.put("ok.toml", scenario_text()), "--out", w.root / "in", "--zoo", w.zoo()]


@refuse("generate/out-is-a-file", names=("--out",))
def _(w):
    return ["generate", "--scenario", "quick", "--out", w.put("file", "x")]


@refuse("generate/out-holds-another-scenario", names=(("--out", "data"),))
def _(w):
    return ["generate", "--scenario", w.put("ok.toml", scenario_text()), "--out", w.data(), "--zoo", w.zoo()]


@refuse("generate/resume-corrupt-manifest", names=("manifest.json",))
def _(w):
    replace(manifest_path(w.data()), b'{"format": "attribkit-data/1", "shards": ')
    return ["generate", "--scenario", w.put("ok.toml", scenario_text()), "--out", w.data(), "--zoo", w.zoo()]


@refuse("generate/missing-scenario-option", names=("--scenario",))
def _(w):
    return ["generate", "--out", w.out("gen")]


@refuse("generate/zoo-is-a-file", names=("--zoo",))
def _(w):
    return ["generate", "--scenario", "quick", "--out", w.out("gen"), "--zoo", w.put("zoo", "x")]


# `victims train` / `victims list`

for _id, _argv, _names in [
    ("epochs-zero", ["--epochs", "0"], ("epochs",)),
    ("epochs-negative", ["--epochs", "-1"], ("epochs",)),
    ("epochs-not-int", ["--epochs", "two"], ("epochs",)),
    ("width-zero", ["--width", "0"], ("width",)),
    ("width-five", ["--width", "5"], ("width",)),
    ("width-nan", ["--width", "nan"], ("width",)),
    ("width-negative", ["--width", "-0.5"], ("width",)),
    ("arch-unknown", ["--arch", "resnet19"], ("resnet19",)),
    ("dataset-unknown", ["--dataset", "cifar"], ("cifar",)),
    ("dataset-needs-argument", ["--dataset", "folder"], ("folder",)),
    ("dataset-folder-missing", ["--dataset", "folder:/nonexistent-images"], ("nonexistent-images",)),
    ("seed-not-int", ["--seed", "x"], ("seed",)),
]:
    refuse(f"victims-train/{_id}", names=_names)(
        lambda w, argv=_argv: ["victims", "train", "--arch", "resnet18", "--out", w.out("zoo"), "--dataset", "digits",
                               *argv])


@refuse("victims-train/out-is-a-file", names=("--out",))
def _(w):
    return ["victims", "train", "--out", w.put("zoo", "x")]


@refuse("victims-list/zoo-missing", names=("nonexistent-zoo",))
def _(w):
    return ["victims", "list", "--zoo", w.root / "nonexistent-zoo"]


@refuse("victims-list/zoo-is-a-file", names=("--zoo",))
def _(w):
    return ["victims", "list", "--zoo", w.put("zoo.json", "{}")]


def _zoo_record(w: Workspace, change, rehash=True, raw: bytes | None = None) -> list:
    zoo = w.zoo()
    path = zoo / "tiny-resnet.json"
    if raw is not None:
        replace(path, raw)
    else:
        edit_json(path, change, rehash)
    return ["victims", "list", "--zoo", zoo]


for _id, _kwargs in [
    ("not-json", dict(change=None, raw=b"{not json")),
    ("json-list", dict(change=None, raw=b"[1, 2]")),
    ("empty-file", dict(change=None, raw=b"")),
    ("format-unknown", dict(change=lambda d: d.__setitem__("format", "attribkit-victim/9"))),
    ("edited-without-its-hash", dict(change=lambda d: d.__setitem__("test_accuracy", 1.0), rehash=False)),
    ("missing-num-classes", dict(change=lambda d: d.pop("num_classes"))),
    ("width-string", dict(change=lambda d: d.__setitem__("width", "wide"))),
    ("in-chans-string", dict(change=lambda d: d.__setitem__("in_chans", "1"))),
    ("mean-not-list", dict(change=lambda d: d.__setitem__("mean", 0.5))),
    ("unknown-key", dict(change=lambda d: d.__setitem__("layers", 3))),
]:
    refuse(f"victims-list/record-{_id}", names=("tiny-resnet.json",))(lambda w, kw=_kwargs: _zoo_record(w, **kw))


def _zoo_weights_truncated(w):
    weights = w.zoo() / "tiny-resnet.safetensors"
    replace(weights, weights.read_bytes()[:1000])
    return _gen(w, scenario_text())


refuse("generate/zoo-weights-truncated", names=("tiny-resnet.safetensors",))(_zoo_weights_truncated)
refuse("generate/zoo-weights-truncated--no-verify", names=("tiny-resnet.safetensors",))(
    lambda w: [*_zoo_weights_truncated(w), "--no-verify"])


@refuse("generate/zoo-record-width-string", names=("tiny-resnet.json",))
def _(w):
    edit_json(w.zoo() / "tiny-resnet.json", lambda d: d.__setitem__("width", "wide"))
    return _gen(w, scenario_text())


# `train`: options, then data sets

def _train(w: Workspace, *extra, data: Path | None = None) -> list:
    return ["train", "--data", data or w.data(), "--out", w.out("run"), "--width", "0.125", "--epochs", "1",
            "--batch-size", "16", "--input-scale", "1", *extra]


for _id, _argv, _names in [
    ("epochs-zero", ["--epochs", "0"], ("epochs",)),
    ("epochs-negative", ["--epochs", "-1"], ("epochs",)),
    ("batch-size-zero", ["--batch-size", "0"], (("batch-size", "batch_size"),)),
    ("width-zero", ["--width", "0"], ("width",)),
    ("width-five", ["--width", "5"], ("width",)),
    ("width-nan", ["--width", "nan"], ("width",)),
    ("lr-negative", ["--lr", "-1"], ("lr",)),
    ("lr-zero", ["--lr", "0"], ("lr",)),
    ("lr-nan", ["--lr", "nan"], ("lr",)),
    ("lr-inf", ["--lr", "inf"], ("lr",)),
    ("weight-decay-negative", ["--weight-decay", "-1"], (("weight-decay", "weight_decay"),)),
    ("weight-decay-nan", ["--weight-decay", "nan"], (("weight-decay", "weight_decay"),)),
    ("input-scale-zero", ["--input-scale", "0"], (("input-scale", "input_scale"),)),
    ("input-scale-negative", ["--input-scale", "-3"], (("input-scale", "input_scale"),)),
    ("model-unknown", ["--model", "mtab"], ("--model",)),
    ("loss-unknown", ["--loss", "max"], ("--loss",)),
]:
    refuse(f"train/{_id}", names=_names)(lambda w, argv=_argv: _train(w, *argv, data=w.root / "nodata"))


@refuse("train/backbone-unknown", names=("vit",))
def _(w):
    return _train(w, "--backbone", "vit")


@refuse("train/head-unknown", names=("nosuchhead",))
def _(w):
    return _train(w, "--head", "nosuchhead")


@refuse("train/data-missing", names=("nonexistent-data",))
def _(w):
    return _train(w, data=w.root / "nonexistent-data")


@refuse("train/data-is-a-file", names=("--data",))
def _(w):
    return _train(w, data=w.put("data.safetensors", b"x"))


@refuse("train/data-empty-folder", names=("manifest.json",))
def _(w):
    (w.root / "empty").mkdir()
    return _train(w, data=w.root / "empty")


@refuse("train/data-is-a-run", names=("manifest.json",))
def _(w):
    return _train(w, data=w.run())


@refuse("train/out-not-empty", names=("--out",))
def _(w):
    return ["train", "--data", w.data(), "--out", w.run()]


@refuse("train/out-is-a-file", names=("--out",))
def _(w):
    return ["train", "--data", w.data(), "--out", w.put("run", "x")]


# a damaged data set, read by `train` (and one by `evaluate`), verified and not

def _manifest_raw(raw: bytes):
    def build(w):
        replace(manifest_path(w.data()), raw)
        return _train(w)
    return build


def _manifest_edit(change, rehash=True):
    def build(w):
        edit_json(manifest_path(w.data()), change, rehash)
        return _train(w)
    return build


def _pop_shard_key(key):
    return lambda m: next(iter(m["shards"].values())).pop(key)


for _id, _build in [
    ("not-json", _manifest_raw(b"{oops")),
    ("empty", _manifest_raw(b"")),
    ("not-utf8", _manifest_raw(b"\xff\xfe{}")),
    ("json-list", _manifest_raw(b"[]")),
    ("json-string", _manifest_raw(b'"attribkit-data/1"')),
    ("deeply-nested", _manifest_raw(b"[" * 100000 + b"]" * 100000)),
    ("format-other", _manifest_edit(lambda m: m.__setitem__("format", "attribkit-data/2"))),
    ("format-missing", _manifest_edit(lambda m: m.pop("format"))),
    ("shards-missing", _manifest_edit(lambda m: m.pop("shards"))),
    ("shards-list", _manifest_edit(lambda m: m.__setitem__("shards", []))),
    ("label-spaces-list", _manifest_edit(lambda m: m.__setitem__("label_spaces", []))),
    ("hyperparameters-list", _manifest_edit(lambda m: m["label_spaces"].__setitem__("hyperparameters", ["eps"]))),
    ("attack-labels-missing", _manifest_edit(lambda m: m["label_spaces"].pop("attack"))),
    ("shard-entry-not-object", _manifest_edit(lambda m: m["shards"].__setitem__(next(iter(m["shards"])), "done"))),
    ("shard-entry-without-split", _manifest_edit(_pop_shard_key("split"))),
    ("shard-examples-string", _manifest_edit(lambda m: next(iter(m["shards"].values())).__setitem__("examples", "4"))),
    ("fingerprint-int", _manifest_edit(lambda m: m.__setitem__("fingerprint", 5))),
]:
    refuse_both(f"data/manifest-{_id}", names=("manifest.json",))(_build)

# the records of hashes themselves: only read when verifying (--no-verify ignores them, by design)
for _id, _build in [
    ("edited-without-its-hash", _manifest_edit(lambda m: m.__setitem__("status", "done"), rehash=False)),
    ("files-not-object", _manifest_edit(lambda m: m.__setitem__("files", ["clean.safetensors"]))),
    ("file-record-malformed", _manifest_edit(lambda m: m["files"].__setitem__("clean.safetensors", "abc"))),
]:
    refuse(f"data/manifest-{_id}", names=("manifest.json",))(_build)


def _shard(change: Callable[[Path, str], bytes], record: bool = True, which: str = "shard"):
    """Replace the first train shard (or clean.safetensors) by change(path, name)."""
    def build(w):
        data = w.data()
        name = f"shards/{first_shard(data)}" if which == "shard" else "clean.safetensors"
        set_data_file(data, name, change(data, name), record)
        return Call(_train(w), (Path(name).name,))
    return build


def _tensors(mutate: Callable[[dict], None]):
    def change(data: Path, name: str) -> bytes:
        tensors, meta = storage.read_tensors(data / name)
        mutate(tensors)
        return st_save({k: v.contiguous() for k, v in tensors.items()})
    return change


for _id, _change, _record in [
    ("zero-bytes", lambda d, n: b"", True),
    ("seven-bytes", lambda d, n: b"\x01" * 7, True),
    ("truncated", lambda d, n: (d / n).read_bytes()[: len((d / n).read_bytes()) // 2], True),
    ("truncated-unrecorded", lambda d, n: (d / n).read_bytes()[:-100], False),
    ("header-claims-2-to-62", lambda d, n: struct.pack("<Q", 1 << 62) + (d / n).read_bytes()[8:], True),
    ("header-claims-more-than-file", lambda d, n: struct.pack("<Q", 10_000_000) + (d / n).read_bytes()[8:], True),
    ("header-flipped", lambda d, n: flip((d / n).read_bytes(), 9, 0x40), True),
    ("header-not-object", lambda d, n: st_header([1, 2, 3]), True),
    ("offsets-out-of-range", lambda d, n: st_header({"images": {"dtype": "F32", "shape": [1, 1, 28, 28],
                                                                 "data_offsets": [0, 10 ** 12]}}, b"\0" * 16), True),
    ("dtype-unknown", lambda d, n: st_header({"images": {"dtype": "F9", "shape": [1], "data_offsets": [0, 4]}},
                                             b"\0" * 4), True),
    ("shape-lies", lambda d, n: st_header({"images": {"dtype": "F32", "shape": [1 << 40, 1, 28, 28],
                                                      "data_offsets": [0, 4]}}, b"\0" * 4), True),
    ("no-images", _tensors(lambda t: t.pop("images")), True),
    ("images-rank-3", _tensors(lambda t: t.__setitem__("images", t["images"][:, 0])), True),
    ("images-other-size", _tensors(lambda t: t.__setitem__("images", torch.zeros(len(t["images"]), 1, 14, 14))), True),
    ("images-nan", _tensors(lambda t: t["images"].__setitem__((0, 0, 0, 0), float("nan"))), True),
    ("images-above-one", _tensors(lambda t: t["images"].__setitem__((0, 0, 0, 0), 7.0)), True),
    ("images-int64", _tensors(lambda t: t.__setitem__("images", (t["images"] * 255).long())), True),
    ("attack-label-out-of-range", _tensors(lambda t: t["attack"].fill_(99)), True),
    ("victim-label-negative", _tensors(lambda t: t["victim"].fill_(-1)), True),
    ("columns-of-other-lengths", _tensors(lambda t: t.__setitem__("attack", t["attack"][:1])), True),
    ("column-missing", _tensors(lambda t: t.pop("clean_index")), True),
    ("hp-column-string-dtype", _tensors(lambda t: t.__setitem__("hp_eps", torch.zeros(len(t["images"]), 3))), True),
]:
    refuse_both(f"data/shard-{_id}")(_shard(_change, _record))


@refuse_both("data/shard-clean-index-out-of-range")
def _(w):
    data = w.data()
    name = f"shards/{first_shard(data)}"
    set_data_file(data, name, _tensors(lambda t: t["clean_index"].fill_(10 ** 9))(data, name))
    return Call(_train(w), ((first_shard(data), "clean.safetensors"),))


@refuse_both("data/shard-deleted")
def _(w):
    data = w.data()
    (data / "shards" / first_shard(data)).unlink()
    return Call(_train(w), (first_shard(data),))


@refuse_both("data/shards-folder-is-a-file")
def _(w):
    data = w.data()
    shutil.rmtree(data / "shards")
    (data / "shards").write_bytes(b"")
    return Call(_train(w), (("shards",),))


@refuse("data/shard-bit-flipped-in-data")  # only a hash can see this one
def _(w):
    data = w.data()
    name = f"shards/{first_shard(data)}"
    content = (data / name).read_bytes()
    replace(data / name, flip(content, len(content) - 3))
    return Call(_train(w), (first_shard(data),))


for _id, _change in [
    ("deleted", None),
    ("truncated", lambda d, n: (d / n).read_bytes()[:4096]),
    ("no-images", _tensors(lambda t: t.pop("images"))),
    ("too-few-images", _tensors(lambda t: t.__setitem__("images", t["images"][:3]))),
]:
    def _clean_build(w, change=_change):
        data = w.data()
        if change is None:
            (data / "clean.safetensors").unlink()
        else:
            set_data_file(data, "clean.safetensors", change(data, "clean.safetensors"))
        return _train(w)
    refuse_both(f"data/clean-{_id}", names=("clean.safetensors",))(_clean_build)


# `evaluate`: runs and data sets

def _evaluate(w: Workspace, run=None, data=None, *extra) -> list:
    return ["evaluate", "--run", run or w.run(), "--data", data or w.data(), *extra]


@refuse("evaluate/run-missing", names=("nonexistent-run",))
def _(w):
    return _evaluate(w, run=w.root / "nonexistent-run")


@refuse("evaluate/run-is-a-file", names=("--run",))
def _(w):
    return _evaluate(w, run=w.put("run.json", "{}"))


@refuse("evaluate/run-is-a-data-set", names=("run.json",))
def _(w):
    return _evaluate(w, run=w.data())


@refuse("evaluate/data-missing", names=("nonexistent-data",))
def _(w):
    return _evaluate(w, data=w.root / "nonexistent-data")


@refuse("evaluate/data-is-a-run", names=("manifest.json",))
def _(w):
    return _evaluate(w, data=w.run())


@refuse("evaluate/baseline-missing", names=("nonexistent-baseline",))
def _(w):
    return _evaluate(w, None, None, "--baseline", w.root / "nonexistent-baseline")


@refuse("evaluate/split-unknown", names=("--split",))
def _(w):
    return _evaluate(w, None, None, "--split", "holdout")


@refuse("evaluate/out-is-a-file", names=("--out",))
def _(w):
    return _evaluate(w, None, None, "--out", w.put("report", "x"))


@refuse_both("evaluate/data-shard-truncated")
def _(w):
    data = w.data()
    name = f"shards/{first_shard(data, 'test')}"
    set_data_file(data, name, (data / name).read_bytes()[:500])
    return Call(_evaluate(w), (first_shard(data, "test"),))


def _run_raw(raw: bytes):
    def build(w):
        replace(w.run() / "run.json", raw)
        return _evaluate(w)
    return build


def _run_edit(change, rehash=True):
    def build(w):
        edit_json(w.run() / "run.json", change, rehash)
        return _evaluate(w)
    return build


for _id, _build, *_also in [
    ("not-json", _run_raw(b"{")),
    ("empty", _run_raw(b"")),
    ("json-list", _run_raw(b"[{}]")),
    ("json-null", _run_raw(b"null")),
    ("format-other", _run_edit(lambda m: m.__setitem__("format", "attribkit-data/1"))),
    ("config-missing", _run_edit(lambda m: m.pop("config"))),
    ("config-list", _run_edit(lambda m: m.__setitem__("config", []))),
    ("config-unknown-key", _run_edit(lambda m: m["config"].__setitem__("dropout", 0.5))),
    ("config-width-string", _run_edit(lambda m: m["config"].__setitem__("width", "narrow"))),
    ("config-epochs-float", _run_edit(lambda m: m["config"].__setitem__("epochs", 1.5))),
    ("config-heads-int", _run_edit(lambda m: m["config"].__setitem__("heads", 3))),
    ("config-model-unknown", _run_edit(lambda m: m["config"].__setitem__("model", "mtab"))),
    ("input-missing", _run_edit(lambda m: m.pop("input"))),
    ("input-in-chans-string", _run_edit(lambda m: m["input"].__setitem__("in_chans", "1"))),
    ("input-image-size-zero", _run_edit(lambda m: m["input"].__setitem__("image_size", 0))),
    ("label-spaces-attack-int", _run_edit(lambda m: m["label_spaces"].__setitem__("attack", 3))),
    ("label-spaces-hyperparameters-missing", _run_edit(lambda m: m["label_spaces"].pop("hyperparameters"))),
    ("target-stats-missing", _run_edit(lambda m: m.pop("target_stats"))),
    ("columns-string", _run_edit(lambda m: m.__setitem__("columns", "attack"))),
    ("width-other-than-weights", _run_edit(lambda m: m["config"].__setitem__("width", 0.25)), "weights.safetensors"),
    ("heads-plugin-missing", _run_edit(lambda m: m.__setitem__("heads", {"norm": "norm-head"})), "norm-head"),
]:
    refuse_both(f"run/run-json-{_id}", names=(("run.json", *_also),))(_build)
refuse("run/run-json-edited-without-its-hash", names=("run.json",))(  # only a hash can see this one
    _run_edit(lambda m: m["config"].__setitem__("epochs", 99), rehash=False))


def _weights(change: Callable[[bytes], bytes], record: bool = True):
    def build(w):
        run = w.run()
        set_run_weights(run, change((run / "weights.safetensors").read_bytes()), record)
        return _evaluate(w)
    return build


for _id, _build in [
    ("zero-bytes", _weights(lambda b: b"")),
    ("truncated", _weights(lambda b: b[: len(b) // 3])),
    ("header-claims-huge", _weights(lambda b: struct.pack("<Q", (1 << 64) - 1) + b[8:])),
    ("header-flipped", _weights(lambda b: flip(b, 8, 0x20))),
    ("other-tensors", _weights(lambda b: st_save({"mtaa/net.x": torch.zeros(3)}))),
    ("one-tensor-wrong-shape", _weights(lambda b: st_save({k: (torch.zeros(7, 3) if i == 0 else v).contiguous()
                                                            for i, (k, v) in enumerate(storage.tensors_from_bytes(b, "w")[0].items())}))),
]:
    refuse_both(f"run/weights-{_id}", names=("weights.safetensors",))(_build)


@refuse_both("run/weights-deleted", names=("weights.safetensors",))
def _(w):
    (w.run() / "weights.safetensors").unlink()
    return _evaluate(w)


@refuse("run/weights-bit-flipped-in-data", names=("weights.safetensors",))  # only a hash can see this one
def _(w):
    weights = w.run() / "weights.safetensors"
    content = weights.read_bytes()
    replace(weights, flip(content, len(content) - 5))
    return _evaluate(w)


# `attribute`: images, batches and folders

def _attr(w: Workspace, *inputs, run=None) -> list:
    return ["attribute", "--run", run or w.run(), *map(str, inputs)]


IMAGE_CASES: list[tuple[str, Callable[[Workspace], Path], tuple]] = [
    ("rgb-colour", lambda w: w.image("colour.png", Image.fromarray(colour_image(), "RGB")), ("channels",)),
    ("size-32", lambda w: w.image("big.png", Image.fromarray(np.zeros((32, 32), np.uint8), "L")), ("32×32",)),
    ("size-28x29", lambda w: w.image("tall.png", Image.fromarray(np.zeros((29, 28), np.uint8), "L")), ("28×29",)),
    ("size-1x1", lambda w: w.image("dot.png", Image.new("L", (1, 1))), ("1×1",)),
    ("zero-bytes", lambda w: w.put("empty.png", b""), ()),
    ("truncated-png", lambda w: w.put("cut.png", _png_of(GREY)[:60]), ()),
    ("truncated-idat", lambda w: w.put("cut-idat.png", png_bytes(28, 28, 8, 0, idat=zlib.compress(b"\0" * 100))), ()),
    ("bit-flipped-png", lambda w: w.put("flipped.png", flip(_png_of(GREY), 36, 0x10)), ()),
    ("garbage", lambda w: w.put("noise.png", bytes(range(256)) * 4), ()),
    ("text-named-png", lambda w: w.put("readme.png", "# not an image\n"), ()),
    ("rgba-transparent", lambda w: w.image("alpha.png", Image.fromarray(with_alpha(grey_rgb(), GREY), "RGBA")),
     ("transparent",)),
    ("la-transparent", lambda w: w.image("la.png", Image.fromarray(with_alpha(GREY, 128), "LA")), ("transparent",)),
    ("palette-transparent", lambda w: w.image("pal.png", grey_palette(7, use_transparent=True),
                                               transparency=7), ("transparent",)),
    ("i16-png", lambda w: w.image("deep.png", Image.fromarray(GREY.astype(np.uint16) * 257)), ("16-bit",)),
    ("rgb-16-bit-png", lambda w: w.put("rgb48.png", _png16(2, 3)), ("16-bit",)),
    ("rgba-16-bit-png", lambda w: w.put("rgba64.png", _png16(6, 4)), ("16-bit",)),
    ("la-16-bit-png", lambda w: w.put("la32.png", _png16(4, 2)), ("16-bit",)),
    ("i-mode-tiff-named-png", lambda w: w.image("int.png", Image.fromarray(GREY.astype(np.int32)), "TIFF"), ("TIFF",)),
    ("cmyk-jpeg", lambda w: w.image("cmyk.jpg", Image.fromarray(GREY, "L").convert("CMYK"), "JPEG"), ("CMYK",)),
    ("ycbcr-jpeg-colour", lambda w: w.image("ycc.jpg", Image.fromarray(colour_image(), "RGB").convert("YCbCr"),
                                            "JPEG"), ("channels",)),
    ("float-tiff", lambda w: w.image("float.tiff", Image.fromarray(GREY.astype(np.float32) / 255), "TIFF"), ()),
    ("float-tiff-named-png", lambda w: w.image("float.png", Image.fromarray(GREY.astype(np.float32) / 255), "TIFF"),
     ()),
    ("gif", lambda w: w.image("grey.gif", Image.fromarray(GREY, "L"), "GIF"), ()),
    ("gif-named-png", lambda w: w.image("gif.png", Image.fromarray(GREY, "L"), "GIF"), ("GIF",)),
    ("bmp", lambda w: w.image("grey.bmp", Image.fromarray(GREY, "L"), "BMP"), ()),
    ("bmp-named-jpg", lambda w: w.image("bmp.jpg", Image.fromarray(GREY, "L"), "BMP"), ("BMP",)),
    ("webp-named-png", lambda w: w.image("webp.png", Image.fromarray(GREY, "L"), "WEBP", lossless=True), ("WEBP",)),
    ("bomb-30000-png", lambda w: w.put("bomb.png", bomb(30000, 30000)), ("large",)),
    ("bomb-warning-zone-12000", lambda w: w.put("big12k.png", bomb(12000, 12000)), ("12000",)),
    ("bomb-header-only", lambda w: w.put("claims.png", png_bytes(65535, 65535, 8, 2, idat=zlib.compress(b""))),
     ("large",)),
    ("bomb-jpeg-sof", lambda w: w.put("bomb.jpg", jpeg_claiming(60000, 60000)), ("large",)),
    ("unknown-suffix", lambda w: w.put("image.txt", _png_of(GREY)), ()),
    ("no-suffix", lambda w: w.put("image", _png_of(GREY)), ()),
]


def _png16(colour: int, channels: int) -> bytes:
    """A 16-bit PNG of a grey image, every sample v stored as v·257 (what PIL would truncate back to v)."""
    samples = np.repeat(GREY.astype(">u2")[..., None] * 257, channels, axis=2)
    samples[..., channels - 1 if channels in (2, 4) else 0] = 65535 if channels in (2, 4) else samples[..., 0]
    raw = b"".join(b"\0" + row.tobytes() for row in samples)
    return png_bytes(SIZE, SIZE, 16, colour, idat=zlib.compress(raw))


def _png_of(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, "PNG")
    return buf.getvalue()


for _id, _make, _names in IMAGE_CASES:
    def _image_build(w, make=_make, names=_names):
        path = make(w)
        return Call([str(a) for a in _attr(w, path)], (path.name, *names))
    REFUSE.append(Case(f"attribute/image-{_id}", _image_build))


def _batch(name: str, tensors: dict | Callable[[], bytes], names=()):
    def build(w):
        path = w.put(name, tensors()) if callable(tensors) else w.batch(name, tensors)
        return Call([str(a) for a in _attr(w, path)], (name, *names))
    return build


_OK = torch.rand(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
for _id, _build in [
    ("zero-bytes", _batch("empty.safetensors", lambda: b"")),
    ("seven-bytes", _batch("short.safetensors", lambda: b"\0" * 7)),
    ("header-claims-huge", _batch("huge.safetensors", lambda: st_header("{}", claim=(1 << 63)))),
    ("header-claims-more-than-file", _batch("more.safetensors", lambda: st_header("{}", claim=100))),
    ("header-not-json", _batch("nojson.safetensors", lambda: st_header("{images:"))),
    ("header-list", _batch("list.safetensors", lambda: st_header([]))),
    ("header-nested-deeply", _batch("deep.safetensors", lambda: st_header("[" * 10000 + "]" * 10000))),
    ("offsets-out-of-range", _batch("offsets.safetensors", lambda: st_header(
        {"images": {"dtype": "F32", "shape": [1, 1, 28, 28], "data_offsets": [0, 3136]}}, b"\0" * 100))),
    ("offsets-reversed", _batch("reversed.safetensors", lambda: st_header(
        {"images": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, b"\0" * 4))),
    ("dtype-unknown", _batch("dtype.safetensors", lambda: st_header(
        {"images": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 1]}}, b"\0"))),
    ("shape-claims-huge", _batch("shape.safetensors", lambda: st_header(
        {"images": {"dtype": "U8", "shape": [1 << 62, 1, 28, 28], "data_offsets": [0, 784]}}, b"\0" * 784))),
    ("metadata-not-strings", _batch("meta.safetensors", lambda: st_header(
        {"__metadata__": {"attribkit": 5}, "images": {"dtype": "U8", "shape": [1, 1, 28, 28],
                                                      "data_offsets": [0, 784]}}, b"\0" * 784))),
    ("truncated", _batch("cut.safetensors", lambda: st_save({"images": _OK})[:-50])),
    ("bit-flipped-header", _batch("flipheader.safetensors", lambda: flip(st_save({"images": _OK}), 10, 0x40))),
    ("no-images", _batch("other.safetensors", {"pictures": _OK}, ("images",))),
    ("rank-3", _batch("rank3.safetensors", {"images": _OK[:, 0]}, ("images",))),
    ("rank-5", _batch("rank5.safetensors", {"images": _OK[None]}, ("images",))),
    ("empty-batch", _batch("none.safetensors", {"images": torch.zeros(0, 1, SIZE, SIZE)}, ("images",))),
    ("zero-channels", _batch("nochan.safetensors", {"images": torch.zeros(2, 0, SIZE, SIZE)}, ("images",))),
    ("nan", _batch("nan.safetensors", {"images": _OK.clone().index_fill_(0, torch.tensor([1]), float("nan"))},
                   ("NaN",))),
    ("inf", _batch("inf.safetensors", {"images": _OK.clone().index_fill_(0, torch.tensor([0]), float("inf"))},
                   ("inf",))),
    ("above-one", _batch("bright.safetensors", {"images": _OK * 2}, ("[0, 1]",))),
    ("negative", _batch("dark.safetensors", {"images": _OK - 1}, ("[0, 1]",))),
    ("int64", _batch("int.safetensors", {"images": (_OK * 255).long()}, ("int64",))),
    ("bool", _batch("bool.safetensors", {"images": _OK > 0.5}, ("bool",))),
    ("wrong-size", _batch("size.safetensors", {"images": torch.rand(2, 1, 32, 32)}, ("32×32",))),
    ("colour", _batch("colour.safetensors", {"images": torch.rand(2, 3, SIZE, SIZE)}, ("channels",))),
]:
    REFUSE.append(Case(f"attribute/batch-{_id}", _build))


@refuse("attribute/input-missing", names=("nonexistent.png",))
def _(w):
    return _attr(w, w.root / "nonexistent.png")


@refuse("attribute/folder-without-images", names=("no-images",))
def _(w):
    w.put("no-images/notes.txt", "x")
    return _attr(w, w.root / "in" / "no-images")


@refuse("attribute/folder-with-one-bad-image", names=("b-broken.png",))
def _(w):
    w.image("mixed/a-good.png", Image.fromarray(GREY, "L"))
    w.put("mixed/b-broken.png", b"\x89PNG\r\n\x1a\n")
    return _attr(w, w.root / "in" / "mixed")


@refuse("attribute/fifo-named-png", names=("pipe.png",))
def _(w):
    # reading a FIFO waits for a writer forever: a folder of uploads must not hang attribkit
    (w.root / "in").mkdir(exist_ok=True)
    os.mkfifo(w.root / "in" / "pipe.png")
    return _attr(w, w.root / "in" / "pipe.png")


@refuse("attribute/folder-with-a-fifo", names=("pipe.png",))
def _(w):
    w.image("uploads/a-good.png", Image.fromarray(GREY, "L"))
    os.mkfifo(w.root / "in" / "uploads" / "pipe.png")
    return _attr(w, w.root / "in" / "uploads")


@refuse("attribute/no-inputs", names=("INPUTS",))
def _(w):
    return ["attribute", "--run", w.run()]


@refuse("attribute/run-missing", names=("nonexistent-run",))
def _(w):
    return _attr(w, w.image("ok.png", Image.fromarray(GREY, "L")), run=w.root / "nonexistent-run")


@refuse_both("attribute/run-weights-truncated", names=("weights.safetensors",))
def _(w):
    run = w.run()
    set_run_weights(run, (run / "weights.safetensors").read_bytes()[:2000])
    return _attr(w, w.image("ok.png", Image.fromarray(GREY, "L")))


@refuse_both("attribute/run-json-input-missing", names=("run.json",))
def _(w):
    edit_json(w.run() / "run.json", lambda m: m.pop("input"))
    return _attr(w, w.image("ok.png", Image.fromarray(GREY, "L")))


# `list`, `plugins`, `demo`, `verify`

for _id, _argv, _names in [
    ("list/kind-unknown", ["list", "attackz"], ("attackz",)),
    ("list/option-unknown", ["list", "attacks", "--jsn"], ("--jsn",)),
    ("plugins/option-unknown", ["plugins", "--verbose"], ("--verbose",)),
    ("plugins/extra-argument", ["plugins", "foolbox"], ("foolbox",)),
    ("demo/option-unknown", ["demo", "--epochz", "1"], ("--epochz",)),
    ("demo/victim-epochs-zero", ["demo", "--victim-epochs", "0"], ("--victim-epochs",)),
    ("demo/epochs-negative", ["demo", "--epochs", "-2"], ("--epochs",)),
    ("demo/input-scale-zero", ["demo", "--input-scale", "0"], ("--input-scale",)),
    ("command-unknown", ["atribute"], ("atribute",)),
]:
    refuse(_id, names=_names)(lambda w, argv=_argv: argv)


@refuse("demo/width-zero", names=("width",))
def _(w):
    return ["demo", "--out", w.out("demo"), "--width", "0"]


@refuse("demo/victim-width-nan", names=("width",))
def _(w):
    sc = w.put("demo.toml", scenario_text(victims='["resnet18"]'))
    return ["demo", "--out", w.out("demo"), "--scenario", sc, "--victim-width", "nan"]


@refuse("demo/scenario-unknown", names=("nosuch",))
def _(w):
    return ["demo", "--out", w.out("demo"), "--scenario", "nosuch"]


@refuse("demo/out-is-a-file", names=("--out",))
def _(w):
    return ["demo", "--out", w.put("demo", "x")]


@refuse("verify/missing", names=("nonexistent",))
def _(w):
    return ["verify", w.root / "nonexistent"]


@refuse("verify/a-file", names=(("PATH", "path"),))
def _(w):
    return ["verify", w.put("manifest.json", "{}")]


@refuse("verify/not-attribkit", names=("in",))
def _(w):
    w.put("notes.txt", "x")
    return ["verify", w.root / "in"]


@refuse("verify/data-shard-flipped", names=("data",))
def _(w):
    data = w.data()
    shard = data / "shards" / first_shard(data)
    content = shard.read_bytes()
    replace(shard, flip(content, len(content) // 2))
    return ["verify", data]


@refuse("verify/run-weights-truncated", names=("run",))
def _(w):
    weights = w.run() / "weights.safetensors"
    replace(weights, weights.read_bytes()[:100])
    return ["verify", w.run()]


@refuse("verify/zoo-record-not-json", names=("zoo",))
def _(w):
    replace(w.zoo() / "tiny-vgg.json", b"{")
    return ["verify", w.zoo()]


@refuse("verify/manifest-json-list", names=("data",))
def _(w):
    replace(manifest_path(w.data()), b"[]")
    return ["verify", w.data()]


# --- running the cases -----------------------------------------------------------

def _ids(cases):
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    return ids


def _invoke(argv: list, env: dict | None = None):
    plugins.reset()  # the command loads plugins itself, under the case's environment
    return CliRunner().invoke(cli, [str(a) for a in argv], env=env)


def _no_traceback(result) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"uncaught {type(result.exception).__name__}: {result.exception}\n{result.output}"
    assert "Traceback" not in result.output


@pytest.fixture
def ws(tmp_path, tiny_data, tiny_zoo, corpus_run):
    return Workspace(tmp_path, tiny_data, tiny_zoo, corpus_run)


@pytest.mark.parametrize("case", REFUSE, ids=_ids(REFUSE))
def test_must_refuse(case: Case, ws: Workspace):
    call = case.build(ws)
    before = _tree(ws.root)
    result = _invoke(call.argv, call.env)
    _no_traceback(result)
    assert result.exit_code != 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for name in call.names:
        alternatives = name if isinstance(name, tuple) else (name,)
        assert any(alt in lines[0] for alt in alternatives), f"{lines[0]!r} does not name {alternatives}"
    assert _tree(ws.root) == before, "a refused command changed files on disk"


# --- must-accept: the documented lossless conversions ------------------------

@dataclass
class Accept:
    id: str
    make: Callable[[Workspace], list]  # input paths
    expected: Callable[[], np.ndarray]  # (N, C, H, W) uint8 or float in [0, 1]
    notes: tuple = ("",)  # per result: "|"-separated words its conversion note must hold, "" for no note
    channels: int = 1


def _u8(*arrays: np.ndarray) -> np.ndarray:
    return np.stack([a if a.ndim == 3 else a[None] for a in arrays]).astype(np.float32) / 255


def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(GREY, "L").save(buf, "JPEG", quality=95)
    return buf.getvalue()


JPEG_GREY = _jpeg_bytes()  # lossy already: the model must get exactly what the JPEG decodes to


ACCEPT = [
    Accept("grey-L-png", lambda w: [w.image("grey.png", Image.fromarray(GREY, "L"))], lambda: _u8(GREY), ("",)),
    Accept("grey-rgb", lambda w: [w.image("rgb.png", Image.fromarray(grey_rgb(), "RGB"))], lambda: _u8(GREY),
           ("1 channel",)),
    Accept("rgba-opaque", lambda w: [w.image("rgba.png", Image.fromarray(with_alpha(grey_rgb()), "RGBA"))],
           lambda: _u8(GREY), ("alpha|1 channel",)),
    Accept("la-opaque", lambda w: [w.image("la.png", Image.fromarray(with_alpha(GREY), "LA"))], lambda: _u8(GREY),
           ("alpha",)),
    Accept("palette-grey", lambda w: [w.image("pal.png", grey_palette())], lambda: _u8(GREY),
           ("palette|1 channel",)),
    Accept("palette-transparency-unused", lambda w: [w.image("paltr.png", grey_palette(7), transparency=7)],
           lambda: _u8(np.where(GREY == 7, 8, GREY).astype(np.uint8)), ("palette|alpha",)),
    Accept("mode-1", lambda w: [w.image("bits.png", Image.fromarray(GREY > 127).convert("1"))],
           lambda: _u8(np.where(GREY > 127, 255, 0).astype(np.uint8)), ("1-bit",)),
    Accept("interlaced-png", lambda w: [w.put("adam7.png", _interlaced(GREY))], lambda: _u8(GREY), ("",)),
    Accept("png-named-jpg", lambda w: [w.image("really-a-png.jpg", Image.fromarray(GREY, "L"))], lambda: _u8(GREY),
           ("",)),
    Accept("upper-case-suffix", lambda w: [w.image("GREY.PNG", Image.fromarray(GREY, "L"))], lambda: _u8(GREY), ("",)),
    Accept("unicode-name", lambda w: [w.image("ε-图像 ✓.png", Image.fromarray(GREY, "L"))], lambda: _u8(GREY), ("",)),
    Accept("jpeg-grey", lambda w: [w.put("grey.jpg", JPEG_GREY)],
           lambda: _u8(np.asarray(Image.open(io.BytesIO(JPEG_GREY)))), ("",)),
    Accept("folder", lambda w: [_folder(w)], lambda: _u8(GREY, 255 - GREY), ("", "1 channel")),
    Accept("batch-float32", lambda w: [w.batch("f32.safetensors", {"images": torch.from_numpy(_u8(GREY))})],
           lambda: _u8(GREY), ("",)),
    Accept("batch-float16", lambda w: [w.batch("f16.safetensors", {"images": torch.from_numpy(_u8(GREY)).half()})],
           lambda: torch.from_numpy(_u8(GREY)).half().float().numpy(), ("",)),
    Accept("batch-float64", lambda w: [w.batch("f64.safetensors", {"images": torch.from_numpy(_u8(GREY)).double()})],
           lambda: _u8(GREY), ("",)),
    Accept("batch-uint8", lambda w: [w.batch("u8.safetensors", {"images": torch.from_numpy(GREY[None, None].copy())})],
           lambda: _u8(GREY), ("",)),
    Accept("batch-grey-rgb", lambda w: [w.batch("rgb.safetensors", {"images": torch.from_numpy(
        _u8(GREY)).expand(1, 3, SIZE, SIZE)})], lambda: _u8(GREY), ("1 channel",)),
    Accept("batch-extra-tensors", lambda w: [w.batch("extra.safetensors", {"images": torch.from_numpy(_u8(GREY)),
                                                                           "labels": torch.zeros(1)})],
           lambda: _u8(GREY), ("",)),
]


def _interlaced(arr: np.ndarray) -> bytes:
    """An Adam7-interlaced 8-bit grey PNG (PIL reads these but never writes them)."""
    h, w = arr.shape
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    raw = b""
    for x0, y0, dx, dy in passes:
        sub = arr[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\0" + row.tobytes() for row in sub)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 1)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw)) + \
        png_chunk(b"IEND", b"")


def _folder(w: Workspace) -> Path:
    w.image("folder/a.png", Image.fromarray(GREY, "L"))
    w.image("folder/sub/b.png", Image.fromarray(np.repeat((255 - GREY)[..., None], 3, 2), "RGB"))
    w.put("folder/notes.txt", "ignored: not an image")
    return w.root / "in" / "folder"


def _check_notes(rows: list, notes: tuple) -> None:
    for i, row in enumerate(rows):
        want = notes[min(i, len(notes) - 1)]
        if want == "":
            assert row["conversion"] is None, row
        else:
            for word in want.split("|"):
                assert row["conversion"] and word in row["conversion"], row


@pytest.mark.parametrize("case", ACCEPT, ids=_ids(ACCEPT))
def test_must_accept(case: Accept, ws: Workspace, monkeypatch):
    inputs = case.make(ws)
    seen = []
    real = attribute_module.predict_with_features

    def spy(members, images, **kw):
        seen.append(images.clone())
        return real(members, images, **kw)

    monkeypatch.setattr(attribute_module, "predict_with_features", spy)
    run = ws.run()
    before = _tree(ws.root)
    result = _invoke(["attribute", "--run", run, *map(str, inputs), "--json"])
    _no_traceback(result)
    assert result.exit_code == 0, result.output
    assert not [line for line in result.stderr.splitlines() if line.strip()], result.stderr
    rows = json.loads(result.stdout)["results"]
    expected = torch.from_numpy(np.asarray(case.expected(), np.float32))
    assert len(rows) == len(expected)
    _check_notes(rows, case.notes)
    (images,) = seen
    assert images.dtype == torch.float32 and torch.equal(images, expected)
    assert _tree(ws.root) == before


def test_a_one_channel_image_into_a_three_channel_model(ws: Workspace):
    """collect_inputs for a model reading RGB: grey is copied into three equal channels, and said so."""
    path = ws.image("grey.png", Image.fromarray(GREY, "L"))
    (item,) = collect_inputs([str(path)], 3, SIZE)
    assert "1 channel → RGB" in item.conversion
    assert torch.equal(item.image, torch.from_numpy(_u8(GREY)[0]).expand(3, -1, -1))
    rgb = ws.image("colour.png", Image.fromarray(colour_image(), "RGB"))
    (item,) = collect_inputs([str(rgb)], 3, SIZE)
    assert item.conversion is None and torch.equal(item.image, torch.from_numpy(colour_image().transpose(2, 0, 1) / 255).float())


# --- must-warn: works, and says what it ignored --------------------------------

UNKNOWN_PLUGINS = {"ATTRIBKIT_DISABLE_PLUGIN_AUTOLOAD": "0", "ATTRIBKIT_LOAD_PLUGINS": "nosuch, other-missing"}


@pytest.mark.parametrize("argv", [["list", "attacks"], ["list", "heads", "--json"]], ids=["list", "list-json"])
def test_unknown_plugin_names_are_named_in_a_warning(argv):
    result = _invoke(argv, UNKNOWN_PLUGINS)
    _no_traceback(result)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and all(line.startswith("warning:") for line in lines), result.stderr
    assert any("nosuch" in line for line in lines) and any("other-missing" in line for line in lines)
    assert "fgsm" in result.stdout or "attack" in result.stdout  # the built-ins still work


def test_unknown_plugin_names_are_listed_by_plugins():
    result = _invoke(["plugins", "--json"], UNKNOWN_PLUGINS)
    _no_traceback(result)
    assert result.exit_code == 0, result.output
    listed = {p["name"]: p for p in json.loads(result.stdout)}
    for name in ("nosuch", "other-missing"):
        assert listed[name]["errors"] and "ATTRIBKIT_LOAD_PLUGINS" in listed[name]["errors"][0]
    assert not listed["attribkit.builtins.attacks"]["errors"]


def test_the_corpus_is_as_large_as_promised():
    assert len(REFUSE) + len(ACCEPT) >= 80
    commands = {c.id.split("/")[0].split("-")[0] for c in REFUSE}
    assert {"scenario", "generate", "victims", "train", "data", "evaluate", "run", "attribute", "list", "plugins",
            "demo", "verify"} <= commands
