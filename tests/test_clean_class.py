"""The clean class (paper §4.4): unattacked images as examples of their own, ``[clean]`` in a scenario."""

import json
from types import SimpleNamespace

import pytest
import torch

from attribkit.errors import ScenarioError
from attribkit.generation.engine import clean_job, generate, split_order
from attribkit.generation.scenario import CleanPlan, parse_scenario
from attribkit.storage.dataset import load_split
from attribkit.training.data import load_attribution_data

from conftest import TINY_SCENARIO

CLEAN_SCENARIO = {**TINY_SCENARIO, "name": "tiny-clean", "attacks": TINY_SCENARIO["attacks"][:1],
                  "clean": {"train": 12, "test": 6, "misclassified": 0.5}}


def test_clean_is_parsed_and_changes_the_fingerprint_only_when_given():
    plain = parse_scenario(TINY_SCENARIO)
    with_clean = parse_scenario({**TINY_SCENARIO, "clean": {"train": 10, "test": 3}})
    assert plain.clean is None and "clean" not in plain.to_dict()
    assert with_clean.clean == CleanPlan(10, 3, 0.25)
    assert with_clean.fingerprint() != plain.fingerprint()
    again = parse_scenario({**TINY_SCENARIO, "clean": {"train": 10, "test": 3, "misclassified": 0.25}})
    assert again.fingerprint() == with_clean.fingerprint()


@pytest.mark.parametrize("clean, words", [
    ({"train": 0, "test": 3}, "must be ≥ 1"),
    ({"train": 5}, "clean.test"),
    ({"train": 5, "test": 3, "misclassified": 1.5}, "share in [0, 1]"),
    ({"train": 5, "test": 3, "recall": 1}, "unknown key 'recall'"),
    ("lots", "expected dict"),
])
def test_bad_clean_tables_are_refused(clean, words):
    with pytest.raises(ScenarioError, match=None) as err:
        parse_scenario({**TINY_SCENARIO, "clean": clean})
    assert words in str(err.value)


def test_a_victim_named_clean_is_refused_with_a_clean_class():
    with pytest.raises(ScenarioError, match="rename the victim or attack called 'clean'"):
        parse_scenario({**TINY_SCENARIO, "victims": ["clean", "tiny-vgg"], "clean": {"train": 2, "test": 1}})


class Says(torch.nn.Module):
    """A victim that answers a fixed class per image (its first pixel holds the image's number)."""

    def __init__(self, answers: torch.Tensor):
        super().__init__()
        self.answers = answers
        self.register_buffer("anchor", torch.zeros(1))

    def forward(self, x):
        idx = x[:, 0, 0, 0].round().long()
        return torch.nn.functional.one_hot(self.answers[idx], 10).float()


def _dataset(n=20):
    images = torch.zeros(n, 1, 4, 4)
    images[:, 0, 0, 0] = torch.arange(n).float()  # outside [0, 1], but clean_job never checks: it only selects
    return SimpleNamespace(images=images, labels=torch.arange(n) % 10)


def test_clean_job_takes_the_misclassified_share_in_order_then_correct_ones():
    data = _dataset()
    first = data.labels.clone()
    first[[3, 7]] = (first[[3, 7]] + 1) % 10  # victim A errs on images 3 and 7
    second = data.labels.clone()
    second[[7, 11, 15]] = (second[[7, 11, 15]] + 2) % 10  # victim B on 7 (A erred first), 11 and 15
    order = torch.tensor([15, 0, 3, 1, 11, 2, 7, 4, 5])
    rows, cells = clean_job({"a": Says(first), "b": Says(second)}, data, order, wanted=6, share=0.5)
    # misclassified in order: 15, 3, 11 (7 would be the fourth); correct ones in order: 0, 1, 2
    assert rows["clean_index"].tolist() == [15, 0, 3, 1, 11, 2]
    assert rows["pred"].tolist() == [second[15], 0, first[3], 1, second[11], 2]
    assert torch.equal(rows["label"], data.labels[rows["clean_index"]])
    assert torch.equal(rows["images"], data.images[rows["clean_index"]])
    assert rows["l2"].eq(0).all() and rows["linf"].eq(0).all() and not rows["success"].any()
    assert rows["target"].eq(-1).all() and rows["margin"].isnan().all()
    assert [c["kept"] for c in cells] == [3, 3] and cells[0]["available"] == 4


