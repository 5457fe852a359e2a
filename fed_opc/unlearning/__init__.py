"""Unlearning methods: a registry of name -> (frozen ``Config``, function).

Centralized methods (``CENTRALIZED``) each live in one module with a ``Config`` and
``unlearn(model, data, cfg, *, generator, device) -> UnlearnResult``. Federated methods are served by the
``strategies.federated`` package (its registry maps each name here to its serve function); only their hyperparameter
``Config`` classes live here (``FEDERATED``), so a scenario is validated without importing the server side.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its name, hyperparameter class, setting and (centralized) function."""

    name: str
    config: type
    setting: str  # "centralized" | "federated"
    fn: Callable[..., Any] | None = None


def _federated() -> dict[str, MethodSpec]:
    from fed_opc.unlearning.federated import CONFIGS

    return {name: MethodSpec(name, cfg, "federated") for name, cfg in CONFIGS.items()}


FEDERATED: dict[str, MethodSpec] = _federated()


def _centralized() -> dict[str, MethodSpec]:
    # imported here, after MethodSpec exists, so that a method module may import this package's names
    from fed_opc.unlearning import (
        bad_teacher,
        finetune,
        ga,
        l1_sparse,
        neggrad_plus,
        opc,
        retrain,
        rl,
        salun,
        scrub,
    )

    modules = {
        "retrain": retrain,
        "finetune": finetune,
        "ga": ga,
        "rl": rl,
        "neggrad_plus": neggrad_plus,
        "l1_sparse": l1_sparse,
        "salun": salun,
        "scrub": scrub,
        "bad_teacher": bad_teacher,
        "opc": opc,
    }
    return {name: MethodSpec(name, mod.Config, "centralized", mod.unlearn) for name, mod in modules.items()}


CENTRALIZED: dict[str, MethodSpec] = _centralized()


def all_methods() -> dict[str, MethodSpec]:
    """Every registered method by name, centralized and federated."""
    return CENTRALIZED | FEDERATED


def get_method(name: str) -> MethodSpec:
    """The registered method ``name``; an unknown name raises ``KeyError`` listing the valid ones."""
    methods = all_methods()
    if name not in methods:
        raise KeyError(f"unknown method {name!r}; valid: {', '.join(sorted(methods)) or '(none registered)'}")
    return methods[name]
