"""Validation of a parsed scenario mapping into a ``Scenario``: the unlearning block against the method registry,
attack names against the attack registries, and the cross-field checks.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from fed_opc.config.scenario import (
    FALLBACKS,
    PARTITION_KEYS,
    SYNTHETIC_MAX_VALUES,
    AttacksConfig,
    Scenario,
    UnlearningConfig,
)
from fed_opc.schema import ConfigError, build, convert, show, show_key


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
