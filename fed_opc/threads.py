"""Torch's intra-op thread count, set for the extent of a stage and restored after it.

Results of torch's CPU kernels depend on the number of threads (measured: a max weight difference of 7e-4 after one
epoch between 1 and 2 threads), so every stage sets the count the scenario determines instead of inheriting whatever
an earlier stage of the same process left behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the ``with`` block with ``n`` torch threads, then restore the previous count (also on an exception)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(previous)
