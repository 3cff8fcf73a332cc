"""attribkit: adversarial attack attribution (the MTAA paper's reference implementation).

Everything a notebook or a plugin needs is importable from here::

    import attribkit

    attribkit.demo("attribkit-demo")                      # the whole pipeline
    meta = attribkit.train("data/quick", attribkit.TrainConfig(epochs=8), "runs/mtaa")
    answers = attribkit.attribute("runs/mtaa", ["suspect.png"])

    @attribkit.hookimpl                                   # a plugin
    def register_heads(register):
        register(attribkit.HeadSpec(...))

Names are imported on first use, so ``import attribkit`` stays cheap and a
plugin importing ``attribkit`` never drags in the training stack.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    # writing plugins
    "hookimpl": "attribkit.hookspecs",
    "hookspec": "attribkit.hookspecs",
    "AttackSpec": "attribkit.specs",
    "VictimSpec": "attribkit.specs",
    "BackboneSpec": "attribkit.specs",
    "HeadSpec": "attribkit.specs",
    "DatasetSpec": "attribkit.specs",
    "Dataset": "attribkit.specs",
    "Hyperparameter": "attribkit.specs",
    "Head": "attribkit.model.heads",
    "ClassificationHead": "attribkit.model.heads",
    "RegressionHead": "attribkit.model.heads",
    "HeadContext": "attribkit.model.heads",
    "Score": "attribkit.model.heads",
    # records
    "LabelSpaces": "attribkit.records",
    "Labels": "attribkit.records",
    "RunMeta": "attribkit.records",
    "Manifest": "attribkit.records",
    "Shard": "attribkit.records",
    "TrainConfig": "attribkit.training.config",
    "Runtime": "attribkit.runtime",
    "Registry": "attribkit.plugins",
    "AttribkitError": "attribkit.errors",
    # the pipeline, as the CLI calls it
    "load_dataset": "attribkit.data",
    "train_victims": "attribkit.victims.train",
    "load_scenario": "attribkit.generation.scenario",
    "generate": "attribkit.generation.engine",
    "load_data": "attribkit.training.data",
    "train": "attribkit.training.trainer",
    "load_run": "attribkit.training.run",
    "load_trust": "attribkit.training.run",
    "Trust": "attribkit.trust.fitted",
    "attribute": "attribkit.attribution",
    "iter_attributions": "attribkit.attribution",
    "evaluate": "attribkit.evaluation",
    "demo": "attribkit.pipeline",
    "verify": "attribkit.verification",
    "registry": "attribkit.plugins",
}
_RENAMED = {"load_data": "load_attribution_data", "train_victims": "train_zoo"}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'attribkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), _RENAMED.get(name, name))
    globals()[name] = value  # once: later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
