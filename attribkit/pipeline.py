"""The demo pipeline as one library call: train the scenario's victims,
generate its data set, train MTAA and evaluate it, reusing whatever an
earlier call already finished in ``out``.

    from attribkit.pipeline import demo
    report = demo("attribkit-demo", epochs=2)   # no progress output: for notebooks

``attribkit demo`` is this function with a runtime whose progress sink draws
rich progress bars (:class:`attribkit.console.ConsoleProgress`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .runtime import Runtime

# Heavy imports (torch, the trainer) stay inside demo(): the CLI imports this
# module for DEMO, and `attribkit --help` should not pay for them.

# What the demo trains, chosen on the validation split of the quick scenario's data
# (bench/attributor.py; docs/results.md has the measurements): the convnet backbone
# keeps the perturbation that a ResNet stem averages away on 28-px digits.
DEMO = {"victim_epochs": 4, "backbone": "convnet", "width": 0.5, "input_scale": 1, "epochs": 8,
        "schedule": "cosine"}


UNKNOWN_SCENARIO = "quick-unknown"  # built-in: attacks outside quick, which the demo's report scores as unknown


def demo(out: str | Path, scenario: Any = "quick", victim_epochs: int = DEMO["victim_epochs"],
         victim_width: float | None = None, backbone: str = DEMO["backbone"], epochs: int = DEMO["epochs"],
         width: float = DEMO["width"], input_scale: int = DEMO["input_scale"], *,
         runtime: Runtime | None = None) -> dict:
    """Run (or finish) the demo in ``out``: victims into OUT/zoo, the data set
    into OUT/data, MTAA into OUT/run, evaluated on the test split, with the
    attacks of the built-in ``quick-unknown`` scenario (made into OUT/unknown,
    against the scenario's victims it names) scored as unknown.

    ``scenario`` is a built-in name, a TOML path or a loaded Scenario; its
    victims must be victim architectures. Returns the evaluation report
    without its per-cell tables, plus ``seconds``, the whole call's time.
    Every step runs in ``runtime`` (default: CPU, one worker, no output).
    """
    import shutil
    from dataclasses import replace

    from .data import load_dataset
    from .evaluation import evaluate
    from .generation.engine import generate
    from .generation.scenario import Scenario, load_scenario
    from .training.config import TrainConfig
    from .training.run import RUN_FILE
    from .training.trainer import train
    from .runtime import runtime_of
    from .victims.train import train_zoo

    rt = runtime_of(runtime)
    start = time.time()
    sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario, rt.plugins)
    config = TrainConfig(backbone=backbone, epochs=epochs, width=width, input_scale=input_scale,
                         schedule=DEMO["schedule"])  # bad options fail before any work
    rt.plugins.get("backbones", backbone)
    out = Path(out)
    zoo, data, run, outside = out / "zoo", out / "data", out / "run", out / "unknown"
    train_zoo(zoo, [v.name for v in sc.victims], load_dataset(sc.dataset, rt.plugins), width=victim_width,
              epochs=victim_epochs, runtime=rt)
    generate(sc, data, zoo=zoo, runtime=rt)
    # attacks the run never sees, against the same victims: what the report scores as unknown
    unseen = load_scenario(UNKNOWN_SCENARIO, rt.plugins)
    # the scenario's own data set and split, so the unseen attacks' test images are the run's test images
    unseen = replace(unseen, dataset=sc.dataset, seed=sc.seed, test_fraction=sc.test_fraction,
                     victims=tuple(v for v in unseen.victims if v.name in {x.name for x in sc.victims}))
    if unseen.victims:
        generate(unseen, outside, zoo=zoo, runtime=rt)
    if not (run / RUN_FILE).exists():
        shutil.rmtree(run, ignore_errors=True)  # what an older attribkit left when killed while training
        train(data, config, run, runtime=rt)
    report = evaluate(run, data, runtime=rt, unknown=[outside] if unseen.victims else [])
    report.pop("tables")
    report["seconds"] = round(time.time() - start, 1)
    return report
