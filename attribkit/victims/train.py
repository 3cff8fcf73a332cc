"""Training the victim zoo on clean images."""

from __future__ import annotations

import math
import time
from typing import Callable

import torch
import torch.nn.functional as F

from .. import plugins, storage
from ..data import split_dataset
from ..errors import AttribkitError
from ..runtime import Runtime, runtime_of
from ..specs import Dataset
from ..versions import library_versions
from .model import Victim
from .store import VictimRecord, check_weights, read_record, record_path, save_victim, victim_path, wrap


def make_record(architecture: str, dataset: Dataset, width: float | None, name: str | None = None,
                registry: plugins.Registry | None = None) -> VictimRecord:
    spec = (registry or plugins.registry()).get("victims", architecture)
    width = spec.default_width if width is None else width
    if not 0 < width <= 4:
        raise AttribkitError(f"width must be in (0, 4], got {width}")
    channels, size = dataset.images.shape[1], dataset.images.shape[-1]
    mean = dataset.images.mean(dim=(0, 2, 3)).tolist()
    std = dataset.images.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()
    return VictimRecord(
        name=name or architecture, num_classes=dataset.num_classes, in_chans=channels, image_size=size,
        mean=mean, std=std, resize_to=spec.min_size if size < spec.min_size else None,
        architecture=architecture, timm_name=spec.timm_name, width=width, family=spec.family,
        dataset=dataset.name,
    )


def _shift(x: torch.Tensor, gen: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random translation by up to ``pad`` pixels: cheap augmentation that
    lifts small-data test accuracy by about a point."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dx, dy = torch.randint(0, 2 * pad + 1, (2,), generator=gen).tolist()
    return padded[:, :, dy:dy + h, dx:dx + w]


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    model.eval()
    device = next(model.parameters()).device
    correct = sum((model(images[i:i + batch_size].to(device)).argmax(1).cpu() == labels[i:i + batch_size]).sum().item()
                  for i in range(0, len(images), batch_size))
    return correct / max(1, len(images))


LOSS_EVERY = 25  # steps between the losses a progress bar shows: reading one waits for the device


def train_victim(
    record: VictimRecord, dataset: Dataset, *, epochs: int = 8, batch_size: int = 64, lr: float | None = None,
    seed: int = 0, test_fraction: float = 0.2, on_step: Callable[[int, int, float | None], None] | None = None,
    registry: plugins.Registry | None = None, device: torch.device | str = "cpu",
) -> tuple[Victim, VictimRecord]:
    """Train on the clean training split; report accuracy on the test split.
    ``on_step(step, total, loss)`` gets the loss every :data:`LOSS_EVERY` steps and
    at the last, None in between. The victim comes back on the CPU, frozen."""
    torch.manual_seed(seed)
    spec = (registry or plugins.registry()).get("victims", record.architecture)
    lr = spec.lr if lr is None else lr
    net = spec.build(num_classes=record.num_classes, in_chans=record.in_chans, width=record.width)
    model = wrap(record, net).to(device)
    split = split_dataset(dataset.labels, test_fraction, seed)
    x, y = dataset.images[split.train], dataset.labels[split.train]
    steps_per_epoch = math.ceil(len(x) / batch_size)
    total = epochs * steps_per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.2)
    gen = torch.Generator().manual_seed(seed)
    start, step = time.time(), 0
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            loss = F.cross_entropy(model(_shift(x[idx], gen).to(device)), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if on_step:
                on_step(step, total, loss.item() if step % LOSS_EVERY == 0 or step == total else None)
    record.test_accuracy = accuracy(model, dataset.images[split.test], dataset.labels[split.test])
    record.seed = seed
    record.training = dict(epochs=epochs, batch_size=batch_size, lr=lr, optimizer="AdamW+OneCycle",
                           test_fraction=test_fraction, train_images=len(x), test_images=len(split.test),
                           seconds=round(time.time() - start, 1))
    record.versions = library_versions()
    return model.cpu().freeze(), record



def _intact(zoo, name: str) -> bool:
    """Whether the zoo holds this victim, undamaged; a damaged one is trained again, and we say so."""
    if not record_path(zoo, name).exists():  # the record is written after the weights: no record, no victim
        return False
    try:
        check = check_weights(zoo, name)
    except AttribkitError as exc:
        storage.notice(f"{exc}; training victim {name!r} again")
        return False
    if check.state in ("ok", "unrecorded"):  # unrecorded: an older zoo, kept as it is
        return True
    storage.notice(f"{str(victim_path(zoo, name))!r} {check.problem}; training victim {name!r} again")
    return False


def train_zoo(zoo, architectures, dataset: Dataset, *, width: float | None = None, epochs: int = 8, seed: int = 0,
              force: bool = False, runtime: Runtime | None = None) -> list[VictimRecord]:
    """Train each architecture into ``zoo`` unless it is already there (a bar per
    victim trained, a note per victim found, in the runtime's progress sink)."""
    rt = runtime_of(runtime)
    with rt.progress.stage("victims"), rt.numerics_in_effect():
        return _train_zoo(zoo, architectures, dataset, width, epochs, seed, force, rt)


def _train_zoo(zoo, architectures, dataset: Dataset, width, epochs, seed, force, rt: Runtime) -> list[VictimRecord]:
    registry = rt.plugins
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise AttribkitError(f"epochs must be an integer ≥ 1, got {epochs!r}")  # before any victim is touched
    planned = [make_record(arch, dataset, width, registry=registry) for arch in architectures]  # bad names or widths: before any training
    records = []
    for arch, record in zip(architectures, planned):
        trained = force or not _intact(zoo, record.name)
        if trained:
            bar = rt.progress.task(f"train {arch}", 1)
            model, record = train_victim(
                record, dataset, epochs=epochs, seed=seed, registry=registry, device=rt.device,
                on_step=lambda step, total, loss: bar.update(completed=step, total=total,
                                                             info=None if loss is None else f"loss {loss:.3f}"))
            save_victim(zoo, record, model)
            bar.done(f"test acc {record.test_accuracy:.2%}")
        else:
            record = read_record(zoo, record.name)
            rt.progress.note(f"{record.name}: already in {zoo} (use --force to retrain)")
        records.append(record)
    return records
