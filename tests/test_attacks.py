"""The attacks, on a stratified sample of digits the tiny victim gets right.

Every assertion holds on any machine: bit-identity with torchattacks within
one run, bounds every attack must respect, and relations that follow exactly
from an attack's definition. Nothing here asserts how often a tiny victim is
fooled: that depends on which CPU kernels ran.
"""

import pytest
import torch
import torchattacks

from attribkit import plugins
from attribkit.attacks import logit_margin


def _run(name, model, x, y, grid, **settings):
    spec = plugins.get("attacks", name)
    return spec.run(model, x, y, grid, {**spec.settings, **settings})


def _linf(adv, x):
    return (adv - x).abs().flatten(1).amax(1)


def _random_other_class(y, seed):
    shift = torch.randint(1, 10, y.shape, generator=torch.Generator().manual_seed(seed))
    return (y + shift) % 10


class Recording(torch.nn.Module):
    """The victim, keeping every input it is asked about and its logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.inputs, self.logits = [], []

    def forward(self, x):
        logits = self.model(x)
        self.inputs.append(x.detach().clone())
        self.logits.append(logits.detach().clone())
        return logits


def test_fgsm_shared_gradient_is_bit_identical_to_torchattacks_per_eps(tiny_resnet, attack_batch):
    x, y = attack_batch
    eps = [10 / 255, 40 / 255, 200 / 255]
    ours = _run("fgsm", tiny_resnet, x, y, [{"eps": e} for e in eps])
    for e, adv in zip(eps, ours):
        assert torch.equal(adv, torchattacks.FGSM(tiny_resnet, eps=e)(x, y))
        assert _linf(adv, x).max() <= e + 1e-7
        assert adv.min() >= 0 and adv.max() <= 1
    # one gradient sign for all ε: a larger ε moves every pixel at least as far
    for smaller, larger in zip(ours, ours[1:]):
        assert ((larger - x).abs() >= (smaller - x).abs()).all()


def test_pgd_stays_in_the_eps_ball_and_the_image_range(tiny_resnet, attack_batch):
    x, y = attack_batch
    torch.manual_seed(0)
    small, large = _run("pgd", tiny_resnet, x, y, [{"eps": 20 / 255}, {"eps": 120 / 255}], steps=10)
    assert _linf(small, x).max() <= 20 / 255 + 1e-6 and _linf(large, x).max() <= 120 / 255 + 1e-6
    assert min(small.min(), large.min()) >= 0 and max(small.max(), large.max()) <= 1


def test_pgd_batched_over_eps_is_bit_identical_to_torchattacks_per_eps(tiny_resnet, attack_batch):
    x, y = attack_batch
    eps = [10 / 255, 60 / 255, 150 / 255]
    torch.manual_seed(123)
    ours = _run("pgd", tiny_resnet, x, y, [{"eps": e} for e in eps], steps=5)
    torch.manual_seed(123)  # the same random stream, drawn one ε after another
    for e, adv in zip(eps, ours):
        reference = torchattacks.PGD(tiny_resnet, eps=e, alpha=10 / 255, steps=5, random_start=True)(x, y)
        assert torch.equal(adv, reference)


def test_targeted_pgd_is_bit_identical_to_torchattacks_targeted_mode(tiny_resnet, attack_batch):
    x, y = attack_batch
    target = _random_other_class(y, seed=5)
    assert (target != y).all() and len(target.unique()) > 1
    eps = [40 / 255, 120 / 255]
    torch.manual_seed(7)
    ours = _run("pgd_targeted", tiny_resnet, x, target, [{"eps": e} for e in eps], steps=5)
    torch.manual_seed(7)
    for e, adv in zip(eps, ours):
        reference = torchattacks.PGD(tiny_resnet, eps=e, alpha=10 / 255, steps=5, random_start=True)
        reference.set_mode_targeted_by_label(quiet=True)
        assert torch.equal(adv, reference(x, target))
        assert _linf(adv, x).max() <= e + 1e-6 and adv.min() >= 0 and adv.max() <= 1


def test_cw_returns_the_smallest_l2_iterate_that_reached_kappa_else_the_last(tiny_resnet, attack_batch):
    """C&W's choice, checked against every iterate of the same run: the
    optimisation is deterministic, so a run one step longer sees, as its last
    input, the final iterate of the shorter one."""
    x, y = attack_batch
    kappas, steps = (2.0, 8.0), 15
    grid = [{"kappa": k} for k in kappas]
    returned = torch.cat(_run("cw", tiny_resnet, x, y, grid, steps=steps))
    seen = Recording(tiny_resnet)
    _run("cw", seen, x, y, grid, steps=steps + 1)
    iterates = torch.stack(seen.inputs)  # (steps + 1, grid × n, C, H, W)
    clean, labels = x.repeat(len(kappas), 1, 1, 1), y.repeat(len(kappas))
    kappa = torch.tensor(kappas).repeat_interleave(len(x))
    margin = torch.stack([logit_margin(logits, labels) for logits in seen.logits])[:steps]
    l2 = (iterates[:steps] - clean).pow(2).flatten(2).sum(2)
    reached = margin >= kappa
    assert torch.equal(iterates[0], clean)  # C&W starts from the clean image
    for i in range(len(clean)):
        if reached[:, i].any():
            best = torch.where(reached[:, i], l2[:, i], torch.tensor(float("inf"))).argmin()
            assert torch.equal(returned[i], iterates[best, i]), f"example {i}: not the smallest-L2 success"
        else:
            assert torch.equal(returned[i], iterates[steps, i]), f"example {i}: a failure is its last iterate"


def test_batched_kappa_grid_equals_one_run_per_kappa(tiny_resnet, attack_batch):
    x, y = attack_batch[0][:6], attack_batch[1][:6]
    together = _run("cw", tiny_resnet, x, y, [{"kappa": 2.0}, {"kappa": 6.0}], steps=15)
    alone = _run("cw", tiny_resnet, x, y, [{"kappa": 6.0}], steps=15)[0]
    assert torch.allclose(together[1], alone, atol=1e-5)


@pytest.mark.parametrize("name, settings", [("bim", {"steps": 5}), ("mifgsm", {"steps": 5}),
                                            ("square", {"n_queries": 20})])
def test_more_linf_attacks_stay_in_the_eps_ball_and_use_eps(name, settings, tiny_resnet, attack_batch):
    x, y = attack_batch
    torch.manual_seed(0)
    small, large = _run(name, tiny_resnet, x, y, [{"eps": 10 / 255}, {"eps": 80 / 255}], **settings)
    assert _linf(small, x).max() <= 10 / 255 + 1e-6 and _linf(large, x).max() <= 80 / 255 + 1e-6
    assert _linf(large, x).max() > 10 / 255  # the larger ε is used, not ignored
    assert min(small.min(), large.min()) >= 0 and max(small.max(), large.max()) <= 1


@pytest.mark.parametrize("name", ["bim", "mifgsm"])
def test_one_step_of_an_iterative_linf_attack_moves_every_pixel_further_for_a_larger_eps(name, tiny_resnet,
                                                                                          attack_batch):
    # one step from the clean image: one gradient sign, a step past both ε, then the projection
    x, y = attack_batch
    small, large = _run(name, tiny_resnet, x, y, [{"eps": 10 / 255}, {"eps": 80 / 255}], steps=1, alpha=1.0)
    assert not torch.equal(large, x)
    assert ((large - x).abs() >= (small - x).abs()).all()


def test_deepfool_overshoot_scales_the_same_step(tiny_resnet, attack_batch):
    # one step from the clean image: both values take the same step δ, scaled by 1 + overshoot
    x, y = attack_batch[0][:10], attack_batch[1][:10]
    near, far = _run("deepfool", tiny_resnet, x, y, [{"overshoot": 0.02}, {"overshoot": 0.5}], steps=1)
    assert not torch.equal(near, x)
    assert ((far - x).abs() >= (near - x).abs()).all()
    inside = (far > 0) & (far < 1)  # where clipping to [0, 1] did not cut the step
    assert torch.allclose((far - x)[inside], ((near - x) * 1.5 / 1.02)[inside], atol=1e-5)
