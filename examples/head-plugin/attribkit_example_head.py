"""A head plugin: which architecture family the victim belongs to.

A family (ResNet, VGG, …) is a coarser signature than the exact victim and
is what an analyst can still name when the victim itself was never seen.
The label is derived from the victim names in the data set's label space.
"""

import re

import torch

from attribkit import ClassificationHead, HeadSpec, hookimpl


def family(victim_name: str) -> str:
    # "resnet18" → "resnet", "inception_v3" → "inception"
    return re.sub(r"(_?v?\d+.*)$", "", victim_name) or victim_name


class VictimFamilyHead(ClassificationHead):
    def __init__(self, context):
        victims = context.labels.victims
        families = sorted({family(v) for v in victims})
        super().__init__("victim_family", families, context.feature_dims["victim"], branch="victim")
        # a buffer, so the mapping travels with the weights and attribution needs no data set
        self.register_buffer("family_of_victim", torch.tensor([families.index(family(v)) for v in victims]))

    def target(self, labels):
        return self.family_of_victim[labels.victim], torch.ones_like(labels.victim, dtype=torch.bool)


@hookimpl
def register_heads(register):
    register(HeadSpec("victim_family", "classification", lambda columns: "victim" in columns, VictimFamilyHead,
                      description="the victim's architecture family (ResNet, VGG, Inception, …)"))
