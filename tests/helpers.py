"""Small scenarios for tests: synthetic data, a tiny CNN, a few clients."""

from __future__ import annotations

import copy

from fed_opc.config import parse_scenario

TINY = {
    "name": "tiny",
    "seed": 0,
    "data": {
        "dataset": "synthetic",
        "num_clients": 4,
        "partition": {"kind": "iid"},
        "synthetic": {"num_train": 320, "num_test": 80, "num_classes": 4, "image_size": 8, "noise": 0.2},
    },
    "model": {"arch": "small_cnn", "width": 8},
    "federation": {
        "rounds": 3,
        "clients_per_round": 2,
        "batch_size": 16,
        "lr": 0.05,
        "local_epochs": 2,
        "backend": "inprocess",
    },
}


def tiny(**overrides) -> dict:
    """The tiny scenario as a dict, with dotted-key overrides: ``tiny(**{"federation.rounds": 2})``."""
    raw = copy.deepcopy(TINY)
    for key, value in overrides.items():
        node = raw
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return raw


def tiny_scenario(**overrides):
    return parse_scenario(tiny(**overrides))
