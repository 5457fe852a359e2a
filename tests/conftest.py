"""Shared fixtures. Real datasets come from a data root ($FED_OPC_DATA_ROOT, else ../shared/data); nothing is downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
REPO = Path(__file__).resolve().parents[1]
_fallback = REPO.parent / "shared" / "data"
if "FED_OPC_DATA_ROOT" not in os.environ and _fallback.is_dir():
    os.environ["FED_OPC_DATA_ROOT"] = str(_fallback)
# The shared CIFAR-10 copy was rebuilt offline: it is accepted through its manifest (official sums are tried first).
os.environ.setdefault("FED_OPC_DATA_CHECKSUMS", "cifar10-offline-rebuild")
# Keep caches of test runs out of the user's cache.
os.environ.setdefault("FED_OPC_CACHE_DIR", str(Path(os.environ.get("TMPDIR", "/tmp")) / "fed_opc_test_cache"))


def _root() -> Path | None:
    env = os.environ.get("FED_OPC_DATA_ROOT")
    return Path(env) if env else None


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = _root()
    if root is None or not (root / "cifar-10-batches-py").is_dir():
        pytest.skip("no CIFAR-10 under $FED_OPC_DATA_ROOT (set it to a folder in torchvision's layout)")
    return root


@pytest.fixture(scope="session")
def cifar10(data_root):
    from fed_opc.data import load_dataset

    return load_dataset("cifar10", data_root, checksums="cifar10-offline-rebuild")


@pytest.fixture(scope="session")
def synthetic():
    from fed_opc.data import load_dataset

    return load_dataset("synthetic", synthetic=(0, 600, 200, 4, 8, 3, 0.2))
