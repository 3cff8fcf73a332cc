"""FGSM, PGD (L∞) and C&W (L2) with the settings of the paper's Table 1, and
more torchattacks attacks so scenarios can go beyond the paper's three."""

from functools import partial

from attribkit.attacks.cw import cw_l2
from attribkit.attacks.fgsm import fgsm
from attribkit.attacks.pgd import pgd
from attribkit.attacks.torchattacks_family import bim, deepfool, mifgsm, per_point, square
from attribkit.hookspecs import hookimpl
from attribkit.specs import AttackSpec, Hyperparameter

EPS_GRID = tuple(float(v) for v in range(10, 201, 10))  # 10/255 … 200/255
KAPPA_GRID = tuple(float(v) for v in range(5, 101, 5))  # 5 … 100


def eps() -> Hyperparameter:
    return Hyperparameter("eps", EPS_GRID, unit="/255", scale=255.0, symbol="ε", low=0.0, high=255.0,
                          description="maximum L∞ perturbation")


def kappa_reached(margin, values):
    return margin >= values["kappa"]


@hookimpl
def register_attacks(register):
    register(AttackSpec("fgsm", fgsm, (eps(),), norm="Linf", library="attribkit (== torchattacks.FGSM)",
                        description="Fast Gradient Sign Method: one step of size ε"))
    register(AttackSpec("pgd", pgd, (eps(),), settings={"alpha": 10 / 255, "steps": 100, "random_start": True},
                        norm="Linf", library="attribkit (== torchattacks.PGD per ε)",
                        description="Projected Gradient Descent with random start"))
    register(AttackSpec("pgd_targeted", partial(pgd, targeted=True), (eps(),),
                        settings={"alpha": 10 / 255, "steps": 100, "random_start": True}, norm="Linf", targeted=True,
                        library="attribkit (== torchattacks.PGD, targeted mode)",
                        description="PGD towards a random other class; success means the victim predicts it"))
    register(AttackSpec("cw", cw_l2, (Hyperparameter("kappa", KAPPA_GRID, symbol="κ", low=0.0,
                                                     description="logit margin the attack must reach"),),
                        settings={"c": 50.0, "steps": 500, "lr": 0.01}, success=kappa_reached, norm="L2",
                        library="attribkit",
                        description="Carlini & Wagner L2; success means the logit margin reached κ"))
    register(AttackSpec("bim", per_point(bim), (eps(),), settings={"alpha": 10 / 255, "steps": 20}, norm="Linf",
                        library="torchattacks", description="Basic Iterative Method (iterated FGSM, no random start)"))
    register(AttackSpec("mifgsm", per_point(mifgsm), (eps(),),
                        settings={"alpha": 10 / 255, "steps": 20, "decay": 1.0}, norm="Linf", library="torchattacks",
                        description="Momentum Iterative FGSM"))
    register(AttackSpec("deepfool", per_point(deepfool),
                        (Hyperparameter("overshoot", (0.02, 0.05, 0.1, 0.2, 0.5), low=0.0, high=10.0,
                                        description="how far past the decision boundary to step"),),
                        settings={"steps": 50}, norm="L2", library="torchattacks",
                        description="DeepFool: minimal L2 step across the nearest decision boundary"))
    register(AttackSpec("square", per_point(square), (eps(),),
                        settings={"n_queries": 1000, "p_init": 0.8, "seed": 0}, norm="Linf", library="torchattacks",
                        description="Square Attack: score-based, gradient-free random search"))
