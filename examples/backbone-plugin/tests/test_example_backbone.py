from attribkit import plugins
from attribkit.data import load_dataset
from attribkit.errors import AttribkitError
from attribkit.generation.engine import generate
from attribkit.generation.scenario import parse_scenario
from attribkit.training.config import TrainConfig
from attribkit.training.trainer import train
from attribkit.victims import save_victim
from attribkit.victims.train import make_record, train_victim

import pytest


def test_mtaa_trains_on_the_regnet_backbone(tmp_path):
    plugins.reset()
    mnist = load_dataset("mnist5k")
    model, record = train_victim(make_record("resnet18", mnist, 1 / 16, name="tiny"), mnist, epochs=1, seed=0)
    save_victim(tmp_path / "zoo", record, model)
    generate(parse_scenario({"name": "b", "dataset": "mnist5k", "zoo": str(tmp_path / "zoo"), "victims": ["tiny"],
                             "cells": {"train": 8, "test": 2}, "attacks": [{"name": "fgsm", "grid": {"eps": [40, 160]}}]}),
             tmp_path / "data")
    meta = train(tmp_path / "data", TrainConfig(backbone="regnetx_002", width=1.0, epochs=1, batch_size=8,
                                                input_scale=1), tmp_path / "run")
    assert meta.config["backbone"] == "regnetx_002" and meta.parameters["mtaa"] > 2_000_000
    with pytest.raises(AttribkitError, match="no width multiplier"):
        train(tmp_path / "data", TrainConfig(backbone="regnetx_002", width=0.5, epochs=1), tmp_path / "run2")
