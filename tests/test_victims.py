import pytest
import torch

from attribkit import plugins
from attribkit.data import load_dataset, split_dataset
from attribkit.errors import AttribkitError
from attribkit.victims import load_victim, save_victim
from attribkit.victims.families import inception_v3
from attribkit.victims.store import wrap
from attribkit.victims.train import make_record


@pytest.mark.parametrize("arch, resize", [("resnet18", None), ("resnet50", None), ("vgg16", 32), ("vgg19", 32),
                                          ("inception_v3", 75)])
def test_every_family_takes_28px_digits_in_unit_range(arch, resize, mnist):
    record = make_record(arch, mnist, 1 / 16)
    assert record.resize_to == resize and record.in_chans == 1 and record.width == 1 / 16
    net = plugins.get("victims", arch).build(num_classes=10, in_chans=1, width=1 / 16)
    logits = wrap(record, net).eval()(mnist.images[:4])
    assert logits.shape == (4, 10) and torch.isfinite(logits).all()


def test_width_multiplier_shrinks_inception_consistently():
    full = sum(p.numel() for p in inception_v3(10, 1, 1.0).parameters())
    quarter = inception_v3(10, 1, 0.25)
    assert sum(p.numel() for p in quarter.parameters()) < full / 10
    assert quarter.fc.in_features == 512
    assert quarter.Mixed_5b.branch1x1.conv.out_channels == 16


def test_zoo_roundtrip_is_exact(tmp_path, mnist):
    record = make_record("resnet18", mnist, 1 / 16, name="rt")
    torch.manual_seed(0)
    victim = wrap(record, plugins.get("victims", "resnet18").build(num_classes=10, in_chans=1, width=1 / 16)).eval()
    save_victim(tmp_path, record, victim)
    loaded, loaded_record = load_victim(tmp_path, "rt")
    assert loaded_record.architecture == "resnet18" and loaded_record.mean == record.mean
    saved = victim.state_dict()
    assert all(torch.equal(v, saved[k]) for k, v in loaded.state_dict().items())
    assert torch.equal(loaded(mnist.images[:8]), victim.freeze()(mnist.images[:8]))
    assert loaded.net.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training


def test_corrupt_or_missing_victims_give_clear_errors(tmp_path, mnist):
    record = make_record("resnet18", mnist, 1 / 16, name="bad")
    save_victim(tmp_path, record, wrap(record, plugins.get("victims", "resnet18").build(
        num_classes=10, in_chans=1, width=1 / 16)))
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(AttribkitError, match="bad.safetensors' does not match its recorded sha256"):
        load_victim(tmp_path, "bad")
    with pytest.raises(AttribkitError, match="bad.safetensors' is not a valid safetensors file"):
        load_victim(tmp_path, "bad", verify=False)
    with pytest.raises(AttribkitError, match="not in zoo .*the zoo has: bad"):
        load_victim(tmp_path, "nope")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(AttribkitError, match="bad.json' is corrupt"):
        load_victim(tmp_path, "bad")


def test_weights_of_another_width_do_not_load(tmp_path, mnist):
    record = make_record("resnet18", mnist, 1 / 16, name="w")
    save_victim(tmp_path, record, wrap(record, plugins.get("victims", "resnet18").build(
        num_classes=10, in_chans=1, width=1 / 8)))
    with pytest.raises(AttribkitError, match="do not match its architecture"):
        load_victim(tmp_path, "w")


@pytest.mark.parametrize("arch, resize", [("resnet18", None), ("resnet50", None), ("vgg16", 32), ("vgg19", 32),
                                          ("inception_v3", 75)])
def test_every_family_takes_8px_digits(arch, resize):
    digits = load_dataset("digits")
    record = make_record(arch, digits, 1 / 16)
    assert record.image_size == 8 and record.resize_to == resize
    logits = wrap(record, plugins.get("victims", arch).build(num_classes=10, in_chans=1, width=1 / 16)).eval()(
        digits.images[:4])
    assert logits.shape == (4, 10) and torch.isfinite(logits).all()


def test_default_width_is_a_quarter(mnist):
    assert {make_record(arch, mnist, None).width for arch in plugins.registry().names("victims")} == {0.25}


def test_a_victim_reports_its_accuracy_on_the_split_it_did_not_train_on(tiny_zoo, mnist):
    # how accurate a victim gets is measured by bench/victims.py, not asserted here: it depends on the CPU
    model, record = load_victim(tiny_zoo, "tiny-resnet")
    split = split_dataset(mnist.labels, record.training["test_fraction"], record.seed)
    assert record.training["train_images"] == len(split.train) and record.training["test_images"] == len(split.test)
    with torch.no_grad():
        right = model(mnist.images[split.test]).argmax(1) == mnist.labels[split.test]
    # the stored weights are channels-last, which may round a near-tie differently: one image at most
    assert record.test_accuracy == pytest.approx(right.float().mean().item(), abs=1 / len(split.test))
