"""Calibration of a classification head: does "90 %" mean right nine times in ten?

:func:`fit_temperature` learns the one scalar of temperature scaling (Guo et
al., *On Calibration of Modern Neural Networks*, 2017) on held-out logits;
dividing the logits by it changes no prediction, only how sure they sound.
:func:`calibration_bins` and :func:`expected_calibration_error` measure the
gap between confidence and accuracy, and :func:`reliability_diagram` draws it.
"""

from __future__ import annotations

import math

import torch

from ..figures import _png, _pyplot

# The search range of 1/T: wide enough for any head we train (T from 0.01 to 100); an optimum
# beyond it means the logits are already (almost) all right or all noise, and the bound will do.
LOG_BETA_RANGE = (math.log(1e-2), math.log(1e2))
TEMPERATURE_RANGE = (1e-2, 1e2)  # the temperatures that range allows: a run's record is checked against it
SEARCH_STEPS = 60  # golden-section: the bracket shrinks by 0.618 per step, to ~1e-12 of its width
INV_PHI = (math.sqrt(5) - 1) / 2


def fit_temperature(logits: torch.Tensor, target: torch.Tensor) -> float:
    """The temperature T > 0 minimising the mean negative log-likelihood of
    ``softmax(logits / T)`` against ``target`` (class indices), on (N, K) logits.

    Examples whose target lies outside [0, K) (e.g. -1, "no label for this
    head") or whose logits are not all finite are ignored. With no example
    left, or logits that cannot tell the classes apart, the answer is 1.0
    (leave the head as it is). Rounded to 6 significant digits, as it is
    stored in JSON.
    """
    # float64 on the CPU: the optimum must not depend on the device or on float32 rounding
    z = logits.detach().to("cpu", torch.float64)
    y = target.detach().to("cpu").long()
    keep = (y >= 0) & (y < z.shape[1]) & torch.isfinite(z).all(1)
    z, y = z[keep], y[keep]
    if not len(z) or float((z.amax(1) - z.amin(1)).max()) == 0:
        return 1.0  # every β gives the same likelihood: nothing to learn
    # each other class's logit relative to the true one; the true class itself drops out as exp(0) = 1
    others = (z - z.gather(1, y[:, None])).scatter(1, y[:, None], -math.inf)

    def nll(log_beta: float) -> float:
        # log(1 + Σ_j exp(β·(z_j − z_y))) through log1p (inside logaddexp): for examples right by a wide
        # margin the NLL is tiny, not 0, so the search still sees that sharper is better
        beta = math.exp(log_beta)
        return float(torch.logaddexp(torch.zeros((), dtype=z.dtype), torch.logsumexp(beta * others, 1)).mean())

    # The NLL is convex in β = 1/T, hence unimodal in log β: a golden-section search finds its
    # minimum with no step size to tune and no randomness, and log β spreads T's orders of magnitude evenly.
    a, b = LOG_BETA_RANGE
    c, d = b - INV_PHI * (b - a), a + INV_PHI * (b - a)
    fc, fd = nll(c), nll(d)
    for _ in range(SEARCH_STEPS):
        # A tie is the NLL underflowed to its floor (every example right by more than exp can show),
        # where sharper is never worse: move towards larger β, as the exact NLL would.
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - INV_PHI * (b - a)
            fc = nll(c)
        else:
            a, c, fc = c, d, fd
            d = a + INV_PHI * (b - a)
            fd = nll(d)
    return float(f"{math.exp(-(a + b) / 2):.6g}")


def calibration_bins(confidence: torch.Tensor, correct: torch.Tensor, bins: int = 15) -> list[dict]:
    """Equal-width confidence bins over [0, 1]: each [low, high) but the last,
    which is closed at 1.0, with its count, mean confidence and accuracy (None
    when empty). ``correct`` is 1/0 (or True/False) per example; examples with a
    non-finite confidence are left out."""
    conf = confidence.detach().to("cpu", torch.float64).flatten()
    right = correct.detach().to("cpu", torch.float64).flatten()
    keep = torch.isfinite(conf)
    conf, right = conf[keep].clamp(0, 1), right[keep]  # a float32 softmax may round just past 1
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    # right=True puts a confidence equal to an inner edge in the bin above it; 1.0 is past every
    # inner edge, so it falls in the last bin, and 0 in the first
    index = torch.bucketize(conf, edges[1:-1], right=True)
    found = []
    for i in range(bins):
        here = index == i
        n = int(here.sum())
        found.append({"low": float(edges[i]), "high": float(edges[i + 1]), "count": n,
                      "confidence": float(conf[here].mean()) if n else None,
                      "accuracy": float(right[here].mean()) if n else None})
    return found


def _ece(bins: list[dict]) -> float | None:
    total = sum(b["count"] for b in bins)
    if not total:
        return None
    gap = sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"])
    return round(gap / total, 6)


def expected_calibration_error(confidence: torch.Tensor, correct: torch.Tensor, bins: int = 15) -> float | None:
    """Σ_b (n_b / N)·|accuracy_b − confidence_b| over :func:`calibration_bins`, a
    fraction in [0, 1]; None with no examples. Rounded to 6 decimals."""
    return _ece(calibration_bins(confidence, correct, bins))


def reliability_diagram(curves: dict[str, list[dict]], title: str) -> bytes:
    """Accuracy against mean confidence per bin for each named curve (its
    :func:`calibration_bins`), the diagonal of perfect calibration, and below,
    the examples per bin on a log scale: a bin far off the diagonal matters
    only as much as it holds examples."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5.5, 6.0), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1, label="perfect calibration")
    counted = False
    for k, (name, bins) in enumerate(curves.items()):
        ece = _ece(bins)
        filled = [b for b in bins if b["count"]]
        label = f"{name} (no examples)" if ece is None else f"{name} (ECE {100 * ece:.1f} %)"
        color = f"C{k}"
        if filled:
            top.plot([b["confidence"] for b in filled], [b["accuracy"] for b in filled], marker="o", color=color,
                     label=label)
        else:
            top.plot([], [], marker="o", color=color, label=label)  # still named in the legend
        # side by side within each bin, so that several curves' counts stay readable
        width = [(b["high"] - b["low"]) / max(1, len(curves)) for b in bins]
        bottom.bar([b["low"] + k * w for b, w in zip(bins, width)], [b["count"] for b in bins], width=width,
                   align="edge", color=color, alpha=0.7)
        counted = counted or bool(filled)
    top.set_xlim(0, 1)
    top.set_ylim(0, 1.02)
    top.set_ylabel("accuracy")
    top.legend(fontsize=8, loc="upper left")
    top.grid(alpha=0.3)
    top.set_title(title)
    if counted:  # a log axis with nothing positive on it only warns
        bottom.set_yscale("log")
        bottom.set_ylim(bottom=0.5)  # a bin of one example still shows a bar
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("examples")
    bottom.grid(alpha=0.3)
    return _png(fig)
