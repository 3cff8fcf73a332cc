"""``attribkit train``: fit an attribution model on a generated data set, in one
process or as several torchrun workers (:mod:`attribkit.training.distributed`)."""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from .. import storage
from ..errors import AttribkitError
from ..records import RunMeta
from ..runtime import Quiet, Runtime, runtime_of
from ..versions import library_versions
from . import distributed
from .config import TrainConfig
from .data import (AttributionData, cap_per_cell, load_attribution_data, narrow_attacks, quantize, split_validation,
                   target_stats)
from .metrics import evaluate_members
from ..generation.units import derive_seed
from ..trust.fitted import Trust, fit_trust, trust_warnings
from ..trust.saving import jpeg_augment
from ..trust.unknown import STATE
from .models import Member, applicable_heads, build_members, fit_heads, heads_of, predict, predict_with_features
from .run import save_run

JPEG_QUALITIES = (50, 95)  # what --jpeg re-encodes at: from a rough save to a careful one


def train(data_dir: str | Path, config: TrainConfig, out: str | Path, *, verify: bool = True,
          runtime: Runtime | None = None) -> RunMeta:
    """Train, then write the run folder ``out`` in one step at the end (see
    :mod:`attribkit.training.run`). ``verify=False`` reads the data set without
    checking its files against their recorded hashes. Progress (a bar per
    member, with each epoch's metrics) goes to the runtime's progress sink.

    With a runtime of several workers (torchrun), each trains on its share of
    every batch with DistributedDataParallel; only worker 0 reports progress
    and writes ``out``, and every worker returns once it is written."""
    rt = runtime_of(runtime)
    if rt.rank != 0:
        rt = replace(rt, progress=Quiet())
    with rt.progress.stage("train"), rt.numerics_in_effect(), distributed.process_group(rt):
        return _train(Path(data_dir), config, Path(out), verify, rt)


def _train(data_dir: Path, config: TrainConfig, out: Path, verify: bool, rt: Runtime) -> RunMeta:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AttribkitError(f"--out {str(out)!r} is not empty; choose a new run folder (nothing was changed)")
    # validation first, so it is the same examples whatever per_cell keeps
    # validation first (and before narrowing to --attack), so every run holds out the same clean images
    train_data, validation = split_validation(load_attribution_data(data_dir, "train", verify, rt.stream),
                                              config.validation)
    test_data = load_attribution_data(data_dir, "test", verify, rt.stream)
    if config.attacks:
        train_data, test_data = narrow_attacks(train_data, config.attacks), narrow_attacks(test_data, config.attacks)
        validation = narrow_attacks(validation, config.attacks) if validation is not None else None
    train_data = cap_per_cell(train_data, config.per_cell)
    torch.manual_seed(config.seed)
    stats = target_stats(train_data)
    spaces, columns = train_data.label_spaces, train_data.columns
    heads = fit_heads(applicable_heads(columns, config, rt.plugins), train_data.labels, spaces, config, rt.plugins)
    in_chans, image_size = train_data.images.shape[1], train_data.images.shape[-1]
    members = build_members(config, spaces, stats, columns, in_chans, image_size, heads, registry=rt.plugins)
    for m in members.values():
        m.net.to(rt.device)
        m.weighting.to(rt.device)
    meta = RunMeta(
        config.to_dict(), heads, spaces, stats, columns, in_chans, image_size, list(members),
        data={"path": str(data_dir), "fingerprint": train_data.fingerprint, "train": len(train_data),
              "validation": len(validation) if validation is not None else 0, "test": len(test_data)},
        versions=library_versions(),
        parameters={name: sum(p.numel() for p in m.net.parameters()) for name, m in members.items()})
    history = []
    start = time.time()
    # per-epoch metrics are on the validation split when there is one: the test split is for the end
    watched = (validation, "validation") if validation is not None else (test_data, "test")
    finished: dict[str, Member] = {}
    for name, member in members.items():
        history += _fit(name, member, finished, history, train_data, watched, config, rt)
        finished[name] = member
    results = {"seconds": round(time.time() - start, 1), "runtime": {**rt.numerics, "workers": rt.world_size}}
    if validation is not None:
        results["final_validation_metrics"] = _metrics(members, validation, config, rt)
    results["final_test_metrics"] = _metrics(members, test_data, config, rt)
    results["loss_sigmas"] = {name: m.weighting.sigmas() for name, m in members.items()}
    meta = meta.with_results(**results)
    if rt.rank == 0:
        trust = _fit_trust(members, train_data, validation, config) if validation is not None else None
        meta = save_run(out, meta, members, history, trust)  # as saved: the threshold it will be read with
    distributed.barrier(rt)
    return meta


