"""The plugin's attacks, through attribkit's public registry, as attribkit would call them.

Assertions hold on any machine: bounds, and relations that follow from an
attack's definition within one run, never how often a tiny victim is fooled.
"""

import os

import torch

from attribkit import plugins
from attribkit.attacks import logit_margin

from attribkit_foolbox.runner import black_as_clean


def run(name, model, x, y, grid, **settings):
    spec = plugins.get("attacks", name)
    return spec.run(model, x, y, grid, {**spec.settings, **settings})


def margins(model, adv, y):
    with torch.no_grad():
        return logit_margin(model(adv), y)


def test_installed_plugin_registers_its_attacks_by_entry_point():
    plugins.reset()
    reg = plugins.registry()
    fb = {name for name, item in reg.tables["attacks"].items() if item.plugin == "foolbox"}
    assert fb == {"fb_linf_pgd", "fb_l2_pgd", "fb_l2_cw", "fb_deepfool", "fb_boundary"}
    assert reg.plugins["foolbox"].source == "entry point" and reg.plugins["foolbox"].version == "0.1.0"
    assert reg.get("attacks", "fb_l2_cw").hyperparameter("kappa").symbol == "κ"
    assert reg.get("attacks", "fb_boundary").norm == "L2"


def test_linf_pgd_stays_in_the_eps_ball_and_uses_eps(victim, batch):
    x, y = batch
    small, large = run("fb_linf_pgd", victim, x, y, [{"eps": 10 / 255}, {"eps": 80 / 255}], steps=10)
    assert (small - x).abs().max() <= 10 / 255 + 1e-6 and (large - x).abs().max() <= 80 / 255 + 1e-6
    assert (large - x).abs().max() > 10 / 255  # the larger ε is used, not ignored
    assert min(small.min(), large.min()) >= 0 and max(small.max(), large.max()) <= 1


def test_l2_pgd_stays_in_the_l2_ball_and_uses_eps(victim, batch):
    x, y = batch
    small, large = run("fb_l2_pgd", victim, x, y, [{"eps_l2": 0.5}, {"eps_l2": 3.0}], steps=10)
    l2 = lambda adv: (adv - x).flatten(1).norm(dim=1)
    assert l2(small).max() <= 0.5 + 1e-4 and l2(large).max() <= 3.0 + 1e-4
    assert l2(large).max() > 0.5


def test_cw_reaches_kappa_where_it_succeeds_and_failures_are_not_black(victim, batch):
    x, y = batch
    kappa = 2.0
    reachable, impossible = run("fb_l2_cw", victim, x, y, [{"kappa": kappa}, {"kappa": 500.0}],
                                binary_search_steps=2, steps=25)
    # each image is foolbox's success (margin past κ) or, where it found none, the clean image
    failed = (reachable == x).flatten(1).all(1)
    assert (margins(victim, reachable, y)[~failed] > kappa - 1e-4).all()
    assert (reachable[~failed] != 0).flatten(1).any(1).all()  # no black image is handed on
    # κ = 500 is out of reach: foolbox returns black images, the plugin the clean ones
    assert torch.equal(impossible, x)
    assert (margins(victim, impossible, y) < 0).all()  # so attribkit records them as failed


def test_foolbox_itself_returns_black_images_for_failures(victim, batch):
    """The premise of black_as_clean, checked against foolbox as installed:
    it returns black images and even calls them successful wherever a black
    image is misclassified, so its own success flag cannot be trusted either."""
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    import foolbox as fb

    x, y = batch
    attack = fb.attacks.L2CarliniWagnerAttack(binary_search_steps=1, steps=5, confidence=500.0)
    _, clipped, success = attack(fb.PyTorchModel(victim, bounds=(0, 1)), x, y, epsilons=None)
    assert (clipped == 0).all()
    with torch.no_grad():
        black_is_wrong = victim(torch.zeros_like(x)).argmax(1) != y
    assert torch.equal(success, black_is_wrong) and success.any()  # every class is in the batch


def test_black_as_clean_keeps_real_outputs():
    clean = torch.rand(3, 1, 4, 4)
    adv = clean.clone() + 0.01
    adv[1] = 0
    out = black_as_clean(clean, adv)
    assert torch.equal(out[0], adv[0]) and torch.equal(out[1], clean[1]) and torch.equal(out[2], adv[2])
    black = torch.zeros(1, 1, 4, 4)  # a black clean image attacked to black is a real output
    assert torch.equal(black_as_clean(black, black), black)


def test_deepfool_overshoot_scales_the_same_step(victim, batch):
    # one step from the clean image: both values take the same step, scaled by 1 + overshoot
    x, y = batch
    near, far = run("fb_deepfool", victim, x, y, [{"overshoot": 0.02}, {"overshoot": 0.5}], steps=1)
    assert not torch.equal(near, x)
    assert ((far - x).abs() >= (near - x).abs()).all()
    inside = (far > 0) & (far < 1)  # where clipping to [0, 1] did not cut the step
    assert torch.allclose((far - x)[inside], ((near - x) * 1.5 / 1.02)[inside], atol=1e-5)


def test_boundary_is_decision_based_stays_adversarial_and_never_moves_away(victim, batch):
    x, y = batch
    l2 = lambda adv: (adv - x).flatten(1).norm(dim=1)
    torch.manual_seed(0)
    (few,) = run("fb_boundary", victim, x, y, [{"steps": 5.0}])
    torch.manual_seed(0)
    (many,) = run("fb_boundary", victim, x, y, [{"steps": 50.0}])
    assert (margins(victim, few, y) > 0).all() and (margins(victim, many, y) > 0).all()
    # the same random stream: the longer run starts as the shorter one did, and a
    # step is only taken towards the clean image, so no example ends further away
    assert (l2(many) <= l2(few)).all()
    torch.manual_seed(0)
    again = run("fb_boundary", victim, x, y, [{"steps": 5.0}])[0]
    assert torch.equal(again, few)  # seeded by attribkit: reproducible
