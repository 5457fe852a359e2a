"""Torch's intra-op thread count (and the BLAS libraries'), set for the extent of a stage and restored after it.

Results of torch's CPU kernels depend on the number of threads (measured: a max weight difference of 7e-4 after one
epoch between 1 and 2 threads), so every stage sets the count the scenario determines instead of inheriting whatever
an earlier stage of the same process left behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from threadpoolctl import threadpool_limits  # installed with scikit-learn


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the ``with`` block with ``n`` torch threads, then restore the previous count (also on an exception)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def compute_threads(n: int) -> Iterator[None]:
    """:func:`torch_threads` and the BLAS / OpenMP pools that numpy and scikit-learn use (threadpoolctl), all at ``n``
    for the ``with`` block, then restored: the evaluation's numpy and scikit-learn work (the MIA's SVC, CKA) then runs
    on the threads the scenario sets, not on as many as the machine has.
    """
    with torch_threads(n), threadpool_limits(limits=int(n)):
        yield
