"""Seeded random generators derived from (seed, purpose, round, client).

Every random choice in fed-opc draws from a generator made here. Each generator is a pure function of the scenario seed
and a purpose string plus optional round and client numbers, so two parts of a run never share a stream by accident and
a resumed run draws exactly what an uninterrupted run would have drawn. Nothing here touches the global RNGs of
``random``, ``numpy`` or ``torch``.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

_MASK63 = (1 << 63) - 1


def derive_seed(seed: int, purpose: str, round: int = 0, client: int = 0) -> int:
    """Return a 63-bit seed that depends on every argument.

    Parameters
    ----------
    seed : int
        The scenario seed.
    purpose : str
        What the stream is for, e.g. ``"partition"`` or ``"sample_clients"``.
    round, client : int
        Round number and partition id, when the stream is per round or per client.

    """
    text = f"{int(seed)}|{purpose}|{int(round)}|{int(client)}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") & _MASK63


def numpy_rng(seed: int, purpose: str, round: int = 0, client: int = 0) -> np.random.Generator:
    """A numpy ``Generator`` for one (seed, purpose, round, client)."""
    return np.random.default_rng(derive_seed(seed, purpose, round, client))


def torch_rng(
    seed: int, purpose: str, round: int = 0, client: int = 0, device: str | torch.device = "cpu"
) -> torch.Generator:
    """A torch ``Generator`` for one (seed, purpose, round, client), on ``device``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, purpose, round, client))
    return gen
