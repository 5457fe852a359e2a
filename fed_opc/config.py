"""Scenario YAML -> nested frozen dataclasses, validated once at load.

``load_scenario(path)`` is the only place that reads raw YAML. It rejects duplicate keys, YAML 1.1 number forms that
read unlike they look (``010``, ``1:02``, ``1_000``), unknown keys, missing keys, wrong types, out-of-range values and
inconsistent settings with a ``ConfigError`` whose text is one line naming the file and the dotted field, e.g.
``scenarios/x.yaml: requests[1].classes[0]: expected a class id in 0..9, got 12``. What only the data can tell (a class
the requester does not hold, a count above its data) is checked by ``fed_opc.data.scenario_data.prepare``. Every key
and rule is documented in docs/scenarios.md.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from fed_opc.edge import AvailabilityConfig, DevicesConfig
from fed_opc.schema import ConfigError, UnsafeNumber, bounds, build, convert, cut, show, show_key, to_dict

__all__ = ["ConfigError", "ScenarioLoader", "Scenario", "load_scenario", "parse_scenario", "scenario_to_dict"]

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
NAME_MAX = 64  # names and request ids become file and folder names
NAME_META = {"pattern": NAME_PATTERN, "max_length": NAME_MAX}
WIDTH_MAX = 512  # small_cnn's last stage has 4 x width channels
SYNTHETIC_MAX_VALUES = 2**28  # pixel values of the synthetic set, train and test (about 2 GiB while it is drawn)


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
    image_size: int = field(default=16, metadata=bounds(ge=4, le=256))
    channels: int = field(default=3, metadata=bounds(ge=1, le=4))
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
    width: int = field(default=0, metadata=bounds(ge=0, le=WIDTH_MAX))


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
    server_threads: int = field(default=2, metadata=bounds(ge=1))
    availability: AvailabilityConfig = AvailabilityConfig()
    devices: DevicesConfig = DevicesConfig()


@dataclass(frozen=True)
class RequestConfig:
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
    methods: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)  # method name -> that method's frozen Config
    fallback: str | None = None  # serves a request overdue for a method that waits for its requester


# Federated methods that serve a request without its requester (fallbacks for a requester that stays offline).
FALLBACKS = ("fed_finetune", "fed_retrain")


@dataclass(frozen=True)
class InversionConfig:
    targets: tuple[str, ...] = ()
    images: int = field(default=4, metadata=bounds(ge=1))
    iterations: int = field(default=2000, metadata=bounds(ge=1))
    restarts: int = field(default=2, metadata=bounds(ge=1))
    lr: float = field(default=0.1, metadata=bounds(gt=0))
    tv: float | None = field(default=None, metadata=bounds(ge=0))
    bn_stats: float = field(default=0.0, metadata=bounds(ge=0))
    methods: tuple[str, ...] = ()  # the methods whose results are inverted (empty: every method)


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
            raise ConfigError(f"unlearning.methods[{i}]", f"unknown method {show(m)} (valid: {valid})")
        if m in methods[:i]:
            raise ConfigError(f"unlearning.methods[{i}]", f"{m} is listed twice (also methods[{methods.index(m)}])")
    params = {}
    fallback = raw.get("fallback")
    if fallback is not None and fallback not in FALLBACKS:
        raise ConfigError("unlearning.fallback", f"expected one of {', '.join(FALLBACKS)}, got {show(fallback)}")
    for key, block in raw.items():
        if key in ("methods", "fallback"):
            continue
        if key not in registry:
            raise ConfigError(f"unlearning.{show_key(key)}", f"unknown key (valid: methods, {valid})")
        params[key] = build(registry[key].config, block, f"unlearning.{key}")
    for m in methods:
        params.setdefault(m, build(registry[m].config, {}, f"unlearning.{m}"))
    if fallback is not None:
        params.setdefault(fallback, build(registry[fallback].config, {}, f"unlearning.{fallback}"))
    return UnlearningConfig(methods=methods, params=params, fallback=fallback)


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
                    f"unknown attack {show(a)} (valid: {', '.join(sorted(registry)) or '(none registered)'})",
                )


PARTITION_KEYS = {"iid": set(), "dirichlet": {"alpha", "min_size"}, "shards": {"classes_per_client"}}


def _check_partition_keys(raw: dict[str, Any]) -> None:
    part = ((raw.get("data") or {}).get("partition") or {}) if isinstance(raw.get("data"), dict) else {}
    if not isinstance(part, dict):
        return
    kind = part.get("kind", "iid")
    if not isinstance(kind, str) or kind not in PARTITION_KEYS:
        return  # building the dataclass names the bad kind
    own = PARTITION_KEYS[kind]
    for key in ("alpha", "min_size", "classes_per_client"):
        if key in part and key not in own:
            raise ConfigError(f"data.partition.{key}", f"not used by partition kind {kind}")


def min_test_samples(sc: Scenario) -> int:
    """The fewest held-out samples the scenario's evaluation can work with.

    One for the metrics (TA, and the MIA's non-member side); two with recovery attacks, whose calibration data and
    attacker's labelled pool are the two halves of the held-out data (``len // 2`` and the rest), each needing one.
    """
    return 2 if sc.attacks.recovery else 1


def _check_test_size(sc: Scenario) -> None:
    d, need = sc.data, min_test_samples(sc)
    why = "with attacks.recovery: half calibrates the attacks, the other half is the attacker's pool"
    if d.max_test_samples is not None and d.max_test_samples < need:
        raise ConfigError("data.max_test_samples", f"expected int >= {need} ({why}), got {d.max_test_samples}")
    if d.dataset == "synthetic" and d.synthetic.num_test < need:
        raise ConfigError("data.synthetic.num_test", f"expected int >= {need} ({why}), got {d.synthetic.num_test}")


def _check_requests(sc: Scenario) -> None:
    """Per-request ranges, ids (a duplicate is blamed on its later entry), and that something is left to retain."""
    d, fed, n_cls = sc.data, sc.federation, sc.num_classes
    ids = sc.request_ids()
    first: dict[str, int] = {}
    all_class: set[int] = set()
    whole_clients: set[int] = set()
    for i, r in enumerate(sc.requests):
        where = f"requests[{i}]"
        if r.client is not None and r.client >= d.num_clients:
            raise ConfigError(f"{where}.client", f"expected a client id in 0..{d.num_clients - 1}, got {r.client}")
        for j, c in enumerate(r.classes):
            if c >= n_cls:
                raise ConfigError(f"{where}.classes[{j}]", f"expected a class id in 0..{n_cls - 1}, got {c}")
        if r.round > fed.rounds:
            raise ConfigError(f"{where}.round", f"expected int <= federation.rounds ({fed.rounds}), got {r.round}")
        rid = ids[i]
        if rid in first:
            k = first[rid]
            other = f"requests[{k}].id" if sc.requests[k].id is not None else f"the default id of requests[{k}]"
            if r.id is not None:
                raise ConfigError(f"{where}.id", f"duplicate request id {rid!r} (also {other})")
            raise ConfigError(where, f"its default id {rid!r} is already {other}; give this request an id")
        first[rid] = i
        if r.scope == "class" and len(r.classes) == n_cls:
            hint = "use scope client to forget a client's data" if r.client is not None else "nothing is left to retain"
            raise ConfigError(f"{where}.classes", f"forgets every class (0..{n_cls - 1}): {hint}")
        if r.clients == "all":
            before = len(all_class)
            all_class |= set(r.classes)
            if len(all_class) == n_cls and before < n_cls:
                raise ConfigError(
                    f"{where}.classes",
                    f"with the requests before it, every class (0..{n_cls - 1}) is forgotten from every client: "
                    "nothing is left to retain",
                )
        if r.scope == "client":
            whole_clients.add(int(r.client))  # type: ignore[arg-type]
            if len(whole_clients) == d.num_clients:
                many = "every client asks" if d.num_clients > 1 else "the only client (data.num_clients is 1) asks"
                raise ConfigError(
                    f"{where}.client", f"{many} to forget all its data: nothing is left to retain or train on"
                )


def _check_edge(sc: Scenario, base_dir: Path | None) -> None:
    """The availability trace must be readable and name real clients; deadlines need a method that can be late."""
    from fed_opc.edge import Availability

    fed = sc.federation
    if fed.availability.kind == "trace":
        Availability(fed.availability, sc.seed, sc.data.num_clients, base_dir)
    for i, m in enumerate(sc.attacks.inversion.methods):
        if m not in sc.unlearning.methods:
            raise ConfigError(
                f"attacks.inversion.methods[{i}]",
                f"{m} is not in unlearning.methods ({', '.join(sc.unlearning.methods)})",
            )
    if sc.unlearning.fallback is not None and not any(r.deadline_rounds for r in sc.requests):
        raise ConfigError("unlearning.fallback", "serves overdue requests: set requests[].deadline_rounds too")


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
    if sc.model.arch == "resnet18" and sc.model.width not in (0, 64):
        raise ConfigError("model.width", f"resnet18 has a fixed width of 64: expected 0 or 64, got {sc.model.width}")
    if d.dataset == "synthetic":
        s = d.synthetic
        values = (s.num_train + s.num_test) * s.image_size**2 * s.channels
        if values > SYNTHETIC_MAX_VALUES:
            raise ConfigError(
                "data.synthetic.num_train",
                f"expected (num_train + num_test) x image_size^2 x channels <= {SYNTHETIC_MAX_VALUES}, got {values}",
            )
    _check_test_size(sc)
    _check_requests(sc)
    if not check_environment:
        return
    res = fed.client_resources
    cpus = os.cpu_count() or 1
    if fed.ray_address is None and res.num_cpus > cpus:
        # a local Ray gets this machine's CPUs: an actor asking for more is never placed (the in-process engine
        # would run every client on more torch threads than there are cores)
        raise ConfigError(
            "federation.client_resources.num_cpus", f"expected <= {cpus} (CPUs on this machine), got {res.num_cpus:g}"
        )
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
        from fed_opc.data.datasets import DataError, dataset_present, resolve_data_root

        root = resolve_data_root(d.root, base_dir)
        field_name = (
            "data.root" if d.root is not None else "data.root (null: $FED_OPC_DATA_ROOT or ~/.cache/fed_opc/data)"
        )
        try:
            present = dataset_present(d.dataset, root)
        except DataError as e:  # e.g. a folder this user may not read
            raise ConfigError(field_name, str(e)) from None
        if not present:
            folder = "cifar-10-batches-py/" if d.dataset == "cifar10" else "MNIST/raw/"
            raise ConfigError(field_name, f"{root} holds no {d.dataset} ({folder}) and data.download is false")


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
        _check_edge(sc, Path(path).parent if path else None)
        return sc
    except ConfigError as e:
        raise e.with_file(path) if path else e from None


# ----------------------------------------------------------------------------------------------------------------------
# reading the YAML: a key given twice and the YAML 1.1 number forms that read unlike they look are refused


class _DuplicateKey(Exception):
    def __init__(self, mapping: yaml.MappingNode, key: Any, lines: tuple[int, int]) -> None:
        super().__init__(key)
        self.mapping, self.key, self.lines = mapping, key, lines


class ScenarioLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key written twice in one mapping, at any depth (PyYAML keeps the last one
    silently), and reads an int or float that YAML 1.1 resolves unlike it looks (``010``: octal 8, ``1:02``: base 60,
    62, ``1_000``: separators dropped) as an ``UnsafeNumber``, which every schema field refuses. Keys brought in by a
    merge (``<<: *base``) may be overridden, as YAML intends.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        """Refuse a key written twice in ``node`` (merged keys aside), then build the mapping as ``SafeLoader`` does."""
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise _DuplicateKey(node, key, (seen[key], line))
                seen[key] = line
            except TypeError:  # an unhashable key: the base class words that error
                continue
        return super().construct_mapping(node, deep=deep)


def _surprise(text: str, value: Any, octal: bool) -> UnsafeNumber | None:
    kinds = [k for k, hit in (("octal", octal), ("base-60", ":" in text), ("'_'-separated", "_" in text)) if hit]
    if not kinds:
        return None
    article = "an" if kinds[0] == "octal" else "a"
    return UnsafeNumber(
        text, f"{cut(text)} is {article} {', '.join(kinds)} number to YAML 1.1 (read as {value}); write plain decimal"
    )


def _construct_int(loader: ScenarioLoader, node: yaml.ScalarNode) -> Any:
    text = str(node.value)
    digits = text.lstrip("+-")
    try:
        value = yaml.SafeLoader.construct_yaml_int(loader, node)
    except ValueError:  # more digits than Python turns into an int
        return UnsafeNumber(text, f"{cut(text)} is not a usable number ({len(digits)} digits)")
    # 010 and 0_5 are octal to YAML 1.1 (0x.. and 0b.. say their base, and 0 alone is zero)
    octal = len(digits) > 1 and digits[0] == "0" and digits[1] not in "xXbB"
    return _surprise(text, value, octal) or value


def _construct_float(loader: ScenarioLoader, node: yaml.ScalarNode) -> Any:
    text = str(node.value)
    value = yaml.SafeLoader.construct_yaml_float(loader, node)
    return _surprise(text, value, False) or value  # .inf and .nan pass here: every float field refuses them


ScenarioLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
ScenarioLoader.add_constructor("tag:yaml.org,2002:float", _construct_float)


def _node_path(root: yaml.Node, target: yaml.Node) -> str | None:
    """The dotted field path of ``target`` in the node graph under ``root`` (anchors may share nodes: each once)."""
    stack, visited = [(root, "")], set()
    while stack:
        node, path = stack.pop()
        if node is target:
            return path
        if id(node) in visited:
            continue
        visited.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                name = show_key(k.value) if isinstance(k, yaml.ScalarNode) else "?"
                stack.append((v, f"{path}.{name}" if path else name))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(node.value))
    return None


def read_yaml(text: str, name: str) -> Any:
    """Parse scenario YAML text with ``ScenarioLoader``; every problem is a one-line ``ConfigError`` for file ``name``."""
    loader = ScenarioLoader(text)
    root = None
    try:
        root = loader.get_single_node()
        return None if root is None else loader.construct_document(root)
    except _DuplicateKey as d:
        parent = _node_path(root, d.mapping) if root is not None else None
        key = show_key(d.key)
        field_name = f"{parent}.{key}" if parent else key
        a, b = d.lines
        lines = f"lines {a} and {b}" if a != b else f"twice on line {a}"
        raise ConfigError(field_name, f"duplicate key ({lines})", name) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError("", f"not valid YAML: {where}{problem}", name) from None
    except RecursionError:
        raise ConfigError("", "not valid YAML: nested too deeply", name) from None
    except (ValueError, TypeError, OverflowError) as e:  # e.g. a timestamp with month 13
        raise ConfigError("", f"not valid YAML: {e.__class__.__name__}: {str(e)[:200]}", name) from None
    finally:
        loader.dispose()


def load_scenario(path: str | Path, *, check_environment: bool = True) -> Scenario:
    """Read and validate a scenario YAML file (``ScenarioLoader``: ``yaml.safe_load`` without duplicate keys and
    without YAML 1.1's surprising numbers).
    """
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
    raw = read_yaml(text, name)
    if raw is None:
        raise ConfigError("", "empty file, expected a scenario mapping", name)
    return parse_scenario(raw, path=name, check_environment=check_environment)


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
