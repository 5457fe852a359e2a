"""The scenario schema: nested frozen dataclasses with their bounds and per-section rules, and the resolved
scenario as plain data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from fed_opc.edge import AvailabilityConfig, DevicesConfig
from fed_opc.schema import ConfigError, bounds, to_dict

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
NAME_MAX = 64  # names and request ids become file and folder names
NAME_META = {"pattern": NAME_PATTERN, "max_length": NAME_MAX}
WIDTH_MAX = 512  # small_cnn's last stage has 4 x width channels, cnn4's 8 x width
SYNTHETIC_MAX_VALUES = 2**28  # pixel values of the synthetic set, train and test (about 2 GiB while it is drawn)


@dataclass(frozen=True)
class PartitionConfig:
    """``data.partition``: how the training set is split over the clients (``iid``, ``dirichlet``, ``shards``)."""

    kind: Literal["iid", "dirichlet", "shards"] = "iid"
    alpha: float = field(default=0.5, metadata=bounds(gt=0))
    classes_per_client: int = field(default=2, metadata=bounds(ge=1))
    min_size: int = field(default=1, metadata=bounds(ge=1))


@dataclass(frozen=True)
class SyntheticConfig:
    """``data.synthetic``: size, classes and noise of the synthetic data set."""

    num_train: int = field(default=2000, metadata=bounds(ge=1))
    num_test: int = field(default=500, metadata=bounds(ge=1))
    num_classes: int = field(default=10, metadata=bounds(ge=2))
    image_size: int = field(default=16, metadata=bounds(ge=4, le=256))
    channels: int = field(default=3, metadata=bounds(ge=1, le=4))
    noise: float = field(default=0.25, metadata=bounds(ge=0))


@dataclass(frozen=True)
class DataConfig:
    """``data``: the data set, where it lives, the number of clients and how it is split over them."""

    dataset: Literal["cifar10", "mnist", "synthetic"] = "cifar10"
    root: str | None = None
    download: bool = False
    checksums: str | None = None
    num_clients: int = field(default=10, metadata=bounds(ge=1))
    partition: PartitionConfig = PartitionConfig()
    max_samples: int | None = field(default=None, metadata=bounds(ge=1))
    max_test_samples: int | None = field(default=None, metadata=bounds(ge=1))
    synthetic: SyntheticConfig = SyntheticConfig()


@dataclass(frozen=True)
class ModelConfig:
    """``model``: architecture, normalisation and width."""

    arch: Literal["small_cnn", "cnn4", "fedavg_cnn", "resnet18"] = "fedavg_cnn"
    norm: Literal["none", "batch", "group"] | None = None
    width: int = field(default=0, metadata=bounds(ge=0, le=WIDTH_MAX))


@dataclass(frozen=True)
class ClientResources:
    """``federation.client_resources``: CPUs and GPUs each simulated client asks for."""

    num_cpus: float = field(default=1.0, metadata=bounds(gt=0))
    num_gpus: float = field(default=0.0, metadata=bounds(ge=0))


@dataclass(frozen=True)
class FederationConfig:
    """``federation``: rounds, client sampling, local training, the simulation backend and edge settings."""

    rounds: int = field(default=10, metadata=bounds(ge=1))
    clients_per_round: int = field(default=10, metadata=bounds(ge=1))
    local_epochs: float = field(default=1.0, metadata=bounds(gt=0))
    batch_size: int = field(default=32, metadata=bounds(ge=1))
    lr: float = field(default=0.05, metadata=bounds(gt=0))
    momentum: float = field(default=0.9, metadata=bounds(ge=0, lt=1))
    weight_decay: float = field(default=5e-4, metadata=bounds(ge=0))
    backend: Literal["ray", "inprocess"] = "ray"
    client_resources: ClientResources = ClientResources()
    ray_address: str | None = None
    evaluate_every: int = field(default=1, metadata=bounds(ge=1))
    fraction_evaluate: float = field(default=0.0, metadata=bounds(ge=0, le=1))
    round_timeout_s: float = field(default=600.0, metadata=bounds(gt=0))
    server_threads: int = field(default=2, metadata=bounds(ge=1))
    availability: AvailabilityConfig = AvailabilityConfig()
    devices: DevicesConfig = DevicesConfig()


@dataclass(frozen=True)
class RequestConfig:
    """One entry of ``requests``: what is to be forgotten (a client, classes or samples), from whom and when."""

    scope: Literal["client", "class", "samples"]
    round: int = field(metadata=bounds(ge=0))
    client: int | None = field(default=None, metadata=bounds(ge=0))
    clients: Literal["all"] | None = None
    classes: tuple[int, ...] = field(default=(), metadata=bounds(ge=0))
    fraction: float | None = field(default=None, metadata=bounds(gt=0, le=1))
    count: int | None = field(default=None, metadata=bounds(ge=1))
    id: str | None = field(default=None, metadata=NAME_META)
    deadline_rounds: int | None = field(default=None, metadata=bounds(ge=1))

    def __post_init__(self) -> None:
        if (self.client is None) == (self.clients is None):
            raise ConfigError("client", "give exactly one of client (a partition id) or clients: all")
        if self.clients == "all" and self.scope != "class":
            raise ConfigError("clients", f"clients: all is only valid with scope class, got scope {self.scope}")
        if self.scope == "class" and not self.classes:
            raise ConfigError("classes", "scope class needs a non-empty list of classes")
        if self.scope != "class" and self.classes:
            raise ConfigError("classes", f"only valid with scope class, got scope {self.scope}")
        if self.scope == "samples" and (self.fraction is None) == (self.count is None):
            raise ConfigError("fraction", "scope samples needs exactly one of fraction or count")
        if self.scope != "samples" and (self.fraction is not None or self.count is not None):
            raise ConfigError(
                "fraction" if self.fraction is not None else "count",
                f"only valid with scope samples, got scope {self.scope}",
            )
        if len(set(self.classes)) != len(self.classes):
            raise ConfigError("classes", f"duplicate class in {list(self.classes)}")


@dataclass(frozen=True)
class UnlearningConfig:
    """``unlearning``: the methods compared, each one's settings, and the fallback for overdue requests."""

    methods: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)  # method name -> that method's frozen Config
    fallback: str | None = None  # serves a request overdue for a method that waits for its requester


