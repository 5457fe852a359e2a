"""Hyperparameters of the federated unlearning methods.

The methods themselves are serve functions in the ``strategies.federated`` package, registered there under these
classes (``strategies/federated/registry.py``); their frozen ``Config`` classes live here so that a scenario's
``unlearning.<method>`` block is validated without importing the server side.

Methods (all serve the same deletion requests, from the same pretrained global model):

- ``fed_opc``: federated One-Point Contraction (arXiv 2507.07754; docs/federated.md). Protocol ``fedavg`` (default):
  FedAvg over every sampled client's share of centralized OPC's objective. Protocol ``two_phase``: sampled retain
  clients send ordinary FedAvg updates, aggregated into a retain update; the requester contracts its forget
  representations to the origin under a constraint (``sum``, ``project`` or ``ball``) against it.
- ``fed_retrain``: FedAvg from the same initial model without the forgotten data (the gold standard).
- ``fed_finetune``: FedAvg continued from the pretrained model without the forgotten data.
- ``fed_eraser``: FedEraser (Liu et al., IWQoS 2021): calibrated replay of client updates stored during pretraining.
- ``pga``: projected gradient ascent on the requester inside an L2 ball around the other clients' average (Halimi et
  al., "Federated Unlearning: How to Efficiently Erase a Client in FL?", 2022), then recovery rounds.
- ``fed_ga`` / ``fed_rl``: gradient ascent / random labels on the requester, aggregated with the retain update.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fed_opc.schema import ConfigError, bounds


@dataclass(frozen=True)
class RoundsConfig:
    """Settings shared by the methods that run unlearning rounds (retain update + requester's local steps)."""

    max_rounds: int = field(default=5, metadata=bounds(ge=1))
    recovery_rounds: int = field(default=0, metadata=bounds(ge=0))
    local_epochs: float = field(default=1.0, metadata=bounds(gt=0))
    lr: float = field(default=0.01, metadata=bounds(gt=0))
    momentum: float = field(default=0.0, metadata=bounds(ge=0, lt=1))
    batch_size: int = field(default=32, metadata=bounds(ge=1))
    forget_batch_size: int = field(default=32, metadata=bounds(ge=1))
    retain_clients: int | None = field(default=None, metadata=bounds(ge=1))
    max_requesters: int | None = field(default=None, metadata=bounds(ge=1))


# The settings whose default depends on ``protocol`` (a key left out, or null, takes its protocol's value).
# fedavg: chosen by the recovery attacks on MNIST (docs/federated.md, "Two protocols, measured"): lambda 0.1 contracts
# the forget classes while each client's CE keeps the rest (lambda 1 kills every feature within a round), and only a
# contraction to a forget / retain norm ratio of 0.03 (centralized OPC ends near 0.02) leaves nothing to recover; 0.1
# left half of the original's knowledge. two_phase: the earlier CIFAR-10 choice.
PROTOCOL_DEFAULTS: dict[str, dict[str, float | int | str | bool]] = {
    "fedavg": {"lambda_": 0.1, "stop_ratio": 0.03, "max_rounds": 8},
    "two_phase": {"lambda_": 5.0, "local_epochs": 0.25, "stop_ratio": 0.1, "max_rounds": 5, "lr": 0.01,
                  "momentum": 0.0, "batch_size": 32, "constraint": "project", "epsilon": 1.0, "requester_retain": True},
}  # fmt: skip
# The settings of the requester's local steps in ``two_phase``. Under ``fedavg`` every sampled client trains with the
# federation's momentum and batch size and has no constraint, so setting one of these is an error rather than a
# silently ignored key.
TWO_PHASE_ONLY = ("momentum", "batch_size", "constraint", "epsilon", "requester_retain")
# fedavg's local epochs when ``local_epochs`` is null, by the stopping rule of the requests being served: a class
# removed everywhere must be contracted to one point (one epoch per round); a client's data or some samples only down
# to the held-out accuracy, and a whole-client requester has no data to keep, so its contraction-only steps run
# unopposed: one local epoch of them destroys the global model in one round on MNIST (test accuracy 0.10), a tenth of
# an epoch ends like fed_retrain at about a twelfth of its client samples (3 seeds).
FEDAVG_LOCAL_EPOCHS: dict[str, float] = {"norm_ratio": 1.0, "reference_acc": 0.1}


@dataclass(frozen=True)
class FedOPCConfig(RoundsConfig):
    """``unlearning.fed_opc``: protocol, contraction weight, representation, constraint mode and stopping rule.

    Settings left None take ``PROTOCOL_DEFAULTS[protocol]`` when the config is built, so a built config holds numbers
    (and the run's scenario.yaml records them). Under ``fedavg`` three stay None: ``local_epochs`` (read from
    ``FEDAVG_LOCAL_EPOCHS`` by the stopping rule of the requests served, ``local_epochs_for``), ``lr`` (the
    federation's) and the ``TWO_PHASE_ONLY`` settings, which are an error there.
    """

    protocol: Literal["fedavg", "two_phase"] = "fedavg"
    max_rounds: int | None = field(default=None, metadata=bounds(ge=1))
    local_epochs: float | None = field(default=None, metadata=bounds(gt=0))
    lambda_: float | None = field(default=None, metadata=bounds(gt=0))
    layer: Literal["penultimate", "logits"] = "penultimate"
    squared: bool = False
    # the clients' local learning rate; null: federation.lr under fedavg, 0.01 under two_phase
    lr: float | None = field(default=None, metadata=bounds(gt=0))
    momentum: float | None = field(default=None, metadata=bounds(ge=0, lt=1))  # two_phase only
    batch_size: int | None = field(default=None, metadata=bounds(ge=1))  # two_phase only
    constraint: Literal["sum", "project", "ball"] | None = None  # two_phase only
    epsilon: float | None = field(default=None, metadata=bounds(gt=0))  # two_phase, constraint ball
    stop_ratio: float | None = field(default=None, metadata=bounds(gt=0))
    stop_rule: Literal["auto", "norm_ratio", "reference_acc"] = "auto"
    requester_retain: bool | None = None  # two_phase only
    server_lr: float = field(default=1.0, metadata=bounds(gt=0))  # fedavg protocol: server step on the mean update
    server_momentum: float = field(default=0.0, metadata=bounds(ge=0, lt=1))  # fedavg protocol: FedAvgM momentum
    # fedavg protocol: batch norm in the clients' OPC steps. batch: train mode on each client's own batches (which mix
    # its retained and forget data in its own proportions); frozen: eval mode on the received running statistics.
    batch_norm: Literal["batch", "frozen"] = "batch"

    def __post_init__(self) -> None:
        if self.protocol == "fedavg":
            for name in TWO_PHASE_ONLY:
                if getattr(self, name) is not None:
                    raise ConfigError(name, "a two_phase setting; protocol fedavg's clients train with the federation's "
                                      "momentum and batch size, without a constraint")  # fmt: skip
        for name, value in PROTOCOL_DEFAULTS[self.protocol].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)

    def local_epochs_for(self, rule: str) -> float:
        """The local epochs per round when serving requests whose stopping rule is ``rule``."""
        return self.local_epochs if self.local_epochs is not None else FEDAVG_LOCAL_EPOCHS[rule]


