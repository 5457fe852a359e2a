"""Everything a scenario's data section resolves to: arrays, the training pool, partitions and forget splits.

``prepare(scenario)`` is cheap after the first call in a process (the arrays are memoised by ``load_dataset`` and the
index arrays are small), so the driver and every client actor call it and get identical partitions.

It is also the second half of scenario validation: what ``load_scenario`` cannot know before the data is read (a class
the requesting client does not hold, a sample count above its data, a fraction that selects nothing, requests that
leave nothing to retain, held-out data too small for the attacks) raises ``ScenarioDataError``, a ``ConfigError``
naming the field. The run calls ``prepare`` before it writes anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fed_opc.data.datasets import DataError, DatasetPair, load_dataset, resolve_data_root
from fed_opc.data.forget import ForgetSplit, resolve_request
from fed_opc.data.partition import PartitionError, dirichlet, iid, shards
from fed_opc.rng import numpy_rng
from fed_opc.schema import ConfigError


class ScenarioDataError(ConfigError, DataError):
    """A scenario that is valid on its own but does not fit its data. ``str(err)`` is ``field: problem``, one line;
    it is a ``DataError`` too, so the command line reports it as a data problem, with the file, and exits with 2.
    """


@dataclass(frozen=True, eq=False)
class ScenarioData:
    """Shared arrays plus the index arrays of one scenario.

    Attributes
    ----------
    data : train and test arrays (shared by every client in the process).
    pool : sorted training indices in use (all of them unless ``data.max_samples`` caps it).
    partitions : per partition id, its sorted training indices.
    test_idx : test indices used for evaluation (all unless ``data.max_test_samples`` caps it).
    requests : the deletion requests in scenario order, resolved to forget splits.

    """

    data: DatasetPair
    pool: np.ndarray
    partitions: tuple[np.ndarray, ...]
    test_idx: np.ndarray
    requests: tuple[ForgetSplit, ...]

    @property
    def num_clients(self) -> int:
        """Number of partitions, one per client."""
        return len(self.partitions)

    def request(self, request_id: str) -> ForgetSplit:
        """The resolved request ``request_id``; an unknown id raises ``KeyError`` listing the known ones."""
        for r in self.requests:
            if r.request_id == request_id:
                return r
        raise KeyError(f"no request {request_id!r}; known: {', '.join(r.request_id for r in self.requests)}")


def _subsample(n: int, cap: int | None, rng: np.random.Generator) -> np.ndarray:
    if cap is None or cap >= n:
        return np.arange(n, dtype=np.int64)
    return np.sort(rng.choice(n, size=cap, replace=False)).astype(np.int64)


def load_scenario_dataset(sc) -> DatasetPair:
    """Load the train and test arrays the scenario's ``data`` block names (its ``root`` resolved by
    :func:`resolve_data_root` against the scenario's folder; synthetic data from the scenario's seed).
    """
    d = sc.data
    s = d.synthetic
    base = Path(sc.path).parent if sc.path else None
    return load_dataset(
        d.dataset,
        resolve_data_root(d.root, base),
        download=d.download,
        checksums=d.checksums,
        synthetic=(sc.seed, s.num_train, s.num_test, s.num_classes, s.image_size, s.channels, s.noise),
        base_dir=base,
    )


def make_partitions(sc, labels: np.ndarray, pool: np.ndarray) -> list[np.ndarray]:
    """Partition the pool's samples among ``data.num_clients`` clients as the scenario says."""
    p = sc.data.partition
    rng = numpy_rng(sc.seed, "partition")
    sub = labels[pool]
    if p.kind == "iid":
        parts = iid(sub, sc.data.num_clients, rng)
    elif p.kind == "dirichlet":
        parts = dirichlet(sub, sc.data.num_clients, p.alpha, rng, min_size=p.min_size)
    else:
        parts = shards(sub, sc.data.num_clients, p.classes_per_client, rng)
    return [pool[q] for q in parts]


_PARTITION_FIELD = {"iid": "data.num_clients", "dirichlet": "data.partition", "shards": "data.partition"}


# Per-process memo: the driver and each client actor resolve a scenario once. Keyed by what the data depends on (the
# scenario itself is not hashable: its method parameter blocks are a dict).
_MEMO: dict[tuple, ScenarioData] = {}
_MEMO_SIZE = 4


def prepare(sc) -> ScenarioData:
    """Load the arrays and resolve the pool, partitions, test subset and requests of scenario ``sc``.

    Raises
    ------
    ScenarioDataError
        The scenario does not fit its data (see the module docstring); ``DataError`` when the data cannot be read.

    """
    key = (sc.seed, sc.data, sc.requests, sc.path)
    if key not in _MEMO:
        if len(_MEMO) >= _MEMO_SIZE:
            _MEMO.pop(next(iter(_MEMO)))
        _MEMO[key] = _prepare(sc)
    sd = _MEMO[key]
    check_attack_pools(sc, sd)  # depends on the attacks, which the memo key leaves out
    return sd