# Federated methods that serve a request without its requester (fallbacks for a requester that stays offline).
FALLBACKS = ("fed_finetune", "fed_retrain")


@dataclass(frozen=True)
class InversionConfig:
    """``attacks.inversion``: the gradient-inversion targets, their settings and the methods inverted."""

    targets: tuple[str, ...] = ()
    images: int = field(default=4, metadata=bounds(ge=1))
    iterations: int = field(default=2000, metadata=bounds(ge=1))
    restarts: int = field(default=2, metadata=bounds(ge=1))
    lr: float = field(default=0.1, metadata=bounds(gt=0))
    tv: float | None = field(default=None, metadata=bounds(ge=0))
    bn_stats: float = field(default=0.0, metadata=bounds(ge=0))
    combine: Literal["mean", "best"] = "mean"  # the restarts' pixel mean, or the best gradient match alone
    methods: tuple[str, ...] = ()  # the methods whose results are inverted (empty: every method)


@dataclass(frozen=True)
class AttacksConfig:
    """``attacks``: the recovery attacks, their k-shot size and relearning steps, inversion, and how many attack
    tasks run side by side (``workers``; null: ``federation.server_threads``).
    """

    recovery: tuple[str, ...] = ()
    k_shot: int = field(default=10, metadata=bounds(ge=1))
    relearn_steps: tuple[int, ...] = field(default=(1, 5, 20), metadata=bounds(ge=1))
    inversion: InversionConfig = InversionConfig()
    workers: int | None = field(default=None, metadata=bounds(ge=1))


@dataclass(frozen=True)
class FaultSpec:
    """One injected fault: the client, the round, and the world it happens in."""

    client: int = field(metadata=bounds(ge=0))
    round: int = field(metadata=bounds(ge=1))
    world: str | None = None  # "main" (pretraining), a method name, or null for any


@dataclass(frozen=True)
class FaultsConfig:
    """Injected client failures, for testing robustness: ``crash`` raises in the client; ``die`` ends its process."""

    crash: tuple[FaultSpec, ...] = ()
    die: tuple[FaultSpec, ...] = ()


@dataclass(frozen=True)
class OutputConfig:
    """``output``: where the run directory goes."""

    dir: str | None = None


@dataclass(frozen=True)
class Scenario:
    """A validated scenario. ``path`` is the YAML file it came from (None when built from a dict)."""

    name: str = field(metadata=NAME_META)
    seed: int = field(default=0, metadata=bounds(ge=0))
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    federation: FederationConfig = FederationConfig()
    requests: tuple[RequestConfig, ...] = ()
    unlearning: UnlearningConfig = UnlearningConfig()
    attacks: AttacksConfig = AttacksConfig()
    output: OutputConfig = OutputConfig()
    faults: FaultsConfig = FaultsConfig()
    path: str | None = field(default=None, compare=False)

    @property
    def num_classes(self) -> int:
        """Number of classes: the synthetic data's ``num_classes``, else 10 (CIFAR-10 and MNIST)."""
        return self.data.synthetic.num_classes if self.data.dataset == "synthetic" else 10

    def request_ids(self) -> list[str]:
        """The requests' ids in scenario order: a request's ``id``, else ``r<i>`` by its position."""
        return [r.id or f"r{i}" for i, r in enumerate(self.requests)]


# The data.partition keys each partition kind uses: the others are refused and left out of the resolved scenario.
PARTITION_KEYS = {"iid": set(), "dirichlet": {"alpha", "min_size"}, "shards": {"classes_per_client"}}


def scenario_to_dict(sc: Scenario) -> dict[str, Any]:
    """The resolved scenario as plain data (what ``scenario.yaml`` in a run directory holds)."""
    out = to_dict(sc)
    out.pop("path", None)
    part = out["data"]["partition"]
    out["data"]["partition"] = {k: v for k, v in part.items() if k == "kind" or k in PARTITION_KEYS[part["kind"]]}
    out["unlearning"] = (
        {"methods": list(sc.unlearning.methods)}
        | ({"fallback": sc.unlearning.fallback} if sc.unlearning.fallback else {})
        | {k: to_dict(v) for k, v in sc.unlearning.params.items()}
    )
    return out
