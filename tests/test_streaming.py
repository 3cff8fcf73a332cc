"""Data larger than memory: a streamed data set (images read from their files a batch
at a time) trains and evaluates to exactly what the in-memory one does."""

import pytest
import torch

from attribkit import Runtime, evaluate, train
from attribkit.storage import IntegrityError, Rows, TensorFile, read_tensors
from attribkit.training.config import TrainConfig
from attribkit.training.data import load_attribution_data, quantize

SMALL = dict(width=0.125, epochs=1, batch_size=16, input_scale=1)


def test_rows_index_like_the_concatenated_tensor(tiny_data):
    files = sorted((tiny_data / "shards").glob("*__train.safetensors"))[:3]
    whole = torch.cat([read_tensors(f)[0]["images"] for f in files])
    rows = Rows([(TensorFile(f), "images") for f in files])
    assert rows.shape == whole.shape and len(rows) == len(whole)
    mask = torch.rand(len(whole), generator=torch.Generator().manual_seed(0)) > 0.5
    order = torch.randperm(len(whole), generator=torch.Generator().manual_seed(1))
    for key in (order[:7], mask, slice(2, 9), slice(None, None, 3)):
        assert torch.equal(rows[key], whole[key])
    assert torch.equal(rows[3], whole[3]) and torch.equal(rows[-1], whole[-1])
    subset = rows.take(mask)
    assert torch.equal(subset[torch.arange(len(subset))], whole[mask])
    assert torch.equal(rows.map(quantize)[order], quantize(whole[order]))


def test_a_streamed_split_holds_what_the_loaded_one_does(tiny_data):
    loaded, streamed = (load_attribution_data(tiny_data, "train", stream=s) for s in (False, True))
    assert isinstance(streamed.images, Rows) and isinstance(streamed.clean, Rows)
    every = torch.arange(len(loaded))
    assert torch.equal(streamed.images[every], loaded.images) and torch.equal(streamed.clean[every], loaded.clean)
    assert torch.equal(streamed.labels.hp.nan_to_num(-1), loaded.labels.hp.nan_to_num(-1))
    assert torch.equal(streamed.labels.attack, loaded.labels.attack)


@pytest.mark.parametrize("model, extra", [("mtaa", {}), ("single-label", {"per_cell": 2})])
def test_streamed_training_makes_the_same_weights_bit_for_bit(tiny_data, tmp_path, model, extra):
    config = TrainConfig(model=model, **SMALL, **extra)
    loaded = train(tiny_data, config, tmp_path / "loaded")
    streamed = train(tiny_data, config, tmp_path / "streamed", runtime=Runtime(stream=True))
    assert (tmp_path / "loaded" / "weights.safetensors").read_bytes() == \
        (tmp_path / "streamed" / "weights.safetensors").read_bytes()
    assert loaded.final_test_metrics == streamed.final_test_metrics
    if model != "mtaa":
        return
    a = evaluate(tmp_path / "loaded", tiny_data, out=tmp_path / "e1")
    b = evaluate(tmp_path / "loaded", tiny_data, out=tmp_path / "e2", runtime=Runtime(stream=True))
    assert {k: v for k, v in a.items() if k not in ("out", "plots")} == \
        {k: v for k, v in b.items() if k not in ("out", "plots")}


def test_a_damaged_shard_is_refused_when_streamed_too(tiny_data, tmp_path):
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(tiny_data, copy)
    shard = sorted((copy / "shards").glob("*__train.safetensors"))[0]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="does not match its recorded sha256"):
        load_attribution_data(copy, "train", stream=True)
