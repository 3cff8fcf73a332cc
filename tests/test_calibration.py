"""Calibration: temperature scaling finds the temperature that made the labels,
the ECE and its bins are the hand-computed values, and the reliability
diagram draws whatever it is given."""

import pytest
import torch

from attribkit.trust.calibration import (calibration_bins, expected_calibration_error, fit_temperature,
                                         reliability_diagram)

T0 = 2.5


def _sampled(n: int = 20000, classes: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits z and labels drawn from softmax(z / T0): the best temperature for z is T0.
    Over seeds 0–19 the fit lands at T0 within a relative standard deviation of 1 %."""
    g = torch.Generator().manual_seed(seed)
    z = 3 * torch.randn(n, classes, generator=g)
    y = torch.multinomial((z / T0).softmax(1), 1, generator=g)[:, 0]
    return z, y


def _nll(logits, target, t):
    return float(torch.nn.functional.cross_entropy(logits.double() / t, target))


def test_fit_temperature_recovers_the_temperature_that_drew_the_labels():
    z, y = _sampled()
    assert abs(fit_temperature(z, y) - T0) / T0 < 0.05


def test_fitted_temperature_is_a_minimum_of_the_nll():
    z, y = _sampled(seed=1)
    t = fit_temperature(z, y)
    best = _nll(z, y, t)
    assert best <= _nll(z, y, 1.0) and best <= _nll(z, y, t * 1.1) and best <= _nll(z, y, t / 1.1)


def test_fit_temperature_is_deterministic_and_blind_to_class_order():
    z, y = _sampled(n=3000)
    t = fit_temperature(z, y)
    assert fit_temperature(z, y) == t
    order = torch.tensor([3, 0, 4, 1, 2])
    position = torch.argsort(order)  # where each old class went
    assert fit_temperature(z[:, order], position[y]) == t
    assert fit_temperature(z.double(), y) == t  # float64 inside: the input's precision does not matter


def test_fit_temperature_ignores_out_of_range_targets():
    z, y = _sampled(n=3000)
    t = fit_temperature(z, y)
    noise = torch.randn(40, 5, generator=torch.Generator().manual_seed(7)) * 50
    bad = torch.tensor([-1, 5, 17, -100] * 10)
    assert fit_temperature(torch.cat([noise, z]), torch.cat([bad, y])) == t


def test_fit_temperature_without_anything_to_fit_is_one():
    assert fit_temperature(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long)) == 1.0
    assert fit_temperature(torch.randn(4, 3), torch.full((4,), -1)) == 1.0  # no example has a label
    assert fit_temperature(torch.ones(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])) == 1.0  # logits tell nothing


def test_fit_temperature_returns_a_rounded_float_at_the_bound_when_all_is_right():
    y = torch.arange(100) % 4
    z = 50 * torch.nn.functional.one_hot(y, 4).float()  # all right, very sure: sharper is always better
    t = fit_temperature(z, y)
    assert type(t) is float and t == pytest.approx(1e-2)
    assert float(f"{t:.6g}") == t


def test_calibration_bins_edges_counts_and_the_closed_last_bin():
    confidence = torch.tensor([0.0, 0.1, 0.2, 0.45, 0.5, 0.99, 1.0, 1.0])
    correct = torch.tensor([0, 0, 1, 0, 1, 1, 1, 0])
    bins = calibration_bins(confidence, correct, bins=4)
    assert [(b["low"], b["high"]) for b in bins] == [(0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0)]
    assert [b["count"] for b in bins] == [3, 1, 1, 3]  # 0.5 opens the third bin; both 1.0 close the last
    assert sum(b["count"] for b in bins) == len(confidence)
    assert bins[0]["confidence"] == pytest.approx(0.1) and bins[0]["accuracy"] == pytest.approx(1 / 3)
    assert bins[3]["confidence"] == pytest.approx(0.9966666) and bins[3]["accuracy"] == pytest.approx(2 / 3)
    empty = calibration_bins(torch.tensor([0.95]), torch.tensor([True]), bins=15)
    assert len(empty) == 15 and empty[14]["count"] == 1
    assert empty[0] == {"low": 0.0, "high": pytest.approx(1 / 15), "count": 0, "confidence": None, "accuracy": None}


def test_ece_of_a_hand_computed_example():
    # bin [0, 0.5): confidences 0.2, 0.4 (mean 0.3), one right (0.5) → gap 0.2
    # bin [0.5, 1]: confidences 0.6, 1.0 (mean 0.8), both right (1.0) → gap 0.2; ECE = ½·0.2 + ½·0.2
    confidence = torch.tensor([0.2, 0.4, 0.6, 1.0])
    assert expected_calibration_error(confidence, torch.tensor([1, 0, 1, 1]), bins=2) == 0.2
    # three in the top bin, one in the bottom: ¼·|0 − 0.1| + ¾·|2/3 − 0.8|
    confidence = torch.tensor([0.1, 0.7, 0.8, 0.9])
    expected = round(0.25 * 0.1 + 0.75 * (0.8 - 2 / 3), 6)
    assert expected_calibration_error(confidence, torch.tensor([False, True, True, False]), bins=2) == expected


def test_ece_of_calibrated_perfect_and_empty_data():
    g = torch.Generator().manual_seed(0)
    confidence = torch.rand(200000, generator=g)
    correct = torch.rand(200000, generator=g) < confidence  # right with exactly the probability it claims
    assert expected_calibration_error(confidence, correct) < 0.01
    assert expected_calibration_error(torch.ones(10), torch.ones(10, dtype=torch.bool)) == 0.0
    assert expected_calibration_error(torch.zeros(0), torch.zeros(0)) is None


def test_reliability_diagram_draws_a_png_even_with_an_empty_curve():
    z, y = _sampled(n=2000)
    p, predicted = z.softmax(1).max(1)
    curves = {"attack": calibration_bins(p, predicted == y), "victim": calibration_bins(torch.zeros(0), torch.zeros(0))}
    assert reliability_diagram(curves, "calibration").startswith(b"\x89PNG")
    assert reliability_diagram({"victim": curves["victim"]}, "nothing").startswith(b"\x89PNG")
    assert reliability_diagram({}, "no curve").startswith(b"\x89PNG")
