"""Images as saved: "png" is exactly the 8-bit rounding training already uses, JPEG loses more
the lower its quality, and the JPEG augmentation is reproducible from its generator's seed."""

import pytest
import torch

from attribkit.errors import AttribkitError
from attribkit.training.data import quantize
from attribkit.trust.saving import SAVED_AS, as_saved, jpeg_augment, parse_saved_as


def noise(n=8, channels=1, size=28, seed=0):
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


def test_the_default_formats_all_parse():
    assert SAVED_AS == ("float", "png", "jpeg95", "jpeg75", "jpeg50")
    assert [parse_saved_as(name) for name in SAVED_AS] == [
        ("float", None), ("png", None), ("jpeg", 95), ("jpeg", 75), ("jpeg", 50)]
    assert parse_saved_as("jpeg1") == ("jpeg", 1) and parse_saved_as("jpeg100") == ("jpeg", 100)


@pytest.mark.parametrize("name", ["jpeg0", "jpeg101", "jpegx", "gif", "jpeg", "JPEG75", "jpeg075", "jpeg 75",
                                  "jpeg7.5", ""])
def test_other_names_are_refused_with_what_is_accepted(name):
    with pytest.raises(AttribkitError, match="accepted: 'float', 'png' or 'jpegQ'") as caught:
        parse_saved_as(name)
    assert "\n" not in str(caught.value)


def test_png_is_quantize_bit_for_bit_and_float_is_unchanged():
    images = noise(channels=3)
    assert torch.equal(as_saved(images, "png"), quantize(images))
    assert as_saved(images, "png").dtype == torch.float32
    assert torch.equal(as_saved(images, "float"), images)


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_changes_noise_but_not_a_flat_grey(channels):
    images = noise(n=4, channels=channels)
    saved = as_saved(images, "jpeg75")
    assert saved.shape == images.shape and saved.dtype == torch.float32 and saved.device.type == "cpu"
    assert (saved - images).abs().mean() > 0.02
    # what a JPEG decoder hands back is whole 8-bit levels
    assert torch.equal(torch.round(saved * 255) / 255, saved)
    grey = torch.full((2, channels, 28, 28), 128 / 255)
    assert (as_saved(grey, "jpeg75") - grey).abs().max() <= 1 / 255 + 1e-6


def test_jpeg_is_deterministic():
    images = noise(channels=3)
    assert torch.equal(as_saved(images, "jpeg75"), as_saved(images, "jpeg75"))


@pytest.mark.parametrize("shape", [(2, 2, 28, 28), (2, 4, 8, 8), (28, 28), (1, 28, 28)])
def test_other_shapes_are_refused(shape):
    with pytest.raises(AttribkitError, match="C = 1 .grey. or 3 .RGB."):
        as_saved(torch.rand(shape), "jpeg75")


@pytest.mark.parametrize("channels", [1, 3])
def test_lower_quality_loses_more(channels):
    images = noise(n=16, channels=channels, seed=1)
    change = [float((as_saved(images, name) - images).abs().mean()) for name in ("jpeg95", "jpeg75", "jpeg50")]
    assert change[0] < change[1] < change[2]


def test_augment_at_probability_0_is_the_input_and_1_changes_every_image():
    images = noise(n=16)
    assert torch.equal(jpeg_augment(images, 0.0, (50, 95), torch.Generator().manual_seed(0)), images)
    out = jpeg_augment(images, 1.0, (50, 95), torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == images.dtype
    assert ((out - images).abs().flatten(1).amax(1) > 0).all()
    assert torch.equal(images, noise(n=16)), "the input was modified"


def test_augment_repeats_with_the_seed_and_uses_the_drawn_qualities():
    images = noise(n=32)
    first = jpeg_augment(images, 0.5, (40, 90), torch.Generator().manual_seed(3))
    assert torch.equal(first, jpeg_augment(images, 0.5, (40, 90), torch.Generator().manual_seed(3)))
    # the documented draws: N uniforms, then N qualities
    g = torch.Generator().manual_seed(3)
    chosen, qualities = torch.rand(32, generator=g) < 0.5, torch.randint(40, 91, (32,), generator=g)
    for i in range(32):
        expected = as_saved(images[i:i + 1], f"jpeg{int(qualities[i])}")[0] if chosen[i] else images[i]
        assert torch.equal(first[i], expected)


def test_augment_draws_the_same_amount_whatever_is_chosen():
    images = noise(n=8)
    after = []
    for probability in (0.0, 0.5, 1.0):
        g = torch.Generator().manual_seed(5)
        jpeg_augment(images, probability, (50, 95), g)
        after.append(torch.rand(4, generator=g))
    assert torch.equal(after[0], after[1]) and torch.equal(after[1], after[2])


def test_augment_reencodes_about_the_probability():
    images = noise(n=400, size=8, seed=2)
    out = jpeg_augment(images, 0.5, (50, 95), torch.Generator().manual_seed(7))
    changed = (out != images).flatten(1).any(1)
    assert 0.4 < changed.float().mean() < 0.6
    # exactly the seeded draws (noise always changes under JPEG, as tested above)
    expected = torch.rand(400, generator=torch.Generator().manual_seed(7)) < 0.5
    assert torch.equal(changed, expected)


@pytest.mark.parametrize("probability, qualities", [
    (-0.1, (50, 95)), (1.5, (50, 95)), (float("nan"), (50, 95)), ("0.5", (50, 95)),
    (0.5, (0, 95)), (0.5, (50, 101)), (0.5, (95, 50)), (0.5, (50,)), (0.5, None)])
def test_augment_refuses_bad_arguments(probability, qualities):
    with pytest.raises(AttribkitError):
        jpeg_augment(noise(n=2), probability, qualities, torch.Generator().manual_seed(0))


def test_augment_refuses_bad_images():
    with pytest.raises(AttribkitError):
        jpeg_augment(torch.rand(2, 2, 8, 8), 0.5, (50, 95), torch.Generator())


def test_jpeg_augment_gives_each_image_of_a_batch_the_same_choice_however_it_is_shared():
    """Workers each hold a contiguous share of a batch: with ``batch`` and ``offset`` the draws are the
    whole batch's, so the re-encoded images do not depend on how many workers there are."""
    images = torch.rand(10, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    whole = jpeg_augment(images, 0.5, (50, 95), torch.Generator().manual_seed(9))
    parts = [jpeg_augment(images[a:b], 0.5, (50, 95), torch.Generator().manual_seed(9), batch=10, offset=a)
             for a, b in ((0, 4), (4, 7), (7, 10))]
    assert torch.equal(torch.cat(parts), whole)
    with pytest.raises(AttribkitError, match="not a slice of a batch of 10"):
        jpeg_augment(images[:4], 0.5, (50, 95), torch.Generator().manual_seed(9), batch=10, offset=8)
