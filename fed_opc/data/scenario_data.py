"""Everything a scenario's data section resolves to: arrays, the training pool, partitions and forget splits.

``prepare(scenario)`` is cheap after the first call in a process (the arrays are memoised by ``load_dataset`` and the
index arrays are small), so the driver and every client actor call it and get identical partitions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fed_opc.data.datasets import DatasetPair, load_dataset
from fed_opc.data.forget import ForgetSplit, resolve_request
from fed_opc.data.partition import dirichlet, iid, shards
from fed_opc.rng import numpy_rng


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
        return len(self.partitions)

    def request(self, request_id: str) -> ForgetSplit:
        for r in self.requests:
            if r.request_id == request_id:
                return r
        raise KeyError(f"no request {request_id!r}; known: {', '.join(r.request_id for r in self.requests)}")


def _subsample(n: int, cap: int | None, rng: np.random.Generator) -> np.ndarray:
    if cap is None or cap >= n:
        return np.arange(n, dtype=np.int64)
    return np.sort(rng.choice(n, size=cap, replace=False)).astype(np.int64)


def load_scenario_dataset(sc) -> DatasetPair:
    d = sc.data
    s = d.synthetic
    base = Path(sc.path).parent if sc.path else None
    root = d.root
    if root is not None and base is not None and not Path(root).expanduser().is_absolute() and (base / root).exists():
        root = str(base / root)
    return load_dataset(
        d.dataset,
        root,
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


# Per-process memo: the driver and each client actor resolve a scenario once. Keyed by what the data depends on (the
# scenario itself is not hashable: its method parameter blocks are a dict).
_MEMO: dict[tuple, ScenarioData] = {}
_MEMO_SIZE = 4


def prepare(sc) -> ScenarioData:
    """Load the arrays and resolve the pool, partitions, test subset and requests of scenario ``sc``."""
    key = (sc.seed, sc.data, sc.requests, sc.path)
    if key not in _MEMO:
        if len(_MEMO) >= _MEMO_SIZE:
            _MEMO.pop(next(iter(_MEMO)))
        _MEMO[key] = _prepare(sc)
    return _MEMO[key]


def _prepare(sc) -> ScenarioData:
    data = load_scenario_dataset(sc)
    pool = _subsample(len(data.train), sc.data.max_samples, numpy_rng(sc.seed, "train_pool"))
    test_idx = _subsample(len(data.test), sc.data.max_test_samples, numpy_rng(sc.seed, "test_pool"))
    parts = make_partitions(sc, data.train.labels, pool)
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
    return ScenarioData(data, pool, tuple(parts), test_idx, splits)
