"""The generation loop: units of work (a (victim, attack, split) job, or one
grid point of it: :mod:`attribkit.generation.units`), each one shard.

A unit attacks clean images that its victim classifies correctly, batch by
batch, in one seeded order per split shared by every unit: if each cell drew
its own digits, the digit would give away the cell's labels and an
attribution model would learn digits instead of perturbations. It goes on
until every grid point of the attack has its quota of successful examples or
has attacked ``max_attempts_factor × quota`` images, or (with the scenario's
``pilot``) has attacked ``pilot`` images without a single success: a κ the
victim never reaches costs its whole attempt budget otherwise. Stopping a
point leaves out the batches it would have been attacked on later. For an
attack that draws no randomness per grid point (FGSM, C&W) every other
point keeps the very same examples, since the attacks compute each example
independently of the batch it is in (tested); PGD draws its random starts
per active grid point, so the points after a stopped one start elsewhere,
as they already do once a point has filled its quota. Each unit derives its
own seed (for random starts) from the scenario's, so a resumed run, or one
split across workers, produces the same shards as one uninterrupted process.

Several workers (torchrun's RANK / WORLD_SIZE, or ``--shard i/n``) share one
``--out``: each does its share of the units, writes each finished shard and
the shard's own record, and merges the record into the manifest under a file
lock. Whichever worker finds every unit finished marks the data set complete.

Randomness is drawn on the CPU and moved to the attack's device (clean order,
random targets, PGD's random starts), so it does not depend on the device.
torchattacks' and foolbox's attacks draw inside their own code, on the
device: bit-identity with torchattacks is a promise on the CPU only.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from .. import storage
from ..attacks import logit_margin
from ..data import load_dataset, split_dataset
from ..errors import AttribkitError, DataError
from ..records import AttackInfo, HyperparameterInfo, LabelSpaces, Manifest, Shard
from ..runtime import Runtime, runtime_of
from ..specs import AttackSpec
from ..versions import library_versions
from .scenario import CLEAN as CLEAN_CLASS, AttackPlan, Scenario
from ..storage.dataset import (CLEAN, FORMAT, MANIFEST, merge_shard, read_manifest, read_shard_record, save_file,
                               shard_file, write_manifest, write_shard_record)
from .units import Unit, assign, derive_seed, estimated_cost, plan_units
from .victims import resolve_victim


def _check_out(out: Path, scenario: Scenario, verify: bool, accept_versions: bool) -> Manifest | None:
    """The existing manifest to resume from, or None for a fresh data set."""
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {str(out)!r} is a file; choose a folder")
    if (out / MANIFEST).exists():
        manifest = read_manifest(out, verify)
        if manifest.fingerprint != scenario.fingerprint():
            raise DataError(f"--out {str(out)!r} holds data of scenario {manifest.scenario.get('name')!r} with other "
                            f"settings; choose another --out (nothing was changed)")
        changed = _version_changes(manifest.versions, library_versions())
        if changed and not accept_versions:
            raise DataError(f"--out {str(out)!r} was started with other library versions ({changed}), so shards made "
                            f"now could differ in bytes from the finished ones; use another --out, or "
                            f"--accept-versions to go on and record the versions of each new shard (nothing was changed)")
        return manifest
    if out.exists() and any(p.name != storage.LOCK for p in out.iterdir()):
        raise DataError(f"--out {str(out)!r} is not empty and holds no attribkit data set; choose another --out")
    return None


def _version_changes(started: dict, now: dict) -> str:
    return ", ".join(f"{k} {started.get(k, 'absent')} → {now.get(k, 'absent')}"
                     for k in sorted(set(started) | set(now)) if started.get(k) != now.get(k))


def _reusable(out: Path, manifest: Manifest, name: str, verify: bool) -> bool:
    """Whether a finished file can be kept on resume; a damaged one is re-made, and we say so."""
    if not verify:
        return (out / name).is_file()
    check = storage.check_file(out, name, storage.recorded_file(manifest.file_record, name, str(out / MANIFEST)))
    if check.state in ("ok", "unrecorded"):  # unrecorded: an older data set, kept unverified (read_manifest said so)
        return True
    storage.notice(f"{str(out / name)!r} {check.problem}; re-making it")
    return False


def generate(scenario: Scenario, out: str | Path, *, zoo: str | Path | None = None, verify: bool = True,
             accept_versions: bool = False, runtime: Runtime | None = None) -> Manifest:
    """Generate (or finish generating) the data set; returns the manifest.

    Resuming keeps every finished shard whose bytes match the manifest's
    record and re-makes the others. ``verify=False`` skips the hash checks
    (of the zoo's victims too); ``accept_versions`` resumes a data set begun
    with other library versions, recording the versions of each new shard.
    With a runtime of several workers, this worker makes its share of the
    units (see :mod:`attribkit.generation.units`); the manifest it returns is
    complete once the last worker is done. Progress goes to the runtime's
    sink: a bar for this worker's cells, one per unit.
    """
    rt = runtime_of(runtime)
    with rt.progress.stage("generate"), rt.numerics_in_effect():
        return _generate(scenario, out, zoo, verify, accept_versions, rt)


def _generate(scenario: Scenario, out: str | Path, zoo: str | Path | None, verify: bool, accept_versions: bool,
              rt: Runtime) -> Manifest:
    out, zoo = Path(out), Path(zoo or scenario.zoo)
    _check_out(out, scenario, verify, accept_versions)  # fail fast, before any loading; again under the lock
    dataset = load_dataset(scenario.dataset, rt.plugins)
    split = split_dataset(dataset.labels, scenario.test_fraction, scenario.seed)
    for name, quota in (("train", scenario.train_per_cell), ("test", scenario.test_per_cell)):
        if quota > len(getattr(split, name)):  # each clean image serves a cell once: such a quota cannot be met
            raise DataError(f"cells.{name} = {quota} examples per cell, but the {name} split of {dataset.name} has "
                            f"only {len(getattr(split, name))} images (nothing was changed)")
    if scenario.clean is not None:
        for name in ("train", "test"):
            if getattr(scenario.clean, name) > len(getattr(split, name)):
                raise DataError(f"clean.{name} = {getattr(scenario.clean, name)} clean examples, but the {name} split "
                                f"of {dataset.name} has only {len(getattr(split, name))} images (nothing was changed)")
    victims = {ref.name: resolve_victim(ref, zoo, dataset, verify, rt.plugins) for ref in scenario.victims}
    attacks = {plan.name: rt.plugins.get("attacks", plan.name) for plan in scenario.attacks}

    out.mkdir(parents=True, exist_ok=True)
    with storage.folder_lock(out):
        manifest = _open(out, scenario, dataset, split, victims, attacks, verify, accept_versions)
    models = {name: model.to(rt.device) for name, (model, _, _) in victims.items()}

    units = plan_units(scenario)
    pixels = {name: (record.resize_to or record.image_size) ** 2 for name, (_, record, _) in victims.items()}
    mine = assign(units, {u: estimated_cost(u, scenario, pixels) for u in units}, rt.world_size)[rt.rank]
    plans = {p.name: p for p in scenario.attacks}
    quota = {"train": scenario.train_per_cell, "test": scenario.test_per_cell}
    unit_total = {u: getattr(scenario.clean, u.split) if u.is_clean else
                  quota[u.split] * len(u.plan(plans[u.attack]).points()) for u in mine}
    pending = [u for u in mine if u.shard not in manifest.shards
               or not _reusable(out, manifest, shard_file(u.shard), verify)]
    overall = rt.progress.task("all cells" if rt.world_size == 1 else f"worker {rt.rank}/{rt.world_size}: its cells",
                               sum(unit_total.values()), sum(unit_total[u] for u in mine if u not in pending))
    made = {**rt.numerics, "worker": f"{rt.rank}/{rt.world_size}"}
    made.pop("precision")  # training's; attacks always compute in float32
    versions = library_versions()
    pools = {}
    for unit in pending:
        bar = rt.progress.task(unit.label, unit_total[unit])
        advance = lambda n: (bar.update(advance=n), overall.update(advance=n))
        start = time.time()
        if unit.is_clean:
            tensors, cells = clean_job(models, dataset, split_order(split, unit.split, scenario.seed),
                                       getattr(scenario.clean, unit.split), scenario.clean.misclassified)
            advance(len(tensors["images"]))
        else:
            model = models[unit.victim]
            key = (unit.victim, unit.split)
            if key not in pools:
                pools[key] = _correctly_classified(model, dataset, split_order(split, unit.split, scenario.seed))
            tensors, cells = run_job(
                model, attacks[unit.attack], unit.plan(plans[unit.attack]), dataset, pools[key], quota[unit.split],
                scenario, seed=unit.seed(scenario.seed), advance=advance)
        tensors["attack"] = torch.full((len(tensors["images"]),), manifest.label_spaces.attacks.index(unit.attack))
        tensors["victim"] = torch.full((len(tensors["images"]),), manifest.label_spaces.victims.index(unit.victim))
        file = storage.save_tensors(out / shard_file(unit.shard), tensors,
                                    {"format": FORMAT, "victim": unit.victim, "attack": unit.attack,
                                     "split": unit.split})
        shard = Shard(unit.victim, unit.attack, unit.split, len(tensors["images"]), cells,
                      round(time.time() - start, 2),
                      # accepted with --accept-versions: say what made this shard
                      versions if versions != manifest.versions else None, made)
        write_shard_record(out, unit.shard, shard, file)
        with storage.folder_lock(out):
            manifest = read_manifest(out, verify=False)  # this worker's own write; others' are read at the end
            merge_shard(manifest, unit.shard, shard, file)
            write_manifest(out, manifest)
        storage.failpoint_event("after-job")
        # cells that ran out of clean images or attempts will not fill: close the bars
        short = unit_total[unit] - len(tensors["images"])
        overall.update(advance=short)
        bar.done(f"{short} short" if short else None, keep=False)
    overall.done()
    with storage.folder_lock(out):
        return merge(out, scenario, verify=False)


def merge(out: str | Path, scenario: Scenario | None = None, verify: bool = True) -> Manifest:
    """Merge every finished shard's record under ``out/shards`` into the manifest, and mark the
    data set complete when every unit of its scenario is there. Workers do this as they finish
    (under the folder's lock); ``attribkit generate --merge`` does it by hand, after workers that
    could not (killed ones, or ones on a file system without locks)."""
    out = Path(out)
    manifest = read_manifest(out, verify)
    if scenario is None:
        from .scenario import parse_scenario

        scenario = parse_scenario(manifest.scenario)
    units = plan_units(scenario)
    _merge_records(out, manifest, units)
    complete = all(u.shard in manifest.shards for u in units)
    manifest.status = "complete" if complete else "partial"
    manifest.totals = summarise(manifest)["totals"] if complete else None
    write_manifest(out, manifest)
    return manifest


def _merge_records(out: Path, manifest: Manifest, units: list[Unit]) -> None:
    """Merge into ``manifest`` the record of each of these units whose shard is on disk."""
    for unit in units:
        found = read_shard_record(out, unit.shard)
        if found is not None and (out / shard_file(unit.shard)).is_file():
            merge_shard(manifest, unit.shard, *found)


def _open(out: Path, scenario: Scenario, dataset, split, victims: dict, attacks: dict[str, AttackSpec], verify: bool,
          accept_versions: bool) -> Manifest:
    """The data set's manifest, made (with the clean file) by the first worker; later ones check it
    and merge the shards finished so far. Called under the folder's lock."""
    previous = _check_out(out, scenario, verify, accept_versions)
    manifest = previous or _new_manifest(scenario, dataset, split, attacks)
    for name, (_, record, sha) in victims.items():
        known = manifest.victims.get(name)
        if known and known.get("weights_sha256") != sha:
            raise DataError(f"victim {name!r} changed since {str(out)!r} was started (weights differ); "
                            f"use another --out")
        manifest.victims[name] = {**record.__dict__, "weights_sha256": sha}
    if previous is None or not _reusable(out, manifest, CLEAN, verify):
        save_file(out, manifest, CLEAN, {"images": dataset.images, "labels": dataset.labels,
                                         "train_index": split.train, "test_index": split.test})
    # shards whose worker was stopped before it could merge them
    _merge_records(out, manifest, [u for u in plan_units(scenario) if u.shard not in manifest.shards])
    manifest.status = "partial"  # until a worker finds every unit finished
    write_manifest(out, manifest)
    return manifest


def _new_manifest(scenario: Scenario, dataset, split, attacks: dict[str, AttackSpec]) -> Manifest:
    hps: dict[str, HyperparameterInfo] = {}
    for spec in attacks.values():
        for hp in spec.hyperparameters:
            known = hps.get(hp.name) or HyperparameterInfo(hp.name, hp.unit, hp.scale, hp.symbol, ())
            hps[hp.name] = replace(known, attacks=known.attacks + (spec.name,))
    info = {s.name: AttackInfo(s.norm, s.targeted, tuple(h.name for h in s.hyperparameters)) for s in attacks.values()}
    clean = () if scenario.clean is None else (CLEAN_CLASS,)  # last, so the other classes keep their indices
    if clean:
        info[CLEAN_CLASS] = AttackInfo("none", False, ())
    spaces = LabelSpaces(tuple(a.name for a in scenario.attacks) + clean, tuple(v.name for v in scenario.victims) + clean,
                         hps, info, clean=bool(clean))
    return Manifest(
        scenario.to_dict(), scenario.fingerprint(), spaces, library_versions(),
        dataset={"name": dataset.name, "images": len(dataset.images), "shape": list(dataset.shape),
                 "num_classes": dataset.num_classes},
        split={"seed": scenario.seed, "test_fraction": scenario.test_fraction,
               "train": len(split.train), "test": len(split.test)})


def summarise(manifest: Manifest) -> dict:
    """The counts of a data set's finished shards: per split (``totals``, as
    the manifest records them) and per attack × victim (``cells``, with the
    success rate). What `attribkit generate` prints."""
    totals, cells = {}, {}
    for shard in manifest.shards.values():
        t = totals.setdefault(shard.split, {"examples": 0, "attempted": 0, "succeeded": 0})
        c = cells.setdefault((shard.attack, shard.victim), {
            "attack": shard.attack, "victim": shard.victim, "train": 0, "test": 0, "attempted": 0, "succeeded": 0})
        t["examples"] += shard.examples
        c[shard.split] += shard.examples
        for counts in (t, c):
            counts["attempted"] += shard.attempted
            counts["succeeded"] += shard.succeeded
    for c in cells.values():
        c["success_rate"] = round(c["succeeded"] / c["attempted"], 4) if c["attempted"] else None
    return {"scenario": manifest.scenario["name"], "status": manifest.status, "totals": totals,
            "cells": list(cells.values())}


def split_order(split, name: str, seed: int) -> torch.Tensor:
    """The split's clean images in the seeded order every unit of the split draws from."""
    index = getattr(split, name)
    return index[torch.randperm(len(index), generator=torch.Generator().manual_seed(derive_seed(seed, name)))]


@torch.no_grad()
def clean_job(models: dict, dataset, order: torch.Tensor, wanted: int, share: float,
              batch_size: int = 500) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """The split's clean examples (paper §4.4), in the split's seeded order: ``round(share × wanted)``
    images that some victim misclassifies (as many as there are: a detector flags those most) and
    the rest from the images every victim classifies correctly, the same images the attacks start
    from, so an image's look says nothing about its class. Their columns are an attack shard's:
    no perturbation (l2 = linf = 0), no target, no success, no margin (NaN), and ``pred`` the
    first misclassifying victim's answer (the true label where none errs)."""
    labels = dataset.labels[order]
    pred = labels.clone()
    wrong = torch.zeros(len(order), dtype=torch.bool)
    for model in models.values():  # scenario order
        device = _device_of(model)
        said = torch.cat([model(dataset.images[order[i:i + batch_size]].to(device)).argmax(1).cpu()
                          for i in range(0, len(order), batch_size)]) if len(order) else labels
        first = (said != labels) & ~wrong
        pred[first] = said[first]
        wrong |= first
    want_wrong = round(share * wanted)
    misclassified = torch.nonzero(wrong).flatten()[:want_wrong]
    correct = torch.nonzero(~wrong).flatten()[:wanted - len(misclassified)]
    chosen = torch.sort(torch.cat([misclassified, correct])).values
    idx, n = order[chosen], len(chosen)
    rows = {"images": dataset.images[idx].float(), "clean_index": idx.long(), "label": labels[chosen].long(),
            "target": torch.full((n,), -1, dtype=torch.long), "pred": pred[chosen].long(),
            "success": torch.zeros(n, dtype=torch.bool), "margin": torch.full((n,), float("nan")),
            "l2": torch.zeros(n), "linf": torch.zeros(n)}
    cells = [{"kind": "misclassified by a victim", "wanted": want_wrong, "kept": len(misclassified),
              "available": int(wrong.sum())},
             {"kind": "classified correctly by every victim", "wanted": wanted - len(misclassified),
              "kept": len(correct), "available": int((~wrong).sum())}]
    return rows, cells


@torch.no_grad()
def _correctly_classified(model, dataset, index: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Attacking an image the victim already gets wrong proves nothing."""
    device = _device_of(model)
    keep = []
    for i in range(0, len(index), batch_size):
        idx = index[i:i + batch_size]
        right = model(dataset.images[idx].to(device)).argmax(1).cpu() == dataset.labels[idx]
        keep.append(idx[right])
    return torch.cat(keep)


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.buffers(), next(model.parameters(), torch.empty(0))).device


def run_job(model, spec: AttackSpec, plan: AttackPlan, dataset, pool: torch.Tensor, quota: int, scenario: Scenario,
            *, seed: int, advance: Callable[[int], object] = lambda n: None) -> tuple[dict[str, torch.Tensor], list[dict]]:
    points = plan.points()
    natural = [{k: spec.hyperparameter(k).to_natural(v) for k, v in p.items()} for p in points]
    kept: list[list[dict[str, torch.Tensor]]] = [[] for _ in points]
    need = [quota] * len(points)
    attempted = [0] * len(points)
    succeeded = [0] * len(points)
    max_attempts = int(scenario.max_attempts_factor * quota)
    device = _device_of(model)
    hopeless = lambda i: scenario.pilot > 0 and attempted[i] >= scenario.pilot and succeeded[i] == 0
    for b, start in enumerate(range(0, len(pool), scenario.batch_size)):
        active = [i for i in range(len(points)) if need[i] > 0 and attempted[i] < max_attempts and not hopeless(i)]
        if not active:
            break
        idx = pool[start:start + scenario.batch_size]
        x, y = dataset.images[idx].to(device), dataset.labels[idx].to(device)
        goal = _targets(dataset.labels[idx], dataset.num_classes, derive_seed(seed, b, "target")).to(device) \
            if spec.targeted else y
        torch.manual_seed(derive_seed(seed, b))  # random starts (PGD) are reproducible per batch
        advs = spec.run(model, x, goal, [natural[i] for i in active], plan.settings)
        if len(advs) != len(active):
            raise AttribkitError(f"attack {spec.name!r} returned {len(advs)} batches for {len(active)} grid points")
        for i, adv in zip(active, advs):
            rows = {k: v.cpu() for k, v in _measure(model, spec, adv, x, y, goal, idx.to(device), points[i],
                                                     natural[i]).items()}
            attempted[i] += len(idx)
            succeeded[i] += int(rows["success"].sum())
            take = torch.ones_like(rows["success"]) if scenario.keep_failed else rows["success"]
            chosen = torch.nonzero(take).flatten()[:need[i]]
            if len(chosen):
                kept[i].append({k: v[chosen] for k, v in rows.items()})
                need[i] -= len(chosen)
                advance(len(chosen))
    cells = [{"values": points[i], "attempted": attempted[i], "succeeded": succeeded[i], "kept": quota - need[i],
              "success_rate": round(succeeded[i] / attempted[i], 4) if attempted[i] else None,
              **({"stopped_by_pilot": True} if hopeless(i) and need[i] > 0 and attempted[i] < max_attempts else {})}
             for i in range(len(points))]
    rows = [r for per_point in kept for r in per_point]
    if not rows:  # every example failed: an empty shard with the usual columns
        one, image = dataset.labels[:1].to(device), dataset.images[:1].to(device)
        template = _measure(model, spec, image, image, one, one, torch.zeros(1, dtype=torch.long, device=device),
                            points[0], natural[0])
        return {k: v[:0].cpu() for k, v in template.items()}, cells
    return {k: torch.cat([r[k] for r in rows]) for k in rows[0]}, cells


def _targets(labels: torch.Tensor, num_classes: int, seed: int) -> torch.Tensor:
    """A seeded random target class per example, never its true class."""
    shift = torch.randint(1, num_classes, labels.shape, generator=torch.Generator().manual_seed(seed))
    return (labels + shift) % num_classes


@torch.no_grad()
def _measure(model, spec: AttackSpec, adv, x, y, goal, idx, display: dict, natural: dict) -> dict[str, torch.Tensor]:
    """One row per example. ``margin`` is how far past the decision boundary
    the attack got towards its goal: best other class minus the true class
    (untargeted), or the target class minus the best other (targeted)."""
    if not torch.isfinite(adv).all() or adv.min() < 0 or adv.max() > 1 or adv.shape != x.shape:
        raise AttribkitError(f"attack {spec.name!r} returned images outside [0, 1] or of the wrong shape")
    logits = model(adv)
    margin = -logit_margin(logits, goal) if spec.targeted else logit_margin(logits, y)
    values = {k: torch.full((len(adv),), v, device=adv.device) for k, v in natural.items()}
    delta = (adv - x).flatten(1)
    rows = {
        "images": adv.float(), "clean_index": idx.long(), "label": y.long(),
        "target": goal.long() if spec.targeted else torch.full_like(y, -1).long(),
        "pred": logits.argmax(1),
        "success": spec.success(margin, values).bool(), "margin": margin.float(),
        "l2": delta.norm(dim=1), "linf": delta.abs().amax(dim=1),
    }
    for k, v in display.items():
        rows[f"hp_{k}"] = torch.full((len(adv),), float(v), device=adv.device)
    return rows
