"""Assembling attribution models from the installed head plugins, and asking them.

A trained model is a set of *members*: MTAA is one network with every head;
single-task is one network per head; single-label is one network with one
class per combination.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .. import plugins
from ..errors import AttribkitError
from ..model.cnn import PlainCNN
from ..model.combination import CombinationHead
from ..model.heads import HeadContext, HyperparameterHead, attributed_value
from ..model.losses import UncertaintyWeighting
from ..model.net import Architecture, AttributionNet, HeadedNet
from .config import TrainConfig


@dataclass
class Member:
    net: HeadedNet
    weighting: UncertaintyWeighting


def applicable_heads(columns: list[str], config: TrainConfig) -> list:
    reg = plugins.registry()
    names = list(config.heads) or reg.names("heads")
    specs = [reg.get("heads", n) for n in names]
    chosen = [s for s in specs if s.applies(columns)]
    if not chosen:
        raise AttribkitError(f"no head plugin applies to the data set's labels {columns}")
    return chosen


def head_plugins(members: dict[str, Member]) -> dict[str, str]:
    """Head name → the plugin that registered it, for every head plugin the
    members use (single-label's combination head is not a plugin)."""
    table = plugins.registry().tables["heads"]
    return {name: table[name].plugin for name in heads_of(members) if name in table}


def build_members(config: TrainConfig, label_spaces: dict, stats: dict, columns: list[str], in_chans: int,
                  image_size: int, combinations: list[str] | None = None) -> dict[str, Member]:
    def context(**kw):
        return HeadContext(label_spaces, {}, stats, **{"regression": config.regression, **kw})

    def weighted(net):
        tasks = {h.name: h.task for h in net.head_list()}
        return Member(net, UncertaintyWeighting(tasks, config.loss if len(tasks) > 1 else "sum"))

    if config.model == "cnn":
        # one plain CNN per signature; its regressor picks the attack CNN's predicted attack's output
        specs = applicable_heads(columns, config)
        return {s.name: weighted(PlainCNN(in_chans, [s.build], context(attack_logits=False))) for s in specs}
    backbone = plugins.get("backbones", config.backbone)
    full = Architecture(config.backbone, config.width, config.perturbation, config.task_specific, config.fusion,
                        input_scale=config.input_scale, stem=config.stem, pool=config.pool)
    plain = Architecture(config.backbone, config.width, perturbation=False, task_specific=False, fusion=False,
                         input_scale=config.input_scale, stem=config.stem, pool=config.pool)

    def member(arch, builders, ctx):
        return weighted(AttributionNet(arch, backbone, in_chans, image_size, builders, ctx))

    if config.model == "mtaa":
        specs = applicable_heads(columns, config)
        return {"mtaa": member(full, [s.build for s in specs], context())}
    if config.model == "single-task":
        # each signature alone, so the regressor cannot read attack logits (paper's [22] baseline)
        specs = applicable_heads(columns, config)
        return {s.name: member(plain, [s.build], context(regression="single", attack_logits=False)) for s in specs}
    if not combinations:
        raise AttribkitError("single-label needs the training data's combinations")
    build = lambda ctx: CombinationHead(combinations, ctx.feature_dims["attack"])
    return {"single-label": member(plain, [build], context())}


@torch.no_grad()
def predict(members: dict[str, Member], images: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Every head's raw output for a batch of images, all members merged."""
    for m in members.values():
        m.net.eval()
    chunks = []
    for i in range(0, len(images), batch_size):
        out: dict[str, torch.Tensor] = {}
        for m in members.values():
            out.update(m.net(images[i:i + batch_size]))
        chunks.append(out)
    return {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]}


def heads_of(members: dict[str, Member]) -> dict[str, nn.Module]:
    return {h.name: h for m in members.values() for h in m.net.head_list()}


def signatures(members: dict[str, Member], outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The three signatures as tensors, whatever the model kind: attack and
    victim index and probability, and the hyperparameter (display units) of
    the predicted attack."""
    heads = heads_of(members)
    n = len(next(iter(outputs.values())))
    if "combination" in heads:
        attack, victim, hp, prob = heads["combination"].decode(outputs["combination"])
        return {"attack": attack, "attack_prob": prob, "victim": victim, "victim_prob": prob,
                "hp": attributed_value(hp)}
    sig = {}
    for name in ("attack", "victim"):
        if name in outputs:
            prob, idx = outputs[name].softmax(1).max(1)
            sig[name], sig[f"{name}_prob"] = idx, prob
    hp_head = heads.get("hyperparameter")
    if isinstance(hp_head, HyperparameterHead):
        attack = sig.get("attack", torch.zeros(n, dtype=torch.long))
        sig["hp"] = hp_head.values(outputs["hyperparameter"], attack)
    return sig
