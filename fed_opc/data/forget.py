"""Deletion requests resolved to index arrays, and the guard that keeps forgotten samples out of training.

Forget and retain sets are always index arrays into the shared training arrays; no label is ever rewritten to mark
membership.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fed_opc.rng import numpy_rng


class ForgottenDataError(RuntimeError):
    """Training or unlearning code tried to read a sample that a served deletion request removed."""


@dataclass(frozen=True, eq=False)
class ForgetSplit:
    """One deletion request resolved against the partitions.

    Attributes
    ----------
    request_id : the request's id (``r0``, ``r1``, ... unless the scenario names it).
    scope : ``client``, ``class`` or ``samples``.
    clients : partition ids that hold forget data (the requester; every holder for ``clients: all``).
    classes : forgotten classes for class scope, else empty.
    forget : sorted global train indices to forget.
    client_forget : per holder, its forget indices.
    client_retain : per holder, its remaining indices (empty for client scope).
    retain : every other training index of the federation (the pool minus ``forget``).

    """

    request_id: str
    scope: str
    clients: tuple[int, ...]
    classes: tuple[int, ...]
    forget: np.ndarray
    client_forget: Mapping[int, np.ndarray]
    client_retain: Mapping[int, np.ndarray]
    retain: np.ndarray

    @property
    def n_forget(self) -> int:
        """Number of samples to forget."""
        return int(len(self.forget))


def resolve_request(
    request_id: str,
    scope: str,
    partitions: Sequence[np.ndarray],
    labels: np.ndarray,
    *,
    seed: int,
    client: int | None = None,
    all_clients: bool = False,
    classes: Sequence[int] = (),
    fraction: float | None = None,
    count: int | None = None,
) -> ForgetSplit:
    """Resolve one deletion request into a ``ForgetSplit``.

    ``scope="client"`` forgets all of ``client``'s data; ``scope="class"`` forgets its samples of ``classes`` (or every
    client's with ``all_clients``); ``scope="samples"`` forgets a seeded random ``fraction`` or ``count`` of its data.
    """
    holders = list(range(len(partitions))) if all_clients else [int(client)]  # type: ignore[arg-type]
    client_forget: dict[int, np.ndarray] = {}
    client_retain: dict[int, np.ndarray] = {}
    for c in holders:
        part = partitions[c]
        if scope == "client":
            f = part
        elif scope == "class":
            f = part[np.isin(labels[part], np.asarray(classes, dtype=np.int64))]
        elif scope == "samples":
            k = int(count) if count is not None else int(round(float(fraction) * len(part)))  # type: ignore[arg-type]
            if not 1 <= k <= len(part):
                raise ValueError(f"request {request_id}: {k} samples asked of client {c}, which holds {len(part)}")
            f = np.sort(numpy_rng(seed, f"forget_samples/{request_id}", client=c).choice(part, size=k, replace=False))
        else:
            raise ValueError(f"unknown scope {scope!r}")
        if len(f) == 0:
            if all_clients:
                continue
            raise ValueError(f"request {request_id}: client {c} holds no samples of classes {list(classes)}")
        client_forget[c] = np.sort(f).astype(np.int64)
        client_retain[c] = np.setdiff1d(part, f).astype(np.int64)
    if not client_forget:
        raise ValueError(f"request {request_id}: no client holds samples of classes {list(classes)}")
    forget = np.sort(np.concatenate(list(client_forget.values()))).astype(np.int64)
    pool = np.sort(np.concatenate(list(partitions)))
    return ForgetSplit(
        request_id=request_id,
        scope=scope,
        clients=tuple(sorted(client_forget)),
        classes=tuple(int(c) for c in classes) if scope == "class" else (),
        forget=forget,
        client_forget=client_forget,
        client_retain=client_retain,
        retain=np.setdiff1d(pool, forget).astype(np.int64),
    )


def union_forget(splits: Iterable[ForgetSplit]) -> np.ndarray:
    """Sorted union of the forget indices of several requests."""
    arrays = [s.forget for s in splits]
    return np.unique(np.concatenate(arrays)).astype(np.int64) if arrays else np.zeros(0, dtype=np.int64)


class GuardedDataset:
    """A training view of an ``ArrayDataset`` that refuses to read forgotten indices.

    Every training and unlearning path reads samples through ``tensors``; after a request is served its forget indices
    are added with ``forbid``, and any later read of one raises ``ForgottenDataError``. Reads that are allowed to see
    forget data (ground-truth metrics, the requester's own contraction while the request is being served) go through
    ``allow_forget`` explicitly.
    """

    def __init__(self, dataset, forbidden: np.ndarray | None = None) -> None:
        self.dataset = dataset
        self._mask = np.zeros(len(dataset), dtype=bool)
        if forbidden is not None:
            self._mask[np.asarray(forbidden, dtype=np.int64)] = True

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def labels(self) -> np.ndarray:
        """Labels of every sample, forgotten ones included (only reads of samples through ``tensors`` are guarded)."""
        return self.dataset.labels

    @property
    def num_classes(self) -> int:
        """Number of classes of the underlying dataset."""
        return self.dataset.num_classes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one model input, as in the underlying dataset."""
        return self.dataset.image_shape

    @property
    def forbidden(self) -> np.ndarray:
        """The forbidden indices, sorted."""
        return np.flatnonzero(self._mask)

    def forbid(self, idx: np.ndarray) -> None:
        """Add ``idx`` to the forbidden indices (a served request's forget samples); nothing is allowed again."""
        self._mask[np.asarray(idx, dtype=np.int64)] = True

    def check(self, idx: np.ndarray) -> None:
        """Raise ``ForgottenDataError`` when any of ``idx`` is forbidden."""
        idx = np.asarray(idx, dtype=np.int64)
        bad = self._mask[idx]
        if bad.any():
            raise ForgottenDataError(
                f"read of {int(bad.sum())} forgotten sample(s) refused (first index {int(idx[bad][0])})"
            )

    def tensors(self, idx: np.ndarray, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images (B, C, H, W) and labels of ``idx`` on ``device``, once :meth:`check` lets them through."""
        self.check(idx)
        return self.dataset.tensors(idx, device)

    def allow_forget(self):
        """The unguarded dataset, for reads that may legitimately see forget samples."""
        return self.dataset
