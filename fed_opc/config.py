"""Scenario YAML -> nested frozen dataclasses, validated once at load.

``load_scenario(path)`` is the only place that reads raw YAML. It rejects unknown keys, missing keys, wrong types,
out-of-range values and inconsistent settings with a ``ConfigError`` whose text is one line naming the file and the
dotted field, e.g. ``scenarios/x.yaml: requests[1].classes[0]: expected a class id in 0..9, got 12``. Every key is
documented in docs/scenarios.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from fed_opc.schema import ConfigError, bounds, build, convert, to_dict

__all__ = ["ConfigError", "Scenario", "load_scenario", "parse_scenario", "scenario_to_dict"]

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]*"


@dataclass(frozen=True)
class PartitionConfig:
    kind: Literal["iid", "dirichlet", "shards"] = "iid"
    alpha: float = field(default=0.5, metadata=bounds(gt=0))
    classes_per_client: int = field(default=2, metadata=bounds(ge=1))
    min_size: int = field(default=1, metadata=bounds(ge=1))


@dataclass(frozen=True)
class SyntheticConfig:
    num_train: int = field(default=2000, metadata=bounds(ge=1))
    num_test: int = field(default=500, metadata=bounds(ge=1))
    num_classes: int = field(default=10, metadata=bounds(ge=2))
    image_size: int = field(default=16, metadata=bounds(ge=4))
    channels: int = field(default=3, metadata=bounds(ge=1))
    noise: float = field(default=0.25, metadata=bounds(ge=0))


@dataclass(frozen=True)
class DataConfig:
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
    arch: Literal["small_cnn", "fedavg_cnn", "resnet18"] = "fedavg_cnn"
    norm: Literal["none", "batch", "group"] | None = None
    width: int = field(default=0, metadata=bounds(ge=0))


@dataclass(frozen=True)
class ClientResources:
    num_cpus: float = field(default=1.0, metadata=bounds(gt=0))
    num_gpus: float = field(default=0.0, metadata=bounds(ge=0))


@dataclass(frozen=True)
class FederationConfig:
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


@dataclass(frozen=True)
class RequestConfig:
    scope: Literal["client", "class", "samples"]
    round: int = field(metadata=bounds(ge=0))
    client: int | None = field(default=None, metadata=bounds(ge=0))
    clients: Literal["all"] | None = None
    classes: tuple[int, ...] = field(default=(), metadata=bounds(ge=0))
    fraction: float | None = field(default=None, metadata=bounds(gt=0, le=1))
    count: int | None = field(default=None, metadata=bounds(ge=1))
    id: str | None = field(default=None, metadata={"pattern": NAME_PATTERN})

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
    methods: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)  # method name -> that method's frozen Config


@dataclass(frozen=True)
class InversionConfig:
    targets: tuple[str, ...] = ()
    images: int = field(default=4, metadata=bounds(ge=1))
    iterations: int = field(default=2000, metadata=bounds(ge=1))
    restarts: int = field(default=2, metadata=bounds(ge=1))
    lr: float = field(default=0.1, metadata=bounds(gt=0))
    tv: float | None = field(default=None, metadata=bounds(ge=0))
    bn_stats: float = field(default=0.0, metadata=bounds(ge=0))


@dataclass(frozen=True)
class AttacksConfig:
    recovery: tuple[str, ...] = ()
    k_shot: int = field(default=10, metadata=bounds(ge=1))
    relearn_steps: tuple[int, ...] = field(default=(1, 5, 20), metadata=bounds(ge=1))
    inversion: InversionConfig = InversionConfig()


@dataclass(frozen=True)
class FaultSpec:
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
    dir: str | None = None


@dataclass(frozen=True)
class Scenario:
    """A validated scenario. ``path`` is the YAML file it came from (None when built from a dict)."""

    name: str = field(metadata={"pattern": NAME_PATTERN})
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
        return self.data.synthetic.num_classes if self.data.dataset == "synthetic" else 10

    def request_ids(self) -> list[str]:
        return [r.id or f"r{i}" for i, r in enumerate(self.requests)]


# ----------------------------------------------------------------------------------------------------------------------


def _unlearning(raw: Any) -> UnlearningConfig:
    from fed_opc.unlearning import all_methods

    if raw is None:
        return UnlearningConfig()
    if not isinstance(raw, dict):
        raise ConfigError("unlearning", "expected a mapping")
    registry = all_methods()
    valid = ", ".join(sorted(registry)) or "(none registered)"
    methods = convert(tuple[str, ...], raw.get("methods", []), "unlearning.methods")
    for i, m in enumerate(methods):
        if m not in registry:
            raise ConfigError(f"unlearning.methods[{i}]", f"unknown method {m!r} (valid: {valid})")
    if len(set(methods)) != len(methods):
        raise ConfigError("unlearning.methods", "a method is listed twice")
    params = {}
    for key, block in raw.items():
        if key == "methods":
            continue
        if key not in registry:
            raise ConfigError(f"unlearning.{key}", f"unknown key (valid: methods, {valid})")
        params[key] = build(registry[key].config, block, f"unlearning.{key}")
    for m in methods:
        params.setdefault(m, build(registry[m].config, {}, f"unlearning.{m}"))
    return UnlearningConfig(methods=methods, params=params)


def _check_attacks(att: AttacksConfig) -> None:
    from fed_opc.attacks import INVERSION_TARGETS, RECOVERY

    for names, registry, where in (
        (att.recovery, RECOVERY, "attacks.recovery"),
        (att.inversion.targets, INVERSION_TARGETS, "attacks.inversion.targets"),
    ):
        for i, a in enumerate(names):
            if a not in registry:
                raise ConfigError(
                    f"{where}[{i}]",
                    f"unknown attack {a!r} (valid: {', '.join(sorted(registry)) or '(none registered)'})",
                )


PARTITION_KEYS = {"iid": set(), "dirichlet": {"alpha", "min_size"}, "shards": {"classes_per_client"}}


def _check_partition_keys(raw: dict[str, Any]) -> None:
    part = ((raw.get("data") or {}).get("partition") or {}) if isinstance(raw.get("data"), dict) else {}
    if not isinstance(part, dict):
        return
    kind = part.get("kind", "iid")
    own = PARTITION_KEYS.get(kind, set())
    for key in ("alpha", "min_size", "classes_per_client"):
        if key in part and key not in own:
            raise ConfigError(f"data.partition.{key}", f"not used by partition kind {kind}")


def _cross_checks(sc: Scenario, check_environment: bool, base_dir: Path | None) -> None:
    d, fed = sc.data, sc.federation
    if fed.clients_per_round > d.num_clients:
        raise ConfigError(
            "federation.clients_per_round",
            f"expected int <= data.num_clients ({d.num_clients}), got {fed.clients_per_round}",
        )
    if d.max_samples is not None and d.max_samples < d.num_clients:
        raise ConfigError(
            "data.max_samples", f"expected int >= data.num_clients ({d.num_clients}), got {d.max_samples}"
        )
    for kind in ("crash", "die"):
        for i, f in enumerate(getattr(sc.faults, kind)):
            if f.client >= d.num_clients:
                raise ConfigError(
                    f"faults.{kind}[{i}].client", f"expected a client id in 0..{d.num_clients - 1}, got {f.client}"
                )
    ids = sc.request_ids()
    for i, r in enumerate(sc.requests):
        where = f"requests[{i}]"
        if r.client is not None and r.client >= d.num_clients:
            raise ConfigError(f"{where}.client", f"expected a client id in 0..{d.num_clients - 1}, got {r.client}")
        for j, c in enumerate(r.classes):
            if c >= sc.num_classes:
                raise ConfigError(f"{where}.classes[{j}]", f"expected a class id in 0..{sc.num_classes - 1}, got {c}")
        if r.round > fed.rounds:
            raise ConfigError(f"{where}.round", f"expected int <= federation.rounds ({fed.rounds}), got {r.round}")
        if ids.count(ids[i]) > 1:
            raise ConfigError(f"{where}.id", f"duplicate request id {ids[i]!r}")
    if not check_environment:
        return
    res = fed.client_resources
    if res.num_gpus > 0 and fed.ray_address is None:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                "federation.client_resources.num_gpus",
                f"expected 0 on this machine (no GPU is visible), got {res.num_gpus}",
            )
        if res.num_gpus > torch.cuda.device_count():
            raise ConfigError(
                "federation.client_resources.num_gpus",
                f"expected <= {torch.cuda.device_count()} (GPUs visible), got {res.num_gpus}",
            )
    if d.dataset in ("cifar10", "mnist") and not d.download:
        from fed_opc.data.datasets import dataset_present, default_data_root

        root = _resolve_root(d.root, base_dir) if d.root is not None else default_data_root()
        if not dataset_present(d.dataset, root):
            folder = "cifar-10-batches-py/" if d.dataset == "cifar10" else "MNIST/raw/"
            field_name = (
                "data.root" if d.root is not None else "data.root (null: $FED_OPC_DATA_ROOT or ~/.cache/fed_opc/data)"
            )
            raise ConfigError(field_name, f"{root} holds no {d.dataset} ({folder}) and data.download is false")


def _resolve_root(root: str, base_dir: Path | None) -> Path:
    p = Path(root).expanduser()
    if not p.is_absolute() and base_dir is not None and not p.exists() and (base_dir / p).exists():
        return base_dir / p
    return p


def parse_scenario(raw: Any, *, path: str | None = None, check_environment: bool = True) -> Scenario:
    """Validate a parsed YAML mapping into a ``Scenario`` (``path`` is only used to word errors)."""
    try:
        if not isinstance(raw, dict):
            raise ConfigError("", f"expected a mapping of scenario keys at the top level, got {type(raw).__name__}")
        _check_partition_keys(raw)
        raw = dict(raw)
        faults = raw.get("faults")
        if isinstance(faults, dict):  # a single fault may be written as a mapping instead of a one-item list
            raw["faults"] = {k: [v] if isinstance(v, dict) else v for k, v in faults.items()}
        unlearning = _unlearning(raw.pop("unlearning", None))
        if "path" in raw:
            raise ConfigError("path", "unknown key")
        sc = build(Scenario, raw)
        sc = dataclasses.replace(sc, unlearning=unlearning, path=path)
        _check_attacks(sc.attacks)
        _cross_checks(sc, check_environment, Path(path).parent if path else None)
        return sc
    except ConfigError as e:
        raise e.with_file(path) if path else e from None


def load_scenario(path: str | Path, *, check_environment: bool = True) -> Scenario:
    """Read and validate a scenario YAML file (``yaml.safe_load``)."""
    p = Path(path)
    name = str(path)
    if not p.exists():
        raise ConfigError("", "no such file", name)
    if p.is_dir():
        raise ConfigError("", "is a directory, expected a scenario YAML file", name)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(
            "", f"cannot read: {e.__class__.__name__}: {getattr(e, 'strerror', None) or e}", name
        ) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError("", f"not valid YAML: {where}{problem}", name) from None
    if raw is None:
        raise ConfigError("", "empty file, expected a scenario mapping", name)
    return parse_scenario(raw, path=name, check_environment=check_environment)


def scenario_to_dict(sc: Scenario) -> dict[str, Any]:
    """The resolved scenario as plain data (what ``scenario.yaml`` in a run directory holds)."""
    out = to_dict(sc)
    out.pop("path", None)
    part = out["data"]["partition"]
    out["data"]["partition"] = {k: v for k, v in part.items() if k == "kind" or k in PARTITION_KEYS[part["kind"]]}
    out["unlearning"] = {"methods": list(sc.unlearning.methods)} | {
        k: to_dict(v) for k, v in sc.unlearning.params.items()
    }
    return out
