"""Split a labelled training set among clients: IID, Dirichlet over labels, or k-class shards.

Every function is deterministic given its ``numpy.random.Generator``, assigns every sample to exactly one client,
and returns one sorted int64 index array per client (partition id = list position). An impossible request (more
clients than samples, a Dirichlet draw that keeps leaving a client empty) raises ``PartitionError``.
"""

from __future__ import annotations

import numpy as np


class PartitionError(ValueError):
    """The requested partition cannot be made from these labels."""


def iid(labels: np.ndarray, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle and deal the samples into ``num_clients`` near-equal parts."""
    n = len(labels)
    if num_clients > n:
        raise PartitionError(f"iid: {num_clients} clients but only {n} samples")
    perm = rng.permutation(n)
    return [np.sort(p).astype(np.int64) for p in np.array_split(perm, num_clients)]


def dirichlet(
    labels: np.ndarray,
    num_clients: int,
    alpha: float,
    rng: np.random.Generator,
    min_size: int = 1,
    max_tries: int = 1000,
) -> list[np.ndarray]:
    """Label-skewed split: for each class, client shares are drawn from Dirichlet(alpha * 1).

    Small ``alpha`` gives each client few classes; large ``alpha`` approaches IID. As in Hsu et al. (2019) and the
    FedLab / Flower-datasets implementations, the draw is repeated until every client holds at least ``min_size``
    samples.
    """
    n = len(labels)
    if num_clients * min_size > n:
        raise PartitionError(f"dirichlet: {num_clients} clients x min_size {min_size} exceeds {n} samples")
    classes = np.unique(labels)
    by_class = [np.flatnonzero(labels == c) for c in classes]
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for idx in by_class:
            idx = rng.permutation(idx)
            p = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(p)[:-1] * len(idx)).astype(np.int64)
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].append(chunk)
        out = [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]
        if min(len(o) for o in out) >= min_size:
            return out
    raise PartitionError(
        f"dirichlet: no draw in {max_tries} tries gave every one of {num_clients} clients >= {min_size} samples; "
        f"raise alpha or lower num_clients"
    )


def shards(labels: np.ndarray, num_clients: int, classes_per_client: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Pathological non-IID split (McMahan et al., 2017): sort by label, cut into ``num_clients * k`` shards, deal k.

    Each client gets ``classes_per_client`` label-contiguous shards, so it holds at most that many classes (fewer
    when two of its shards fall in one class, or more when a shard straddles a class boundary).
    """
    n = len(labels)
    n_shards = num_clients * classes_per_client
    if n_shards > n:
        raise PartitionError(f"shards: {num_clients} clients x {classes_per_client} shards exceeds {n} samples")
    # shuffle within each class first, so which samples of a class land in which shard is random too
    order = rng.permutation(n)
    order = order[np.argsort(labels[order], kind="stable")]
    pieces = np.array_split(order, n_shards)
    assign = rng.permutation(n_shards)
    return [
        np.sort(
            np.concatenate([pieces[s] for s in assign[k * classes_per_client : (k + 1) * classes_per_client]])
        ).astype(np.int64)
        for k in range(num_clients)
    ]


def label_counts(labels: np.ndarray, parts: list[np.ndarray], num_classes: int) -> np.ndarray:
    """(num_clients, num_classes) matrix of how many samples of each class each client holds."""
    return np.stack([np.bincount(labels[p], minlength=num_classes) for p in parts])
