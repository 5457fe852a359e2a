"""Every environment variable fed-opc reads, in one place.

The scenario file is the source of every setting that changes results; the environment only says where things are on
this machine, because that differs between the driver and each node of a Ray cluster or a deployed federation (a node
resolves its own data root):

- ``FED_OPC_DATA_ROOT``: the dataset folder when a scenario's ``data.root`` is null (default ``~/.cache/fed_opc/data``);
- ``FED_OPC_DATA_CHECKSUMS``: the CIFAR-10 checksum manifest when ``data.checksums`` is null (default: the official
  checksums);
- ``FED_OPC_CACHE_DIR``: the pretrained-model cache and the decoded datasets (default ``~/.cache/fed_opc``).
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ROOT = "FED_OPC_DATA_ROOT"
DATA_CHECKSUMS = "FED_OPC_DATA_CHECKSUMS"
CACHE_DIR = "FED_OPC_CACHE_DIR"


def _path(var: str, default: Path) -> Path:
    value = os.environ.get(var)
    return Path(value).expanduser() if value else default


def data_root() -> Path:
    """``$FED_OPC_DATA_ROOT`` if set, else ``~/.cache/fed_opc/data``."""
    return _path(DATA_ROOT, Path.home() / ".cache" / "fed_opc" / "data")


def data_checksums() -> str | None:
    """``$FED_OPC_DATA_CHECKSUMS`` if set and not empty, else None."""
    return os.environ.get(DATA_CHECKSUMS) or None


def cache_dir() -> Path:
    """``$FED_OPC_CACHE_DIR`` if set, else ``~/.cache/fed_opc``."""
    return _path(CACHE_DIR, Path.home() / ".cache" / "fed_opc")
