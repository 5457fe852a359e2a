"""The registry of federated methods: name -> (its ``Config`` class, its serve function).

A method's name and its config class are fed_opc's (``fed_opc.unlearning.federated.CONFIGS``, so a scenario is
validated without importing the server side). Here each serve function is registered against the config class it
takes, never against a name, so a name reaches its serve function only through its config; and the registry is built
at import with two checks: every config class has a serve function and every serve function a config class, and each
serve function's ``cfg`` annotation is the class it is registered under. A method added on one side only, or a serve
function registered under another method's config, fails at import, naming it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, get_type_hints

import torch

from fed_opc.data.forget import ForgetSplit
from fed_opc.unlearning.federated import (
    CONFIGS,
    FedEraserConfig,
    FedFinetuneConfig,
    FedGAConfig,
    FedOPCConfig,
    FedRetrainConfig,
    FedRLConfig,
    PGAConfig,
)
from strategies.federated.context import FedContext, MethodOutcome
from strategies.federated.eraser import serve_fed_eraser
from strategies.federated.fedavg_based import serve_fed_finetune, serve_fed_retrain
from strategies.federated.rounds import serve_fed_ga, serve_fed_opc, serve_fed_rl, serve_pga

Serve = Callable[[FedContext, Sequence[ForgetSplit], Any, dict[str, torch.Tensor]], MethodOutcome]


@dataclass(frozen=True)
class FederatedMethod:
    """A registered federated method: its name, config class, serve function, and whether it needs its requester.

    ``needs_requester``: the method's protocol runs the requester's own local steps, so on an edge federation its
    stage waits for the requester to come online; the others serve a request without it.
    """

    name: str
    config: type
    serve: Serve
    needs_requester: bool


# Each serve function (and whether it needs the requester) under the config class it takes.
SERVERS: dict[type, tuple[Serve, bool]] = {
    FedOPCConfig: (serve_fed_opc, True),
    FedRetrainConfig: (serve_fed_retrain, False),
    FedFinetuneConfig: (serve_fed_finetune, False),
    FedEraserConfig: (serve_fed_eraser, False),
    PGAConfig: (serve_pga, True),
    FedGAConfig: (serve_fed_ga, True),
    FedRLConfig: (serve_fed_rl, True),
}


class RegistryError(TypeError):
    """A federated method's config class and serve function do not match."""


def build_registry(
    configs: Mapping[str, type], servers: Mapping[type, tuple[Serve, bool]]
) -> dict[str, FederatedMethod]:
    """``name -> FederatedMethod`` for every method of ``configs``, its serve function found by its config class.

    Raises
    ------
    RegistryError
        When a config class has no serve function or a serve function no config class, or when a serve function's
        ``cfg`` annotation is not the class it is registered under.

    """
    unserved = sorted(name for name, config in configs.items() if config not in servers)
    unnamed = sorted(config.__name__ for config in servers if config not in configs.values())
    if unserved or unnamed:
        raise RegistryError(
            f"federated methods without a serve function: {unserved or 'none'}; "
            f"serve functions without a method in CONFIGS: {unnamed or 'none'}"
        )
    methods = {}
    for name, config in configs.items():
        serve, needs_requester = servers[config]
        takes = get_type_hints(serve).get("cfg")
        if takes is not config:
            raise RegistryError(
                f"{name}: {serve.__name__} takes cfg: {getattr(takes, '__name__', takes)}, not {config.__name__}"
            )
        methods[name] = FederatedMethod(name, config, serve, needs_requester)
    return methods


METHODS: dict[str, FederatedMethod] = build_registry(CONFIGS, SERVERS)


def get_method(name: str) -> FederatedMethod:
    """The registered federated method ``name``; an unknown name raises ``KeyError`` listing the valid ones."""
    if name not in METHODS:
        raise KeyError(f"unknown federated method {name!r}; valid: {', '.join(sorted(METHODS))}")
    return METHODS[name]
