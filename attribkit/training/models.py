"""Assembling attribution models from the installed head plugins, and asking them.

A trained model is a set of *members*: MTAA is one network with every head;
single-task and the CNN baseline one network per head; single-label one
network with the heads made for it. Which heads exist is whatever plugins
registered: nothing here knows any head by name.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch
from torch import nn

from .. import plugins
from ..errors import AttribkitError
from ..model.cnn import PlainCNN
from ..model.heads import Head, HeadContext
from ..model.losses import UncertaintyWeighting
from ..model.net import Architecture, AttributionNet, HeadedNet
from ..records import HeadRecord, Labels, LabelSpaces
from ..specs import HeadSpec
from .config import TrainConfig


@dataclass
class Member:
    net: HeadedNet
    weighting: UncertaintyWeighting


def applicable_heads(columns: list[str], config: TrainConfig, registry: plugins.Registry | None = None) -> list[HeadSpec]:
    """The head plugins this model kind trains on a data set with these label columns."""
    reg = registry or plugins.registry()
    names = list(config.heads) or reg.names("heads")
    specs = [reg.get("heads", n) for n in names]
    chosen = [s for s in specs if config.model in s.models and s.applies(columns)]
    if not chosen:
        joins = [s.name for s in specs if config.model in s.models]
        raise AttribkitError(f"no head plugin applies to a {config.model} model of the data set's labels {columns}"
                             + (f" (of the heads asked for, none joins a {config.model} model)" if not joins else ""))
    return chosen


def fit_heads(specs: list[HeadSpec], labels: Labels, spaces: LabelSpaces, config: TrainConfig,
              registry: plugins.Registry | None = None) -> dict[str, HeadRecord]:
    """Each head's plugin and what it learns from the training labels before training."""
    table = (registry or plugins.registry()).tables["heads"]
    return {s.name: HeadRecord(table[s.name].plugin, s.fit(labels, spaces, config) if s.fit else None) for s in specs}


def _builder(spec: HeadSpec, state):
    """The spec's build, checked: a head must be what its spec says, or the run could not be read back."""
    def build(context: HeadContext) -> Head:
        head = spec.build(replace(context, state=state))
        if not isinstance(head, Head):
            raise AttribkitError(f"head plugin {spec.name!r} built a {type(head).__name__}, not an attribkit Head")
        if head.name != spec.name or head.task != spec.task:
            raise AttribkitError(f"head plugin {spec.name!r} built a {head.task} head named {head.name!r}; its spec "
                                 f"says a {spec.task} head named {spec.name!r}")
        return head
    return build


def build_members(config: TrainConfig, spaces: LabelSpaces, stats: dict, columns: list[str], in_chans: int,
                  image_size: int, heads: dict[str, HeadRecord] | None = None, legacy_state=None,
                  registry: plugins.Registry | None = None) -> dict[str, Member]:
    """The untrained networks of a model; ``heads`` (from :func:`fit_heads` or a run)
    restrict it to those heads and give each its fitted state."""
    reg = registry or plugins.registry()
    specs = applicable_heads(columns, config, reg)
    if heads is not None:
        specs = [s for s in specs if s.name in heads]
    state = lambda s: heads[s.name].state if heads and heads[s.name].state is not None else legacy_state

    def context(**kw):
        return HeadContext(spaces, {}, stats, **{"regression": config.regression, "config": config, **kw})

    def weighted(net):
        tasks = {h.name: h.task for h in net.head_list()}
        return Member(net, UncertaintyWeighting(tasks, config.loss if len(tasks) > 1 else "sum"))

    if config.model == "cnn":
        # one plain CNN per head; a regressor reads the attack CNN's predicted attack, not its logits
        return {s.name: weighted(PlainCNN(in_chans, [_builder(s, state(s))], context(joint=False, heads=(s.name,))))
                for s in specs}
    backbone = reg.get("backbones", config.backbone)
    full = Architecture(config.backbone, config.width, config.perturbation, config.task_specific, config.fusion,
                        input_scale=config.input_scale, stem=config.stem, pool=config.pool)
    plain = Architecture(config.backbone, config.width, perturbation=False, task_specific=False, fusion=False,
                         input_scale=config.input_scale, stem=config.stem, pool=config.pool)

    def member(arch, chosen, ctx):
        return weighted(AttributionNet(arch, backbone, in_chans, image_size, [_builder(s, state(s)) for s in chosen], ctx))

    together = tuple(s.name for s in specs)
    if config.model == "mtaa":
        return {"mtaa": member(full, specs, context(heads=together))}
    if config.model == "single-task":
        # each signature alone, so a regressor cannot read attack logits (paper's [22] baseline)
        return {s.name: member(plain, [s], context(regression="single", joint=False, heads=(s.name,))) for s in specs}
    return {config.model: member(plain, specs, context(heads=together))}


def device_of(members: dict[str, Member]) -> torch.device:
    """Where the members' weights are (all of a model's members live on one device)."""
    return next(next(iter(members.values())).net.parameters()).device


@torch.no_grad()
def predict(members: dict[str, Member], images: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Every head's raw output for a batch of images, all members merged: computed on the
    members' device, returned on the CPU (where scores, answers and figures are made)."""
    return predict_with_features(members, images, batch_size)[0]


FEATURES = "features"  # not a head name: what predict_with_features returns the features under


@torch.no_grad()
def predict_with_features(members: dict[str, Member], images: torch.Tensor, batch_size: int = 256,
                          features: bool = False) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """:func:`predict`'s outputs, and (``features``) the features every head reads, side by side: each
    member's branches in order, a branch two heads share once. One pass computes both."""
    device = device_of(members)
    for m in members.values():
        m.net.eval()
    chunks, kept = [], []
    for i in range(0, len(images), batch_size):
        batch = images[i:i + batch_size].to(device)
        out: dict[str, torch.Tensor] = {}
        parts = []
        for m in members.values():
            feats, _ = m.net.features(batch)
            out.update(m.net.run_heads(feats))
            parts += list({id(t): t for t in feats.values()}.values())
        chunks.append({k: v.cpu() for k, v in out.items()})
        if features:
            kept.append(torch.cat(parts, 1).float().cpu())
    if not chunks:
        raise AttribkitError("no images to predict")
    return {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]}, torch.cat(kept) if features else None


def heads_of(members: dict[str, Member]) -> dict[str, nn.Module]:
    """Every head by name, on the CPU as :func:`predict`'s outputs are (a copy, if the model is elsewhere)."""
    on_cpu = device_of(members).type == "cpu"
    return {h.name: h if on_cpu else copy.deepcopy(h).cpu() for m in members.values() for h in m.net.head_list()}