def test_clean_job_fills_with_correct_images_when_too_few_are_misclassified():
    data = _dataset()
    wrong = data.labels.clone()
    wrong[5] = (wrong[5] + 1) % 10
    rows, cells = clean_job({"a": Says(wrong)}, data, torch.arange(20), wanted=8, share=0.75)
    assert rows["clean_index"].tolist() == [0, 1, 2, 3, 4, 5, 6, 7]  # 5 is the one misclassified
    assert cells[0] == {"kind": "misclassified by a victim", "wanted": 6, "kept": 1, "available": 1}
    assert cells[1]["wanted"] == 7 and cells[1]["kept"] == 7


@pytest.fixture(scope="module")
def clean_data(tiny_zoo, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "data"
    generate(parse_scenario({**CLEAN_SCENARIO, "zoo": str(tiny_zoo)}), out)
    return out


def test_generated_clean_examples_are_labelled_and_never_cross_splits(clean_data):
    manifest = json.loads((clean_data / "manifest.json").read_text())
    spaces = manifest["label_spaces"]
    assert spaces["attack"] == ["fgsm", "clean"] and spaces["victim"] == ["tiny-resnet", "tiny-vgg", "clean"]
    assert spaces["clean"] is True and spaces["attack_info"]["clean"]["hyperparameters"] == []
    assert manifest["status"] == "complete"
    seen = {}
    for split, wanted in (("train", 12), ("test", 6)):
        rows = load_split(clean_data, split)
        clean = rows["attack"] == 1
        assert int(clean.sum()) == wanted
        assert rows["victim"][clean].eq(2).all() and rows["victim"][~clean].lt(2).all()
        assert rows["hp_eps"][clean].isnan().all() and rows["l2"][clean].eq(0).all()
        seen[split] = set(rows["clean_index"][clean].tolist())
        # as many misclassified as asked for, where the split has them: pred says which
        shard = manifest["shards"][f"clean__clean__{split}.safetensors"]
        kept = shard["cells"][0]["kept"]
        assert kept == min(round(0.5 * wanted), shard["cells"][0]["available"])
        assert int((rows["pred"][clean] != rows["label"][clean]).sum()) == kept
    clean_file = load_split(clean_data, "test")  # the clean images are the data set's own
    assert not seen["train"] & seen["test"]
    data = load_attribution_data(clean_data, "test")
    is_clean = data.labels.attack == 1
    assert torch.equal(data.images[is_clean], data.clean[is_clean])  # nothing was added to them
    assert len(clean_file["images"]) == len(data)


def test_clean_examples_come_from_the_split_order_every_unit_shares(clean_data, mnist):
    from attribkit.data import split_dataset

    split = split_dataset(mnist.labels, 0.2, CLEAN_SCENARIO["seed"])
    order = split_order(split, "test", CLEAN_SCENARIO["seed"]).tolist()
    rows = load_split(clean_data, "test")
    chosen = rows["clean_index"][rows["attack"] == 1].tolist()
    positions = [order.index(i) for i in chosen]
    assert positions == sorted(positions)


def test_per_cell_keeps_as_many_clean_examples_as_an_attack_may(clean_data):
    from attribkit.training.data import cap_per_cell

    data = load_attribution_data(clean_data, "train")
    capped = cap_per_cell(data, 1)
    # fgsm has 2 victims × 2 values = 4 cells of one example each; the clean class, one cell, keeps 4
    assert int((capped.labels.attack == 0).sum()) == 4
    assert int((capped.labels.attack == 1).sum()) == 4


def test_evaluate_counts_adversarial_images_called_clean_as_saved(clean_data, tmp_path):
    from attribkit.evaluation import evaluate
    from attribkit.training.config import TrainConfig
    from attribkit.training.trainer import train

    run = tmp_path / "run"
    train(clean_data, TrainConfig(width=0.125, epochs=1, batch_size=16, input_scale=1), run)
    trust = evaluate(run, clean_data, out=tmp_path / "ev", saved_as=["png", "jpeg50"])["trust"]
    known, png = trust["evaluated_split"], trust["saved_as"]["png"]
    # the run quantizes, so PNG is the split as evaluated: the same verdicts
    assert png["adversarial_called_clean"] == known["clean"]["adversarial_called_clean"]
    assert png["clean_recall"] == known["clean"]["recall"]
    assert png["rejected"] == known["rejected"]
    assert 0 <= trust["saved_as"]["jpeg50"]["adversarial_called_clean"] <= 1
    assert "adversarial_called_clean" in (tmp_path / "ev" / "evaluation.md").read_text()
