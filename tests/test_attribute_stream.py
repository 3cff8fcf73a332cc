"""`attribute` streams its inputs (issue 13 §4): folders are walked lazily in
today's order, images decoded and answered a batch at a time, rows come out
as each batch is answered (API generator and `--jsonl`), and whatever the
batch size the rows are the same, in the same order (floats to float32
rounding; one batch is the old whole-stack computation bit for bit)."""

import json
import os
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file, save_file

from attribkit import attribution, plugins
from attribkit.attribution import (
    BATCH_SIZE,
    SCHEMA,
    IMAGE_SUFFIXES,
    attribute,
    check_inputs,
    iter_attributions,
    walk_images,
)
from attribkit.cli import cli
from attribkit.storage import sha256_file
from attribkit.errors import AttribkitError
from attribkit.training.models import heads_of, predict_with_features
from attribkit.training.run import load_run, load_trust, read_run_meta
from attribkit.trust.fitted import verdict

SIZE = 28  # run reads 1×28×28
RNG = np.random.default_rng(13)


@pytest.fixture(scope="module")
def run(tiny_run):
    """The session's tiny MTAA run (width 0.125, one epoch), answered on one thread: a tiny network on a busy
    2-core machine is faster so (the run is built before)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tiny_run
    torch.set_num_threads(threads)


def _grey() -> np.ndarray:
    return RNG.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)


def _png(path: Path, arr: np.ndarray | None = None, mode: str = "L", fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_grey() if arr is None else arr, mode).save(path, fmt)
    return path


def _tree(root: Path) -> list[str]:
    """A folder with nested subfolders and mixed files; returns the arguments to attribute (a folder, a
    file, a batch) whose images are 9 + 1 + 4 = 14."""
    folder = root / "in"
    _png(folder / "a.png")
    _png(folder / "a" / "b.png")  # a folder a/ beside a file a.png: its contents come first ("a" < "a.png")
    _png(folder / "a" / "c" / "d.jpg", fmt="JPEG")
    _png(folder / "a" / "c" / "e.png", np.repeat(_grey()[..., None], 3, 2), "RGB")  # grey RGB: a noted conversion
    _png(folder / "a-b.png")  # '-' < '/' as text, yet the folder a/ sorts first: paths compare part by part
    _png(folder / "B.png")
    _png(folder / "z" / "y.png")
    _png(folder / "z" / "x.PNG")
    _png(folder / "z-last.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / "empty").mkdir()
    (folder / "empty" / "readme.md").write_text("no images here")
    single = _png(root / "single.png")
    batch = root / "batch.safetensors"
    save_file({"images": torch.from_numpy(RNG.integers(0, 256, (4, 1, SIZE, SIZE), dtype=np.uint8))}, str(batch))
    return [str(folder), str(single), str(batch)]


def _expected(run: Path, inputs: list[str]) -> list[dict]:
    """The answers as attribute() computed them before streaming: every input decoded (folders in
    sorted(rglob) order), one stacked tensor, one predict call."""
    _, members = load_run(run)
    sources, images, conversions = [], [], []
    for raw in inputs:
        path = Path(raw)
        if path.suffix == ".safetensors":
            whole = load_file(raw)["images"].float() / 255
            sources += [f"{path}[{i}]" for i in range(len(whole))]
            images += list(whole)
            conversions += [None] * len(whole)
            continue
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() else [path]
        for p in files:
            item = attribution._from_pil(p, 1, SIZE)
            sources.append(item.source)
            images.append(item.image)
            conversions.append(item.conversion)
    trust = load_trust(run, read_run_meta(run))
    with torch.no_grad():
        outputs, features = predict_with_features(members, torch.stack(images), features=True)
    outputs = trust.calibrated(outputs)
    scores = trust.scores(outputs, features).tolist()
    answers = [head.answer(outputs) for head in heads_of(members).values()]
    rows = []
    for i, source in enumerate(sources):
        found = {}
        for answer in answers:
            found.update(answer[i])
        rows.append({"input": source, "verdict": verdict(found, scores[i], trust.threshold), **found,
                     "unknown_score": round(scores[i], 6), "unknown_threshold": trust.threshold,
                     "calibrated": True, "conversion": conversions[i]})
    return rows


def _same(a, b) -> bool:
    """Equal, floats to float32 rounding: a CPU forward pass may round the last bit of an image's outputs
    differently in batches of another size (the kernels split the work by batch size: here one row of 14 at
    odd sizes), as the whole-stack predict did already past its 256-image chunks. Every string, class and
    key is exact."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and a == pytest.approx(b, rel=1e-5, abs=1e-4)
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _invoke(argv: list):
    plugins.reset()
    return CliRunner().invoke(cli, [str(a) for a in argv])


