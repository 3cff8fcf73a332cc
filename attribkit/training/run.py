"""The run folder: everything needed to reproduce a model and to attribute with it.

    RUN/run.json             format, resolved train config, data fingerprint, label spaces,
                             target statistics, input shape, library versions, and the
                             sha256 of every file below ("files") and of itself
    RUN/weights.safetensors  every member's network and loss weights
    RUN/metrics.json|.csv    per-epoch loss and test metrics
    RUN/trust.safetensors    the unknown-attack scorer (run.json "trust" has the temperatures
                             and threshold; see attribkit.trust.fitted): with a validation split

A run is written into a hidden sibling folder and renamed into place when
complete, so RUN either holds a whole run or does not exist: a training
killed at any moment leaves nothing that a re-run trips on.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from dataclasses import replace
from pathlib import Path

import torch

from .. import plugins, storage
from ..errors import AttribkitError, DataError
from ..records import RUN_FORMATS_READ, RunMeta
from ..runtime import Runtime, runtime_of
from ..trust.fitted import TRUST_FILE, Trust
from .config import TrainConfig
from .models import Member, build_members

RUN_FILE = "run.json"
WEIGHTS = "weights.safetensors"
METRICS_JSON = "metrics.json"
METRICS_CSV = "metrics.csv"


def staging_folder(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def save_run(out: Path, meta: RunMeta, members: dict[str, Member], history: list[dict],
             trust: Trust | None = None) -> RunMeta:
    """Write the run folder (staged, then moved into place); returns the meta as written, its trust included."""
    out = Path(out)
    staging = staging_folder(out)
    if staging.exists():
        storage.notice(f"removing {str(staging)!r}, left by a run that was killed while saving")
        shutil.rmtree(staging)
    tensors = {}
    for name, m in members.items():
        tensors.update({f"{name}/net.{k}": v for k, v in m.net.state_dict().items()})
        tensors.update({f"{name}/loss.{k}": v for k, v in m.weighting.state_dict().items()})
    files = {
        WEIGHTS: storage.save_tensors(staging / WEIGHTS, {k: v.detach().clone() for k, v in tensors.items()}),
        METRICS_JSON: storage.write_json(staging / METRICS_JSON, {"epochs": history}),
        METRICS_CSV: storage.write_text(staging / METRICS_CSV, _csv(history)),
    }
    if trust is not None:
        files[TRUST_FILE] = storage.save_tensors(staging / TRUST_FILE, {k: v.contiguous() for k, v in trust.state.items()}
                                                 or {"none": torch.zeros(0)})
        meta = replace(meta, trust=trust.to_json())
    storage.write_json_record(staging / RUN_FILE, {**meta.to_json(),
                                                   storage.FILES: {k: v.to_json() for k, v in files.items()}})
    try:
        os.replace(staging, out)  # out is absent or an empty folder: the train command checked
    except OSError as exc:
        raise AttribkitError(f"cannot move the finished run into {str(out)!r}: {exc.strerror}; it is in "
                             f"{str(staging)!r}") from None
    return meta


def _csv(history: list[dict]) -> str:
    columns = sorted({k for row in history for k in row}, key=lambda k: (k not in ("member", "epoch"), k))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    return text.getvalue()


def read_run_meta(run: str | Path, verify: bool = True) -> RunMeta:
    """run.json, its own hash checked (``verify``); a run written before hashes
    were recorded loads with a notice."""
    if not Path(run).is_dir():
        raise AttribkitError(f"run folder {str(run)!r} does not exist")
    path = Path(run) / RUN_FILE
    found = storage.read_json_record(path, RUN_FORMATS_READ, "an attribkit run folder", AttribkitError, verify)
    try:
        meta = RunMeta.from_json(found.data, str(path))
    except DataError as exc:
        raise AttribkitError(str(exc)) from None
    if verify and storage.recorded_file(meta.file_record, WEIGHTS, str(path)) is None:
        storage.notice(f"run {str(run)!r} has no recorded sha256 for its files (written by an older attribkit) "
                       f"and cannot be verified; `attribkit verify --record {run}` records them")
    elif verify and not found.hashed:  # the files are hashed but run.json itself is not: its edits go unseen
        storage.notice(f"{str(path)!r} has no content hash of its own (an edit would remove it), so changes to "
                       f"it, its trust threshold included, cannot be detected; `attribkit verify {run}` says more")
    return meta


def _installed_heads(run: Path, meta: RunMeta, registry: plugins.Registry) -> None:
    known = registry.tables["heads"]
    for name, head in meta.heads.items():
        if name not in known:
            raise AttribkitError(f"run {str(run)!r} was trained with head {name!r} from plugin {head.plugin!r}, which "
                                 f"is not installed or is disabled (see `attribkit plugins`); install it to use this run")


def load_run(run: str | Path, verify: bool = True, runtime: Runtime | None = None) -> tuple[RunMeta, dict[str, Member]]:
    """Rebuild a trained model from its run folder, ready to predict; with
    ``verify`` its files must match their recorded hashes."""
    run, rt = Path(run), runtime_of(runtime)
    meta = read_run_meta(run, verify)
    config = TrainConfig.from_dict(meta.config, where=str(run / RUN_FILE))
    _installed_heads(run, meta, rt.plugins)
    try:
        # exactly the trained heads, whatever else is installed now (a run without a list: every one that applies)
        members = build_members(config, meta.label_spaces, meta.target_stats, meta.columns, meta.in_chans,
                                meta.image_size, meta.heads or None, meta.legacy_state, rt.plugins)
    except KeyError as exc:
        raise AttribkitError(f"{str(run / RUN_FILE)!r} lacks {exc.args[0]!r}") from None
    except (TypeError, ValueError, AttributeError, IndexError, RuntimeError) as exc:  # a hand-edited run.json
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AttribkitError(f"{str(run / RUN_FILE)!r} does not describe a model attribkit can build ({detail})") from None
    if not (run / WEIGHTS).exists():
        raise AttribkitError(f"run folder {str(run)!r} has no {WEIGHTS}")
    expected = storage.recorded_file(meta.file_record, WEIGHTS, str(run / RUN_FILE)) if verify else None
    state, _ = storage.read_tensors(run / WEIGHTS, expected, error=AttribkitError)
    for name, m in members.items():
        for part, module in (("net", m.net), ("loss", m.weighting)):
            prefix = f"{name}/{part}."
            sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            try:
                module.load_state_dict(sub, strict=True)
            except RuntimeError as exc:
                first = str(exc).strip().splitlines()[0]
                raise AttribkitError(f"weights in {str(run / WEIGHTS)!r} do not match the run's config ({first})") from None
        m.net.eval().to(rt.device)
        m.weighting.to(rt.device)
    return meta, members


def load_trust(run: str | Path, meta: RunMeta | None = None, verify: bool = True) -> Trust | None:
    """The run's calibration and unknown-attack scorer; None for a run trained without a validation
    split or by an attribkit before they existed. ``meta``: the run's, if already read."""
    run = Path(run)
    meta = read_run_meta(run, verify) if meta is None else meta
    if meta.trust is None:
        return None
    if not (run / TRUST_FILE).exists():
        raise AttribkitError(f"run folder {str(run)!r} has no {TRUST_FILE}, which its run.json names")
    expected = storage.recorded_file(meta.file_record, TRUST_FILE, str(run / RUN_FILE)) if verify else None
    state, _ = storage.read_tensors(run / TRUST_FILE, expected, error=AttribkitError)
    state.pop("none", None)
    return Trust.from_json(meta.trust, state, str(run / RUN_FILE))


def input_shape(meta: RunMeta) -> tuple[int, int]:
    return meta.in_chans, meta.image_size


__all__ = ["save_run", "load_run", "load_trust", "read_run_meta", "input_shape"]