def _prepare(sc) -> ScenarioData:
    data = load_scenario_dataset(sc)
    pool = _subsample(len(data.train), sc.data.max_samples, numpy_rng(sc.seed, "train_pool"))
    test_idx = _subsample(len(data.test), sc.data.max_test_samples, numpy_rng(sc.seed, "test_pool"))
    try:
        parts = make_partitions(sc, data.train.labels, pool)
    except PartitionError as e:
        raise ScenarioDataError(_PARTITION_FIELD[sc.data.partition.kind], str(e)) from None
    _check_test_size(sc, test_idx)
    for i, r in enumerate(sc.requests):
        _check_request(sc, i, r, parts, data.train.labels)
    splits = tuple(
        resolve_request(
            rid,
            r.scope,
            parts,
            data.train.labels,
            seed=sc.seed,
            client=r.client,
            all_clients=r.clients == "all",
            classes=r.classes,
            fraction=r.fraction,
            count=r.count,
        )
        for rid, r in zip(sc.request_ids(), sc.requests)
    )
    _check_retained(sc, pool, splits)
    return ScenarioData(data, pool, tuple(parts), test_idx, splits)


# ----------------------------------------------------------------------------------------------------------------------
# what only the data can tell


def _classes_text(classes: np.ndarray) -> str:
    if len(classes) == 0:
        return "no class"
    return ("class " if len(classes) == 1 else "classes ") + ", ".join(str(int(c)) for c in classes)


def _names(indices: list[int]) -> str:
    shown = ", ".join(f"requests[{k}]" for k in indices[:3])
    return shown + (f" and {len(indices) - 3} more" if len(indices) > 3 else "")


def _check_test_size(sc, test_idx: np.ndarray) -> None:
    from fed_opc.config import min_test_samples

    need = min_test_samples(sc)
    if len(test_idx) < need:
        field = "data.max_test_samples" if sc.data.max_test_samples is not None else "data.dataset"
        raise ScenarioDataError(
            field, f"the held-out data has {len(test_idx)} sample(s); the evaluation and attacks need {need}"
        )


def _check_request(sc, i: int, r, parts: list[np.ndarray], labels: np.ndarray) -> None:
    """One request against the partitions: its classes are held, its fraction or count selects 1..all samples."""
    where = f"requests[{i}]"
    if r.scope == "class":
        held = np.unique(labels[np.concatenate(parts)] if r.clients == "all" else labels[parts[r.client]])
        for j, c in enumerate(r.classes):
            if c in held:
                continue
            if r.clients == "all":
                msg = f"no client holds a sample of class {c} (the training pool has {_classes_text(held)})"
            else:
                n = len(parts[r.client])
                msg = (
                    f"client {r.client} holds no sample of class {c} "
                    f"(its partition: {n} samples of {_classes_text(held)})"
                )
            raise ScenarioDataError(f"{where}.classes[{j}]", msg)
    elif r.scope == "samples":
        n = len(parts[r.client])
        if r.count is not None and r.count > n:
            raise ScenarioDataError(
                f"{where}.count", f"expected int <= {n} (client {r.client} holds {n} samples), got {r.count}"
            )
        if r.fraction is not None and int(round(r.fraction * n)) < 1:
            raise ScenarioDataError(
                f"{where}.fraction",
                f"selects no sample of client {r.client}'s {n} ({r.fraction:g} x {n} rounds to 0); "
                f"expected a fraction > {0.5 / n:.4g}, or a count",
            )


def _check_retained(sc, pool: np.ndarray, splits: tuple[ForgetSplit, ...]) -> None:
    """Served in round order, every request forgets something new and leaves some training data to retain."""
    gone = np.zeros(int(pool.max()) + 1 if len(pool) else 0, dtype=bool)
    order = sorted(range(len(splits)), key=lambda i: (sc.requests[i].round, i))
    served: list[int] = []
    for i in order:
        s = splits[i]
        if len(s.forget) and gone[s.forget].all():
            overlapping = [k for k in served if np.isin(splits[k].forget, s.forget).any()]
            raise ScenarioDataError(
                f"requests[{i}]",
                f"forgets nothing new: all its {s.n_forget} samples are forgotten before it, by {_names(overlapping)}",
            )
        gone[s.forget] = True
        served.append(i)
        if gone[pool].all():
            raise ScenarioDataError(
                f"requests[{i}]",
                f"with the requests served before it, all {len(pool)} training samples are forgotten: "
                "nothing is left to retain",
            )


def attacker_split(seed: int, test_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The held-out data in two seeded halves, as the attacks use it: calibration (the first ``len // 2`` of a seeded
    permutation) and the attacker's labelled pool (the rest).
    """
    idx = numpy_rng(seed, "attacks/test_split").permutation(test_idx)
    half = len(idx) // 2
    return np.sort(idx[:half]), np.sort(idx[half:])


def forgotten_classes(sc) -> list[int]:
    """The classes removed from every client (class requests with ``clients: all``), sorted: in class scope they leave
    the test set (TA, MIA), and the attacks read them out.
    """
    return sorted({int(c) for r in sc.requests if r.clients == "all" for c in r.classes})


def check_attack_pools(sc, sd: ScenarioData) -> None:
    """``forget_probe`` reads out every forgotten class (of ``clients: all`` requests, two or more) from the attacker's
    labelled pool: each must have a sample there.
    """
    if "forget_probe" not in sc.attacks.recovery:
        return
    forgotten = forgotten_classes(sc)
    if len(forgotten) < 2:
        return
    _, pool = attacker_split(sc.seed, sd.test_idx)
    missing = sorted(set(forgotten) - set(sd.data.test.labels[pool].tolist()))
    if missing:
        field = "data.max_test_samples" if sc.data.max_test_samples is not None else "attacks.recovery"
        raise ScenarioDataError(
            field,
            f"the attacker's half of the held-out data ({len(pool)} samples) holds no sample of forgotten "
            f"class(es) {', '.join(map(str, missing))}, which forget_probe needs; use more held-out samples",
        )
