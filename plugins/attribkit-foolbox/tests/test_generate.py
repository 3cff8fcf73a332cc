"""foolbox attacks inside `attribkit generate`: labels, success and failures as the core records them."""

import torch

from attribkit.generation.engine import generate
from attribkit.generation.scenario import parse_scenario
from attribkit.storage.dataset import load_split
from attribkit.victims import save_victim


def test_generate_with_foolbox_attacks_records_failures(mnist, trained, tmp_path):
    save_victim(tmp_path / "zoo", trained[1], trained[0])
    scenario = parse_scenario({
        "name": "fb", "dataset": "mnist5k", "seed": 0, "zoo": str(tmp_path / "zoo"), "victims": ["tiny"],
        "batch_size": 6, "cells": {"train": 6, "test": 1}, "max_attempts_factor": 1, "keep_failed": True,
        "attacks": [
            {"name": "fb_linf_pgd", "grid": {"eps": [40]}, "settings": {"steps": 10}},
            {"name": "fb_l2_cw", "grid": {"kappa": [1, 500]}, "settings": {"binary_search_steps": 2, "steps": 25}},
            {"name": "fb_boundary", "grid": {"steps": [20]}},
        ]})
    manifest = generate(scenario, tmp_path / "data")
    cells = {(s.attack, cell_value(c)): c for s in manifest.shards.values() if s.split == "train"
             for c in s.cells}
    data = load_split(tmp_path / "data", "train")
    cw = data["attack"] == 1
    for kappa in (1.0, 500.0):  # failures kept, so each cell holds its six attempts
        rows = cw & (data["hp_kappa"] == kappa)
        assert rows.sum() == cells[("fb_l2_cw", kappa)]["attempted"] == 6
        assert cells[("fb_l2_cw", kappa)]["succeeded"] == data["success"][rows].sum()
        assert torch.equal(data["success"][rows], data["margin"][rows] >= kappa)
    # κ = 500 is out of reach: foolbox's black images come back as the clean ones, recorded as failed
    impossible = cw & (data["hp_kappa"] == 500.0)
    clean = mnist.images[data["clean_index"][impossible]]
    assert torch.equal(data["images"][impossible], clean) and not data["success"][impossible].any()
    assert torch.isnan(data["hp_eps"][cw]).all() and not torch.isnan(data["hp_steps"][data["attack"] == 2]).any()
    assert manifest.label_spaces.attack_info["fb_boundary"].norm == "L2"


def cell_value(cell):
    return float(next(iter(cell["values"].values())))