@pytest.fixture
def counted(monkeypatch):
    """Counts decoded images and keeps a weak reference to each, and records every predict call:
    (images in the call, decoded images still alive then)."""
    seen = {"decoded": 0, "alive": [], "calls": []}
    real_pil, real_st, real_predict = (attribution._from_pil, attribution._iter_safetensors,
                                       attribution.predict_with_features)

    def track(item):
        seen["decoded"] += 1
        seen["alive"].append(weakref.ref(item.image))
        return item

    def alive() -> int:
        return sum(ref() is not None for ref in seen["alive"])

    def spy(members, images, **kw):
        seen["calls"].append((len(images), alive()))
        return real_predict(members, images, **kw)

    monkeypatch.setattr(attribution, "_from_pil", lambda *a: track(real_pil(*a)))
    monkeypatch.setattr(attribution, "_iter_safetensors", lambda *a: (track(i) for i in real_st(*a)))
    monkeypatch.setattr(attribution, "predict_with_features", spy)
    seen["alive_now"] = alive
    return seen


# --- the walk -----------------------------------------------------------------

def test_folders_are_walked_in_sorted_rglob_order(tmp_path):
    root = tmp_path / "walk"
    for name in ("a.png", "a/b.png", "a/c/d.png", "a-b.png", "a_b/x.png", "B.png", ".hidden.png", "..png", ".png",
                 "x.txt", "Z.JPG", "d.png/inner.jpeg", "deep/er/est/f.jpg"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
    (root / "empty").mkdir()
    os.symlink(root / "a", root / "link")  # not walked into, as rglob does not
    os.symlink(root / "a.png", root / "link.png")
    want = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    got = list(walk_images(root))
    assert got == want
    assert [str(p.relative_to(root)) for p in got] == [
        "..png", ".hidden.png", "B.png", "Z.JPG", "a/b.png", "a/c/d.png", "a-b.png", "a.png", "a_b/x.png",
        "d.png", "d.png/inner.jpeg", "deep/er/est/f.jpg", "link.png"]
    # a folder and a file of the same stem: the folder's images first (paths compare part by part: "a" < "a.png"),
    # although as plain text "…/a.png" < "…/a/b.png" ('.' < '/')
    assert got.index(root / "a" / "b.png") < got.index(root / "a.png")
    assert sorted(map(str, got)) != list(map(str, got))


def test_the_walk_is_lazy(tmp_path, monkeypatch):
    """Only the directories on the way to the next image are listed."""
    for d in "abc":
        for i in range(3):
            (tmp_path / d).mkdir(exist_ok=True)
            (tmp_path / d / f"{i}.png").write_bytes(b"")
    listed = []
    real = attribution._listing
    monkeypatch.setattr(attribution, "_listing", lambda folder: listed.append(folder.name) or real(folder))
    walk = walk_images(tmp_path)
    assert next(walk) == tmp_path / "a" / "0.png"
    assert listed == [tmp_path.name, "a"]
    assert len(list(walk)) == 8 and listed == [tmp_path.name, "a", "b", "c"]


# --- the same answers, whatever the batch size ------------------------------------

def test_results_are_identical_for_every_batch_size(run, tmp_path, counted):
    inputs = _tree(tmp_path)
    expected = _expected(run, inputs)
    assert len(expected) == 14
    order = [r["input"] for r in expected]
    folder = inputs[0]
    assert order[:9] == [os.path.join(folder, *n.split("/")) for n in (
        "B.png", "a/b.png", "a/c/d.jpg", "a/c/e.png", "a-b.png", "a.png", "z/x.PNG", "z/y.png", "z-last.png")]
    assert "1 channel" in expected[3]["conversion"]
    reports = {}
    for batch_size in (1, 3, 256):
        counted["calls"].clear()
        reports[batch_size] = attribute(run, inputs, batch_size=batch_size)
        assert [n for n, _ in counted["calls"]] == [min(batch_size, 14 - i) for i in range(0, 14, batch_size)]
        streamed = list(iter_attributions(run, inputs, batch_size=batch_size))
        assert streamed == reports[batch_size]["results"]
    # one batch of 14 is the whole-stack computation, bit for bit
    assert reports[256]["results"] == expected
    for batch_size, report in reports.items():
        assert set(report) == {"schema", "attribkit", "run", "run_sha256", "model", "calibrated", "heads",
                               "unknown_threshold", "results", "table"}
        assert report["run"] == str(run) and report["heads"] == reports[256]["heads"]
        assert [r["input"] for r in report["results"]] == order
        assert _same(report["results"], expected), batch_size
        assert report["table"]["columns"] == reports[256]["table"]["columns"]
        assert [row[0] for row in report["table"]["rows"]] == order
    assert len(reports[1]["table"]["rows"]) == 14
    assert reports[1]["table"]["columns"][0] == "input" and reports[1]["table"]["columns"][-1] == "note"


# --- streaming --------------------------------------------------------------------

def test_rows_come_out_before_the_later_inputs_are_decoded(run, tmp_path, counted):
    inputs = _tree(tmp_path)
    rows = iter_attributions(run, inputs, batch_size=3)
    assert counted["decoded"] == 0  # loaded and checked, nothing decoded yet
    first = next(rows)
    assert counted["decoded"] == 3 and len(counted["calls"]) == 1
    assert [next(rows), next(rows)] and counted["decoded"] == 3  # the rest of the first batch: no new work
    next(rows)
    assert counted["decoded"] == 6 and len(counted["calls"]) == 2
    assert first["input"].endswith("B.png") and len(list(rows)) == 10


def test_memory_holds_one_batch_not_every_image(run, tmp_path, counted):
    inputs = _tree(tmp_path)
    alive_at_rows = [counted["alive_now"]() for _ in iter_attributions(run, inputs, batch_size=3)]
    assert counted["decoded"] == 14
    sizes = [n for n, _ in counted["calls"]]
    assert sizes == [3, 3, 3, 3, 2] and sum(sizes) == 14
    # a batch's own images are let go once stacked; never more than one batch of them is alive
    assert max(alive for _, alive in counted["calls"]) <= 3
    assert max(alive_at_rows) <= 3


def _with_a_broken_image(tmp_path: Path) -> Path:
    folder = tmp_path / "mixed"
    for i in range(7):
        _png(folder / f"g{i}.png")
    (folder / "h-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # 8th: in the third batch of 3
    return folder


def test_a_damaged_image_midway_comes_after_the_earlier_rows(run, tmp_path, counted):
    folder = _with_a_broken_image(tmp_path)
    rows = iter_attributions(run, [str(folder)], batch_size=3)  # the check opens no image: no error yet
    got = []
    with pytest.raises(AttribkitError, match="h-broken.png") as err:
        got.extend(rows)
    assert "\n" not in str(err.value) and "cannot decode image" in str(err.value)
    assert [Path(r["input"]).name for r in got] == [f"g{i}.png" for i in range(6)]
    assert counted["decoded"] == 7


def test_missing_inputs_and_empty_folders_are_found_before_any_work(run, tmp_path, counted):
    inputs = _tree(tmp_path)
    empty = tmp_path / "no-images"
    (empty / "sub" / "deeper").mkdir(parents=True)
    (empty / "sub" / "notes.txt").write_text("x")
    for bad, words in (([*inputs, str(tmp_path / "missing.png")], "does not exist"),
                       ([*inputs, str(empty)], "has no PNG/JPEG images"),
                       ([*inputs, str(tmp_path / "in" / "notes.txt")], "expected PNG/JPEG files"),
                       ([], "no input images")):
        for call in (iter_attributions, attribute):
            with pytest.raises(AttribkitError, match=words):
                call(run, bad)
    assert counted["decoded"] == 0 and not counted["calls"]
    check_inputs([str(tmp_path / "in" / "a")])  # a folder whose only images are in a subfolder is fine


@pytest.mark.parametrize("batch_size", [0, -1, True, 2.5, "8"])
def test_batch_size_must_be_a_positive_integer(run, tmp_path, batch_size):
    with pytest.raises(AttribkitError, match="batch_size"):
        iter_attributions(run, [str(_png(tmp_path / "one.png"))], batch_size=batch_size)


# --- the command ------------------------------------------------------------------

def test_jsonl_prints_one_parseable_line_per_image(run, tmp_path):
    inputs = _tree(tmp_path)
    result = _invoke(["attribute", "--run", run, *inputs, "--jsonl", "--batch-size", "3"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 14
    rows = [json.loads(line) for line in lines]
    # each line stands alone: it names the output's schema and the run that answered
    assert {(r.pop("schema"), r.pop("run_sha256")) for r in rows} == {(SCHEMA, sha256_file(Path(run) / "run.json"))}
    assert _same(rows, attribute(run, inputs)["results"])
    assert not result.stderr.strip()
    # --json still prints one document with the same rows, whatever the batch size
    whole = _invoke(["attribute", "--run", run, *inputs, "--json", "--batch-size", "5"])
    assert whole.exit_code == 0 and _same(json.loads(whole.stdout)["results"], rows)


def test_jsonl_keeps_the_printed_lines_when_an_image_is_broken(run, tmp_path):
    folder = _with_a_broken_image(tmp_path)
    result = _invoke(["attribute", "--run", run, folder, "--jsonl", "--batch-size", "3"])
    assert result.exit_code == 1
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(r["input"]).name for r in rows] == [f"g{i}.png" for i in range(6)]
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error:") and "h-broken.png" in errors[0], result.stderr
    assert "Traceback" not in result.output


def test_jsonl_with_a_missing_input_prints_nothing(run, tmp_path):
    ok = _png(tmp_path / "ok.png")
    result = _invoke(["attribute", "--run", run, ok, tmp_path / "missing.png", "--jsonl"])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.strip().startswith("error:") and "missing.png" in result.stderr
    # a broken run is named before the inputs are looked at, as before streaming
    missing_run = _invoke(["attribute", "--run", tmp_path / "no-run", tmp_path / "missing.png", "--jsonl"])
    assert missing_run.exit_code == 1 and "no-run" in missing_run.stderr and "missing.png" not in missing_run.stderr


def test_the_options(run, tmp_path, monkeypatch):
    ok = _png(tmp_path / "ok.png")
    both = _invoke(["attribute", "--run", run, ok, "--json", "--jsonl"])
    assert both.exit_code == 2 and len(both.stderr.strip().splitlines()) == 1 and "--jsonl" in both.stderr
    zero = _invoke(["attribute", "--run", run, ok, "--batch-size", "0"])
    assert zero.exit_code == 2 and "--batch-size" in zero.stderr
    params = {p.name: p for p in cli.commands["attribute"].params}
    assert params["batch_size"].default == BATCH_SIZE
    help_text = _invoke(["attribute", "--help"]).stdout
    assert "--jsonl" in help_text and "stay printed" in " ".join(help_text.split())
    monkeypatch.chdir(tmp_path)  # a short relative path: a long one is folded across lines by the table
    table = _invoke(["attribute", "--run", run, "ok.png", "--batch-size", "1"])
    assert table.exit_code == 0 and "ok.png" in table.stdout