@dataclass(frozen=True)
class FedRetrainConfig:
    """``unlearning.fed_retrain``: FedAvg from scratch without the forgotten data.

    ``rounds`` null = as many rounds as the federation has trained when the request fires.
    """

    rounds: int | None = field(default=None, metadata=bounds(ge=1))


@dataclass(frozen=True)
class FedFinetuneConfig:
    """``unlearning.fed_finetune``: FedAvg rounds continued from the pretrained model without the forgotten data."""

    rounds: int = field(default=5, metadata=bounds(ge=1))
    lr: float | None = field(default=None, metadata=bounds(gt=0))


@dataclass(frozen=True)
class FedEraserConfig:
    """``unlearning.fed_eraser``: store updates every ``interval`` rounds; calibrate with this share of local epochs.

    ``calibration`` is what keeps the stored step length: ``model`` (one length for the whole aggregated update) or
    ``layer`` (one per parameter tensor of the aggregated update, as FedEraser's reference code does); see
    docs/federated.md, "FedEraser's calibration, measured".
    """

    interval: int = field(default=2, metadata=bounds(ge=1))
    calibration_ratio: float = field(default=0.5, metadata=bounds(gt=0, le=1))
    calibration: Literal["model", "layer"] = "model"


@dataclass(frozen=True)
class PGAConfig(RoundsConfig):
    """``unlearning.pga``: ascent on the requester's forget data from the retain reference, inside an L2 ball.

    ``radius`` null uses one third of the distance from the global model to a freshly initialised one, as Halimi et al.
    do; local steps stop early once the requester's forget-batch accuracy falls to ``stop_acc``.
    """

    max_rounds: int = field(default=1, metadata=bounds(ge=1))
    recovery_rounds: int = field(default=2, metadata=bounds(ge=0))
    local_epochs: float = field(default=5.0, metadata=bounds(gt=0))
    radius: float | None = field(default=None, metadata=bounds(gt=0))
    stop_acc: float = field(default=0.1, metadata=bounds(ge=0, le=1))


@dataclass(frozen=True)
class FedGAConfig(RoundsConfig):
    """``unlearning.fed_ga``: gradient ascent on the requester, aggregated with the retain update (``sum``)."""

    max_rounds: int = field(default=2, metadata=bounds(ge=1))
    recovery_rounds: int = field(default=2, metadata=bounds(ge=0))
    lr: float = field(default=0.001, metadata=bounds(gt=0))
    stop_acc: float = field(default=0.1, metadata=bounds(ge=0, le=1))


@dataclass(frozen=True)
class FedRLConfig(RoundsConfig):
    """``unlearning.fed_rl``: random other labels on the requester's forget data (with its own retain data)."""

    max_rounds: int = field(default=2, metadata=bounds(ge=1))
    recovery_rounds: int = field(default=2, metadata=bounds(ge=0))


CONFIGS: dict[str, type] = {
    "fed_opc": FedOPCConfig,
    "fed_retrain": FedRetrainConfig,
    "fed_finetune": FedFinetuneConfig,
    "fed_eraser": FedEraserConfig,
    "pga": PGAConfig,
    "fed_ga": FedGAConfig,
    "fed_rl": FedRLConfig,
}
