"""Atomic, integrity-checked files: checkpoints (tensors + plain data) and JSON.

A checkpoint file is one header line ``FEDOPC-CKPT 1 <sha256 of payload>`` followed by a ``torch.save`` payload. It is
written to a temporary file in the same folder, flushed to disk and renamed over the target, so a reader sees either
the old file or the new one, never a partial one. Loading checks the hash before unpickling and unpickles with
``torch.load(weights_only=True)``, which accepts tensors, dicts, lists, strings and numbers only.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

MAGIC = b"FEDOPC-CKPT 1 "


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, corrupted or not a fed-opc checkpoint."""


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | Path, obj: dict[str, Any]) -> None:
    """Write ``obj`` (tensors, dicts, lists, str, numbers) to ``path`` atomically with an integrity hash."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    payload = buf.getvalue()
    header = MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n"
    _write_atomic(Path(path), header + payload)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; raise ``CheckpointError`` if it is not intact."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{p}: cannot read ({e.strerror or e})") from None
    nl = raw.find(b"\n")
    if not raw.startswith(MAGIC) or nl != len(MAGIC) + 64:
        raise CheckpointError(f"{p}: not a fed-opc checkpoint (bad header)")
    expected = raw[len(MAGIC) : nl].decode()
    payload = raw[nl + 1 :]
    if hashlib.sha256(payload).hexdigest() != expected:
        raise CheckpointError(f"{p}: corrupted or truncated (sha256 mismatch)")
    try:
        return torch.load(io.BytesIO(payload), weights_only=True, map_location="cpu")
    except Exception as e:  # a hash match with an unloadable payload means it was written wrong
        raise CheckpointError(f"{p}: unreadable payload ({e.__class__.__name__})") from None


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically (sorted keys off, indented, NaN refused)."""
    text = json.dumps(obj, indent=2, allow_nan=False) + "\n"
    _write_atomic(Path(path), text.encode())


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) atomically: to a temporary file in the same folder, then renamed over ``path``."""
    _write_atomic(Path(path), text.encode())
