import pytest
import torch
import torchattacks

from attribkit import plugins
from attribkit.attacks import logit_margin


@pytest.fixture(scope="module")
def batch(mnist):
    return mnist.images[:24], mnist.labels[:24]


def _run(name, model, x, y, grid, **settings):
    spec = plugins.get("attacks", name)
    return spec.run(model, x, y, grid, {**spec.settings, **settings})


def test_fgsm_shared_gradient_is_bit_identical_to_torchattacks_per_eps(tiny_resnet, batch):
    x, y = batch
    eps = [10 / 255, 40 / 255, 200 / 255]
    ours = _run("fgsm", tiny_resnet, x, y, [{"eps": e} for e in eps])
    for e, adv in zip(eps, ours):
        reference = torchattacks.FGSM(tiny_resnet, eps=e)(x, y)
        assert torch.equal(adv, reference)
        assert (adv - x).abs().max() <= e + 1e-7
        assert adv.min() >= 0 and adv.max() <= 1


def test_pgd_stays_in_the_eps_ball_and_beats_fgsm(tiny_resnet, batch):
    x, y = batch
    torch.manual_seed(0)
    (pgd,) = _run("pgd", tiny_resnet, x, y, [{"eps": 20 / 255}], steps=10)
    (fgsm,) = _run("fgsm", tiny_resnet, x, y, [{"eps": 20 / 255}])
    assert (pgd - x).abs().max() <= 20 / 255 + 1e-6
    with torch.no_grad():
        assert logit_margin(tiny_resnet(pgd), y).mean() > logit_margin(tiny_resnet(fgsm), y).mean()


def test_cw_successes_reach_kappa_and_kappa_changes_the_result(tiny_resnet, batch):
    x, y = batch
    spec = plugins.get("attacks", "cw")
    kappas = (2.0, 8.0)
    advs = _run("cw", tiny_resnet, x, y, [{"kappa": k} for k in kappas], steps=60)
    margins, l2 = [], []
    with torch.no_grad():
        for k, adv in zip(kappas, advs):
            m = logit_margin(tiny_resnet(adv), y)
            ok = spec.success(m, {"kappa": torch.full_like(m, k)})
            assert ok.float().mean() > 0.5, f"κ={k}: only {ok.float().mean():.0%} succeeded"
            assert (m[ok] >= k).all()
            margins.append(m[ok].mean())
            l2.append((adv - x).flatten(1).norm(dim=1)[ok].mean())
    assert not torch.equal(advs[0], advs[1])
    assert margins[1] > margins[0] + 3 and l2[1] > l2[0]


def test_cw_failures_are_reported_not_labelled(tiny_resnet, batch):
    x, y = batch
    spec = plugins.get("attacks", "cw")
    (adv,) = _run("cw", tiny_resnet, x, y, [{"kappa": 1000.0}], steps=5)
    with torch.no_grad():
        m = logit_margin(tiny_resnet(adv), y)
    assert not spec.success(m, {"kappa": torch.full_like(m, 1000.0)}).any()


def test_batched_kappa_grid_equals_one_run_per_kappa(tiny_resnet, batch):
    x, y = batch[0][:6], batch[1][:6]
    together = _run("cw", tiny_resnet, x, y, [{"kappa": 2.0}, {"kappa": 6.0}], steps=15)
    alone = _run("cw", tiny_resnet, x, y, [{"kappa": 6.0}], steps=15)[0]
    assert torch.allclose(together[1], alone, atol=1e-5)


def test_pgd_batched_over_eps_is_bit_identical_to_torchattacks_per_eps(tiny_resnet, batch):
    x, y = batch
    eps = [10 / 255, 60 / 255, 150 / 255]
    torch.manual_seed(123)
    ours = _run("pgd", tiny_resnet, x, y, [{"eps": e} for e in eps], steps=5)
    torch.manual_seed(123)  # the same random stream, drawn one ε after another
    for e, adv in zip(eps, ours):
        reference = torchattacks.PGD(tiny_resnet, eps=e, alpha=10 / 255, steps=5, random_start=True)(x, y)
        assert torch.equal(adv, reference)


@pytest.mark.parametrize("name, settings", [("bim", {"steps": 5}), ("mifgsm", {"steps": 5}),
                                            ("square", {"n_queries": 20})])
def test_more_linf_attacks_stay_in_the_eps_ball_and_follow_eps(name, settings, tiny_resnet, batch):
    x, y = batch
    torch.manual_seed(0)
    small, large = _run(name, tiny_resnet, x, y, [{"eps": 10 / 255}, {"eps": 80 / 255}], **settings)
    assert (small - x).abs().max() <= 10 / 255 + 1e-6 and (large - x).abs().max() <= 80 / 255 + 1e-6
    assert (large - x).abs().max() > 10 / 255  # the larger ε is used, not ignored
    assert small.min() >= 0 and large.max() <= 1


def test_deepfool_overshoot_moves_further(tiny_resnet, batch):
    x, y = batch[0][:6], batch[1][:6]
    near, far = _run("deepfool", tiny_resnet, x, y, [{"overshoot": 0.02}, {"overshoot": 0.5}], steps=20)
    l2 = lambda adv: (adv - x).flatten(1).norm(dim=1).mean()
    assert l2(far) > l2(near)
    with torch.no_grad():
        assert (logit_margin(tiny_resnet(far), y) > 0).float().mean() >= 0.5


def test_targeted_pgd_is_bit_identical_to_torchattacks_targeted_mode(tiny_resnet, batch):
    x, _ = batch
    target = (batch[1] + 3) % 10
    torch.manual_seed(7)
    ours = _run("pgd_targeted", tiny_resnet, x, target, [{"eps": 40 / 255}, {"eps": 120 / 255}], steps=5)
    torch.manual_seed(7)
    for e, adv in zip([40 / 255, 120 / 255], ours):
        reference = torchattacks.PGD(tiny_resnet, eps=e, alpha=10 / 255, steps=5, random_start=True)
        reference.set_mode_targeted_by_label(quiet=True)
        assert torch.equal(adv, reference(x, target))
    with torch.no_grad():
        hits = [(tiny_resnet(adv).argmax(1) == target).float().mean().item() for adv in ours]
    assert hits[1] > 0.5 and hits[1] >= hits[0]  # a larger ε reaches the target more often
