"""foolbox attacks inside `attribkit generate`: labels, success and failures as the core records them."""

import torch

from attribkit.generate.engine import generate
from attribkit.generate.scenario import parse_scenario
from attribkit.generate.store import load_split
from attribkit.victims import save_victim
from attribkit.victims.train import make_record, train_victim


def test_generate_with_foolbox_attacks_records_failures(mnist, tmp_path):
    model, record = train_victim(make_record("resnet18", mnist, 1 / 16, name="tiny"), mnist, epochs=2, seed=0)
    save_victim(tmp_path / "zoo", record, model)
    scenario = parse_scenario({
        "name": "fb", "dataset": "mnist5k", "seed": 0, "zoo": str(tmp_path / "zoo"), "victims": ["tiny"],
        "batch_size": 6, "cells": {"train": 6, "test": 1}, "max_attempts_factor": 1,
        "attacks": [
            {"name": "fb_linf_pgd", "grid": {"eps": [40]}, "settings": {"steps": 10}},
            {"name": "fb_l2_cw", "grid": {"kappa": [1, 500]}},
            {"name": "fb_boundary", "grid": {"steps": [20]}},
        ]})
    manifest = generate(scenario, tmp_path / "data")
    cells = {(s["attack"], cell_value(c)): c for s in manifest["shards"].values() if s["split"] == "train"
             for c in s["cells"]}
    assert cells[("fb_l2_cw", 500.0)]["succeeded"] == 0 and cells[("fb_l2_cw", 500.0)]["kept"] == 0
    assert cells[("fb_l2_cw", 1.0)]["succeeded"] > 0
    data = load_split(tmp_path / "data", "train")
    assert data["success"].all()
    cw = data["attack"] == 1
    assert (data["margin"][cw] >= 1.0).all() and (data["hp_kappa"][cw] == 1.0).all()
    assert torch.isnan(data["hp_eps"][cw]).all() and not torch.isnan(data["hp_steps"][data["attack"] == 2]).any()
    assert manifest["label_spaces"]["attack_info"]["fb_boundary"]["norm"] == "L2"


def cell_value(cell):
    return float(next(iter(cell["values"].values())))
