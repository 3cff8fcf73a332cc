"""An attack plugin: L∞ noise of random sign, |δ| = ε everywhere.

Not an adversarial attack but the control every attribution study wants:
does the model tell a crafted perturbation from noise of the same size?
"""

import torch

from attribkit import AttackSpec, hookimpl, Hyperparameter


def sign_noise(model, images, labels, grid, settings):
    # run() gets the whole grid: draw the noise once, scale it per ε
    sign = torch.randint(0, 2, images.shape, dtype=images.dtype) * 2 - 1
    return [torch.clamp(images + point["eps"] * sign, 0, 1) for point in grid]


@hookimpl
def register_attacks(register):
    eps = Hyperparameter("eps", (10.0, 20.0, 40.0, 80.0), unit="/255", scale=255.0, symbol="ε", low=0.0, high=255.0)
    register(AttackSpec("sign_noise", sign_noise, (eps,), norm="Linf",
                        description="random ±ε noise: a control, not an attack"))
