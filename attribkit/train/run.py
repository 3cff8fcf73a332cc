"""The run folder: everything needed to reproduce a model and to attribute with it.

    RUN/run.json             format, resolved train config, data fingerprint, label spaces,
                             target statistics, input shape, library versions
    RUN/weights.safetensors  every member's network and loss weights
    RUN/metrics.json|.csv    per-epoch loss and test metrics
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file

from .. import plugins
from ..errors import AttribkitError
from ..generate.store import read_versioned_json, save_tensors_atomic, write_json_atomic
from .config import TrainConfig
from .models import Member, build_members

RUN_FILE = "run.json"
WEIGHTS = "weights.safetensors"
FORMAT = "attribkit-run/1"


def save_run(out: Path, meta: dict, members: dict[str, Member]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, m in members.items():
        tensors.update({f"{name}/net.{k}": v for k, v in m.net.state_dict().items()})
        tensors.update({f"{name}/loss.{k}": v for k, v in m.weighting.state_dict().items()})
    save_tensors_atomic(out / WEIGHTS, {k: v.detach().clone() for k, v in tensors.items()})
    write_json_atomic(out / RUN_FILE, {"format": FORMAT, **meta})


def read_run_meta(run: str | Path) -> dict:
    if not Path(run).is_dir():
        raise AttribkitError(f"run folder {str(run)!r} does not exist")
    return read_versioned_json(run, RUN_FILE, FORMAT, "an attribkit run folder", AttribkitError)


def _installed_heads(run: Path, trained: dict[str, str]) -> list[str]:
    known = plugins.registry().tables["heads"]
    for name, plugin in trained.items():
        if name not in known:
            raise AttribkitError(f"run {str(run)!r} was trained with head {name!r} from plugin {plugin!r}, which is "
                                 f"not installed or is disabled (see `attribkit plugins`); install it to use this run")
    return list(trained)


def load_run(run: str | Path) -> tuple[dict, dict[str, Member]]:
    """Rebuild a trained model from its run folder, ready to predict."""
    run = Path(run)
    meta = read_run_meta(run)
    try:
        config = TrainConfig.from_dict(meta["config"])
        if meta.get("heads"):  # exactly the trained heads, whatever else is installed now
            config = replace(config, heads=tuple(_installed_heads(run, meta["heads"])))
        members = build_members(config, meta["label_spaces"], meta["target_stats"], meta["columns"],
                                meta["input"]["in_chans"], meta["input"]["image_size"], meta.get("combinations"))
    except KeyError as exc:
        raise AttribkitError(f"{str(run / RUN_FILE)!r} lacks {exc.args[0]!r}") from None
    if not (run / WEIGHTS).exists():
        raise AttribkitError(f"run folder {str(run)!r} has no {WEIGHTS}")
    try:
        state = load_file(str(run / WEIGHTS))
    except (SafetensorError, OSError) as exc:
        raise AttribkitError(f"cannot read {str(run / WEIGHTS)!r}: {exc}") from None
    for name, m in members.items():
        for part, module in (("net", m.net), ("loss", m.weighting)):
            prefix = f"{name}/{part}."
            sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            try:
                module.load_state_dict(sub, strict=True)
            except RuntimeError as exc:
                first = str(exc).strip().splitlines()[0]
                raise AttribkitError(f"weights in {str(run / WEIGHTS)!r} do not match the run's config ({first})") from None
        m.net.eval()
    return meta, members


def input_shape(meta: dict) -> tuple[int, int]:
    return meta["input"]["in_chans"], meta["input"]["image_size"]


__all__ = ["save_run", "load_run", "read_run_meta", "input_shape"]
