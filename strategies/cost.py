"""``Cost``: what a method (or a stage of one) sent and computed, added up with ``+``.

One type for every cost on the server side: a federated method's serve function returns one, its stage adds the
stages of its world into one, a centralized method's is built from its sample count, and the run writes its
``results.json`` ``cost`` block with :meth:`Cost.results`. Checkpoints hold :meth:`Cost.to_dict` (plain numbers, as
``torch.load(weights_only=True)`` accepts), read back by :meth:`Cost.from_dict`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

# what an exchange of messages meters (``strategies.fedavg.CostMeter.as_dict()``, a serve function's exchange)
_METERED = ("client_samples", "bytes_up", "bytes_down", "messages", "failures")
# results.json's cost block, in order; ``failures`` only where clients take part
_RESULTS = ("rounds", "client_samples", "bytes_up", "bytes_down", "server_storage_bytes", "failures")


@dataclass(frozen=True)
class Cost:
    """Rounds, client work, payload bytes, server storage, messages and failed client replies.

    ``Cost()`` is the zero; ``a + b`` adds field by field.
    """

    rounds: int = 0
    client_samples: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    server_storage_bytes: int = 0
    messages: int = 0
    failures: int = 0

    def __add__(self, other: Cost) -> Cost:
        if not isinstance(other, Cost):
            return NotImplemented
        return Cost(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    @classmethod
    def metered(cls, meter: Mapping[str, int], rounds: int = 0) -> Cost:
        """The cost of ``rounds`` rounds that exchanged what ``meter`` counted (its other keys are ignored)."""
        return cls(rounds=rounds, **{k: int(meter.get(k, 0)) for k in _METERED})

    def to_dict(self) -> dict[str, int]:
        """Every field, for a checkpoint."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, int]) -> Cost:
        """A cost from :meth:`to_dict`'s dict; a missing field is zero, other keys (a stage's ``wall_s``) are ignored."""
        return cls(**{f.name: d.get(f.name, 0) for f in fields(cls)})

    def results(self, setting: str) -> dict[str, int]:
        """The ``cost`` block of ``results.json``; a centralized method's has no ``failures`` (no client took part)."""
        keys = _RESULTS if setting == "federated" else _RESULTS[:-1]
        return {k: getattr(self, k) for k in keys}
