"""The ledger of deletion requests (``checkpoints/ledger.json``): which method served which request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fed_opc.checkpoint import CheckpointError, write_json


class Ledger:
    """The deletion requests and their status, per method; saved atomically on every change.

    A request is ``pending`` until a method starts serving it, ``unlearning`` while methods serve it, and ``done`` when
    every method of the run has served it. ``methods[m]`` records ``unlearning`` / ``done`` for method ``m``.
    """

    def __init__(self, path: Path, request_ids: list[str], methods: list[str]) -> None:
        self.path = path
        self.methods = methods
        self.entries: dict[str, dict[str, Any]] = {r: {"status": "pending", "methods": {}} for r in request_ids}

    @classmethod
    def load_or_new(cls, path: Path, request_ids: list[str], methods: list[str]) -> Ledger:
        """The ledger saved at ``path`` (a resumed run), else a new one with every request pending; a saved ledger that
        is damaged or holds other requests raises ``CheckpointError``.
        """
        led = cls(path, request_ids, methods)
        if path.is_file():
            try:
                saved = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise CheckpointError(f"{path}: corrupted ledger ({e.msg})") from None
            entries = saved.get("requests") if isinstance(saved, dict) else None
            if not isinstance(entries, dict) or not all(
                isinstance(e, dict) and isinstance(e.get("status"), str) and isinstance(e.get("methods"), dict)
                for e in entries.values()
            ):
                raise CheckpointError(f"{path}: corrupted ledger (not a fed-opc request ledger)")
            if sorted(entries) != sorted(request_ids):
                raise CheckpointError(f"{path}: the ledger holds other requests; run without --resume")
            led.entries = entries
        return led

    def save(self) -> None:
        """Write the ledger to ``path`` atomically."""
        write_json(self.path, {"requests": self.entries})

    def mark(self, request_ids: list[str], method: str, status: str) -> None:
        """Record ``status`` for ``method`` on each of ``request_ids`` (a request is ``done`` once every method is),
        then save.
        """
        for r in request_ids:
            e = self.entries[r]
            e["methods"][method] = status
            done = all(e["methods"].get(m) == "done" for m in self.methods)
            e["status"] = "done" if done else "unlearning"
        self.save()

    def done(self, method: str) -> bool:
        """Whether ``method`` has served every request (False when there are none)."""
        return bool(self.entries) and all(e["methods"].get(method) == "done" for e in self.entries.values())