def _metrics(members: dict[str, Member], data: AttributionData, config: TrainConfig, rt: Runtime) -> dict:
    """The members' metrics on ``data``; several workers each predict a share and gather the outputs."""
    images = quantize(data.images) if config.quantize else data.images
    mine = distributed.my_share(torch.arange(len(data)), rt)
    share = images[int(mine[0]):int(mine[-1]) + 1] if len(mine) else images[:0]  # a view: a share is contiguous
    outputs = distributed.gather(predict(members, share), rt)
    return evaluate_members(members, data, config.quantize, outputs)


def _fit_trust(members: dict[str, Member], train_data: AttributionData, validation: AttributionData,
               config: TrainConfig) -> Trust | None:
    """Temperatures and the unknown-attack threshold from the validation split, the scorer from the
    training split's features (attribkit.trust.fitted); None, with a notice, for a model with no
    classification head (nothing to calibrate, no attack logits to score)."""
    heads = heads_of(members)
    if not any(h.task == "classification" for h in heads.values()):
        storage.notice("the run has no classification head: no calibration and no unknown-attack threshold "
                       "(its answers will say calibrated: false)")
        return None

    def seen(data: AttributionData):
        outputs, features = predict_with_features(members, quantize(data.images) if config.quantize else data.images,
                                                  features=True)
        return outputs, features, data.labels

    # a score on the logits alone (msp, energy) learns nothing from the training split: skip predicting it
    train_part = seen(train_data) if STATE[config.unknown_score] else ({}, None, train_data.labels)
    trust = fit_trust(heads, train_data.label_spaces, train_part, seen(validation),
                      method=config.unknown_score, false_rejection=config.false_rejection)
    for warning in trust_warnings(trust):
        storage.notice(warning, once=False)  # about this run: a second training in the process says it again
    return trust


class Objective(nn.Module):
    """A member's whole training loss as one module, its network and its uncertainty weights
    together: DistributedDataParallel then averages the gradients of both."""

    def __init__(self, member: Member, ae_weight: float):
        super().__init__()
        self.net, self.weighting, self.ae_weight = member.net, member.weighting, ae_weight

    def forward(self, x: torch.Tensor, clean: torch.Tensor, labels) -> torch.Tensor:
        outputs, ae_loss = self.net.forward_train(x, clean)
        loss = self.weighting({h.name: h.loss(outputs[h.name], labels) for h in self.net.head_list()})
        return loss if ae_loss is None else loss + self.ae_weight * ae_loss


def _wrapped(objective: Objective, rt: Runtime) -> nn.Module:
    if rt.world_size == 1:
        return objective
    # static_graph: a head may leave a branch unused (--head attack), always the same one
    return nn.parallel.DistributedDataParallel(objective, device_ids=[rt.device] if rt.is_cuda else None,
                                               static_graph=True)


def epoch_text(epoch: int, epochs: int, row: dict) -> str:
    """One epoch as the progress bar shows it: the loss and every metric the heads scored."""
    shown = " ".join(f"{k.removesuffix('_accuracy')} {v:.1%}" if k.endswith("_accuracy") else f"{k} {v:.3g}"
                     for k, v in row.items() if k.endswith(("_accuracy", "_rmse")) and v is not None)
    return f"ep {epoch}/{epochs} loss {row['train_loss']:.3f} {shown}"


def _read_ahead(shares: list[torch.Tensor], images, clean, stream: bool):
    """Each batch's (images, clean images), in order. Streamed, a reader thread reads the next
    batch from the files while this one trains (pread lets go of the GIL); the values are the same."""
    if not stream:
        yield from ((images[idx], clean[idx]) for idx in shares)
        return
    read = lambda idx: (images[idx], clean[idx])
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="attribkit-reader") as reader:
        ahead = reader.submit(read, shares[0]) if shares else None
        for i in range(len(shares)):
            batch = ahead.result()
            ahead = reader.submit(read, shares[i + 1]) if i + 1 < len(shares) else None
            yield batch


