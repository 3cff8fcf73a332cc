"""Two more attribution signatures, as head plugins the MTAA trainer picks up.

- ``norm``: which norm the attack bounds (L∞, L2, …). The label comes from
  each attack's declared ``norm``, so an attack plugin gets it for free, and
  the head still answers for attacks it never saw.
- ``targeted``: whether the attacker aimed for a chosen class. The label is
  per example: attribkit's ``generate`` records the target class of every
  targeted attack (``target`` ≥ 0) and -1 otherwise.

Both read the attack branch, like the attack classifier.
"""

from __future__ import annotations

import torch

from attribkit import ClassificationHead, HeadSpec, hookimpl

__version__ = "0.1.0"


class NormHead(ClassificationHead):
    def __init__(self, context):
        info, attacks = context.labels.attack_info, context.labels.attacks
        norms = sorted({info[a].norm for a in attacks})
        super().__init__("norm", norms, context.feature_dims["attack"], "attack")
        # attack index → norm index, saved with the weights so attribution needs no data set
        self.register_buffer("norm_of_attack", torch.tensor([norms.index(info[a].norm) for a in attacks]))

    def target(self, labels):
        return self.norm_of_attack[labels.attack], torch.ones_like(labels.attack, dtype=torch.bool)


class TargetedHead(ClassificationHead):
    def __init__(self, context):
        super().__init__("targeted", ["untargeted", "targeted"], context.feature_dims["attack"], "attack")

    def target(self, labels):
        return (labels.target >= 0).long(), torch.ones_like(labels.target, dtype=torch.bool)


def _has_norms(columns):
    return "attack" in columns


def _has_targets(columns):
    # attribkit lists "target" only when some attack in the data set is targeted
    return "target" in columns


@hookimpl
def register_heads(register):
    register(HeadSpec("norm", "classification", _has_norms, NormHead,
                      description="the attack's norm (L∞, L2, …), from each attack's declared norm"))
    register(HeadSpec("targeted", "classification", _has_targets, TargetedHead,
                      description="targeted vs untargeted, from the target class generate records"))
