"""foolbox 3 attacks as attribkit attack plugins.

foolbox is imported only when an attack runs: importing it costs a second and,
without git on PATH, needs GIT_PYTHON_REFRESH=quiet (set here before import).
"""

from __future__ import annotations

from attribkit import AttackSpec, hookimpl, Hyperparameter

from .runner import foolbox_attack

__version__ = "0.1.0"

LINF_EPS = (10.0, 20.0, 40.0, 60.0, 80.0, 100.0)  # /255
L2_EPS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
KAPPA = (0.0, 2.0, 4.0, 6.0, 8.0, 10.0)
OVERSHOOT = (0.02, 0.05, 0.1, 0.2, 0.5)
BOUNDARY_STEPS = (25.0, 50.0, 100.0, 200.0)


def _kappa_reached(margin, values):
    return margin >= values["kappa"]


def _linf_pgd(fb, point, s):
    return fb.attacks.LinfPGD(rel_stepsize=s["rel_stepsize"], steps=int(s["steps"]),
                              random_start=s["random_start"]), point["eps"]


def _l2_pgd(fb, point, s):
    return fb.attacks.L2PGD(rel_stepsize=s["rel_stepsize"], steps=int(s["steps"]),
                            random_start=s["random_start"]), point["eps_l2"]


def _l2_cw(fb, point, s):
    attack = fb.attacks.L2CarliniWagnerAttack(
        binary_search_steps=int(s["binary_search_steps"]), steps=int(s["steps"]), stepsize=s["stepsize"],
        confidence=point["kappa"], initial_const=s["initial_const"], abort_early=s["abort_early"])
    return attack, None


def _deepfool(fb, point, s):
    return fb.attacks.L2DeepFoolAttack(steps=int(s["steps"]), candidates=int(s["candidates"]),
                                       overshoot=point["overshoot"]), None


def _boundary(fb, point, s):
    return fb.attacks.BoundaryAttack(steps=int(point["steps"]), spherical_step=s["spherical_step"],
                                     source_step=s["source_step"]), None


@hookimpl
def register_attacks(register):
    eps = Hyperparameter("eps", LINF_EPS, unit="/255", scale=255.0, symbol="ε", low=0.0, high=255.0,
                         description="maximum L∞ perturbation")
    pgd_settings = {"steps": 40, "rel_stepsize": 0.025, "random_start": True}
    register(AttackSpec("fb_linf_pgd", foolbox_attack(_linf_pgd), (eps,), settings=pgd_settings, norm="Linf",
                        library="foolbox", description="foolbox LinfPGD (Madry et al.)"))
    register(AttackSpec("fb_l2_pgd", foolbox_attack(_l2_pgd),
                        (Hyperparameter("eps_l2", L2_EPS, symbol="ε₂", low=0.0,
                                        description="maximum L2 perturbation, pixels in [0, 1]"),),
                        settings=pgd_settings, norm="L2", library="foolbox", description="foolbox L2PGD"))
    register(AttackSpec("fb_l2_cw", foolbox_attack(_l2_cw),
                        (Hyperparameter("kappa", KAPPA, symbol="κ", low=0.0,
                                        description="logit margin the attack must reach"),),
                        settings={"binary_search_steps": 4, "steps": 100, "stepsize": 0.01, "initial_const": 1.0,
                                  "abort_early": True},
                        success=_kappa_reached, norm="L2", library="foolbox",
                        description="foolbox Carlini & Wagner L2 with confidence κ; success means margin ≥ κ"))
    register(AttackSpec("fb_deepfool", foolbox_attack(_deepfool),
                        (Hyperparameter("overshoot", OVERSHOOT, low=0.0, high=10.0,
                                        description="how far past the decision boundary to step"),),
                        settings={"steps": 50, "candidates": 10}, norm="L2", library="foolbox",
                        description="foolbox L2 DeepFool"))
    register(AttackSpec("fb_boundary", foolbox_attack(_boundary),
                        (Hyperparameter("steps", BOUNDARY_STEPS, low=1.0,
                                        description="Boundary Attack iterations: more steps, smaller perturbation"),),
                        settings={"spherical_step": 0.01, "source_step": 0.01}, norm="L2", library="foolbox",
                        description="foolbox Boundary Attack: decision-based, only the victim's top-1 label"))