def _schedule(opt: torch.optim.Optimizer, config: TrainConfig, total: int):
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=total)
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)


def _fit(name: str, member: Member, finished: dict[str, Member], earlier: list[dict], train_data: AttributionData,
         watched: tuple[AttributionData, str], config: TrainConfig, rt: Runtime) -> list[dict]:
    """Train one member. Its per-epoch metrics are measured together with the members already
    trained (a per-attack regressor answers for the attack another member predicts) and keep only
    what those members did not already report."""
    net = member.net
    objective = _wrapped(Objective(member, config.ae_weight), rt)
    # log σ is a task weight, not a model weight: no decay on it
    opt = torch.optim.Adam([{"params": list(net.parameters()), "weight_decay": config.weight_decay},
                            {"params": list(member.weighting.parameters()), "weight_decay": 0.0}], lr=config.lr)
    steps_per_epoch = math.ceil(len(train_data) / config.batch_size)
    total = steps_per_epoch * config.epochs
    sched = _schedule(opt, config, total)
    gen = torch.Generator().manual_seed(config.seed)
    # its own stream: switching the augmentation on must not change the batches' order
    jpeg_gen = torch.Generator().manual_seed(derive_seed(config.seed, "jpeg"))
    images = quantize(train_data.images) if config.quantize else train_data.images
    history, step = [], 0
    bar = rt.progress.task(f"train {name}", total)
    theirs = {k for row in earlier for k in row if k not in ("member", "epoch", "train_loss", "split", "examples")}
    device, pinned = rt.device, rt.is_cuda
    # fp16 needs its gradients scaled (bf16 has fp32's range); the scaler's overflow check is one host sync a step
    scaler = torch.amp.GradScaler(device.type) if rt.precision == "fp16" else None
    for epoch in range(1, config.epochs + 1):
        net.train()
        order = torch.randperm(len(train_data), generator=gen)
        # kept on the device, read once an epoch: a Python number per step would stop the host at every step
        running = torch.zeros((), dtype=torch.float64, device=device)
        finite = torch.ones((), dtype=torch.bool, device=device)
        count = 0
        # a last batch too small to give every worker an example is left out
        batches = [order[i:i + config.batch_size] for i in range(0, len(order), config.batch_size)
                   if len(order) - i >= rt.world_size]
        shares = [distributed.my_share(batch, rt) for batch in batches]
        # where this worker's share starts in its batch: JPEG draws are made for the whole batch
        offsets = [sum(len(p) for p in batch.tensor_split(rt.world_size)[:rt.rank]) for batch in batches]
        for b, (idx, (x, clean)) in enumerate(zip(shares, _read_ahead(shares, images, train_data.clean, rt.stream))):
            labels = train_data.labels.take(idx).to(device, non_blocking=pinned)
            if config.jpeg > 0:
                x = jpeg_augment(x, config.jpeg, JPEG_QUALITIES, jpeg_gen, batch=len(batches[b]), offset=offsets[b])
            x, clean = rt.to_device(x), rt.to_device(clean)
            with rt.autocast():
                loss = objective(x, clean, labels)
            finite &= torch.isfinite(loss.detach())
            opt.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                opt.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            sched.step()
            step += 1
            running += loss.detach().double() * len(idx)
            count += len(idx)
            bar.update(completed=step)
        distributed.share_buffers(net, rt)
        running, count, bad = distributed.add_up([running, torch.tensor(count, device=device),
                                                  (~finite).to(torch.int32)], rt)
        if bad:
            raise AttribkitError(f"training {name}: the loss became NaN or infinite in epoch {epoch}; try a lower lr")
        metrics = {k: v for k, v in _metrics({**finished, name: member}, watched[0], config, rt).items()
                   if k not in theirs}
        row = {"member": name, "epoch": epoch, "train_loss": round(float(running) / int(count), 5), "split": watched[1],
               **{k: v for k, v in metrics.items() if not isinstance(v, dict)}}
        history.append(row)
        bar.update(info=epoch_text(epoch, config.epochs, row))
    bar.done()
    return history
