"""The pretraining cache: FL pretraining results stored under a key of everything they depend on.

The key hashes the training data's bytes, the partition and data settings, the model, the federation's training
settings, the seed, the number of pretraining rounds, the device type, and the code of the training path (its syntax
trees: comments, docstrings and formatting do not count). Any change to one of these gives a new key; settings that
cannot change the numbers (the engine backend, Ray's address, timeouts, output paths, unlearning and attack settings)
are left out, so e.g. a Ray run reuses an in-process run's model. The cache lives in ``$FED_OPC_CACHE_DIR`` (default
``~/.cache/fed_opc``).
"""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

import fed_opc
from fed_opc import environment
from fed_opc.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from fed_opc.data.scenario_data import ScenarioData
from fed_opc.schema import to_dict

REPO_ROOT = Path(fed_opc.__file__).resolve().parents[1]
# Source files whose code decides the numbers of FL pretraining.
TRAINING_PATH = (
    "fed_opc/train.py",
    "fed_opc/losses.py",
    "fed_opc/client_app.py",
    "fed_opc/rng.py",
    "fed_opc/flower.py",
    "fed_opc/models/*.py",
    "fed_opc/data/*.py",
    "strategies/fedavg.py",
    "strategies/training.py",
)


def code_fingerprint() -> str:
    """SHA-256 of the paths and syntax trees (``code_tree``) of the ``TRAINING_PATH`` source files: a change to what
    the training code does, or a moved file, is a new cache key; comments, docstrings and formatting are not.
    """
    h = hashlib.sha256()
    for pattern in TRAINING_PATH:
        for f in sorted(REPO_ROOT.glob(pattern)):
            h.update(str(f.relative_to(REPO_ROOT)).encode())
            h.update(code_tree(f.read_text()).encode())
    return h.hexdigest()


def code_tree(source: str) -> str:
    """``ast.dump`` of ``source`` with every module, class and function docstring removed (no line numbers)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                if isinstance(body[0].value.value, str):
                    node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def data_fingerprint(sd: ScenarioData) -> str:
    """Hash of the training and test arrays actually loaded (so a different copy of a dataset is a different key)."""
    h = hashlib.sha256()
    for arr in (sd.data.train.images, sd.data.train.labels, sd.data.test.images, sd.data.test.labels):
        h.update(str(arr.shape).encode())
        h.update(np.ascontiguousarray(arr).data)
    return h.hexdigest()


def pretrain_key(sc, sd: ScenarioData, rounds: int, device: str = "cpu", execution: bool = True) -> str:
    """The cache key of FL pretraining for ``rounds`` rounds of ``sc``.

    ``execution=False`` leaves out the settings a resumed run may change (client resources, i.e. thread counts), for
    checking that a checkpoint belongs to the same run.
    """
    fed = sc.federation
    parts: dict[str, Any] = {
        "seed": sc.seed,
        "rounds": rounds,
        "device": device,
        "data": to_dict(sc.data) | {"root": None, "download": None, "checksums": None},
        "data_bytes": data_fingerprint(sd),
        "model": to_dict(sc.model),
        "edge": _edge_part(sc),
        "federation": {
            k: getattr(fed, k)
            for k in (
                "clients_per_round",
                "local_epochs",
                "batch_size",
                "lr",
                "momentum",
                "weight_decay",
                "evaluate_every",
            )
        }
        | ({"num_cpus": fed.client_resources.num_cpus} if execution else {})
        | {"server_threads": fed.server_threads},
        "code": code_fingerprint(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _edge_part(sc) -> dict[str, Any] | None:
    """Availability and device settings decide who trains when (and the trace file's bytes, not its path)."""
    fed = sc.federation
    if fed.availability.kind == "always" and not fed.devices.profiles:
        return None  # the same key as before these settings existed
    part: dict[str, Any] = {"availability": to_dict(fed.availability), "devices": to_dict(fed.devices)}
    if fed.availability.kind == "trace":
        base = Path(sc.path).parent if sc.path else Path()
        p = Path(fed.availability.file)
        part["availability"]["file"] = hashlib.sha256((p if p.is_absolute() else base / p).read_bytes()).hexdigest()
    return part


def cache_path(key: str, interval: int = 0) -> Path:
    """The model entry (``interval`` 0), or the client-update history stored every ``interval`` rounds."""
    name = f"{key}.ckpt" if not interval else f"{key}.updates-{interval}.ckpt"
    return environment.cache_dir() / "pretrain" / name


def load_pretrained(key: str, interval: int = 0) -> dict[str, Any] | None:
    """The cached pretraining result for ``key`` (with the update history if ``interval``), or None.

    A damaged entry is ignored and replaced later; an entry without the requested history is a miss (pretraining is
    deterministic, so running it again gives the same model plus the history).
    """
    try:
        entry = load_checkpoint(cache_path(key)) if cache_path(key).is_file() else None
        if entry is None:
            return None
        if interval:
            if not cache_path(key, interval).is_file():
                return None
            entry["updates"] = load_checkpoint(cache_path(key, interval))["updates"]
        return entry
    except CheckpointError:
        return None


def save_pretrained(key: str, entry: dict[str, Any], interval: int = 0) -> Path:
    """Store a pretraining ``entry`` under ``key`` and return the model entry's path; with ``interval``, its ``updates``
    (the client-update history) go to their own file, otherwise they are not stored.
    """
    entry = dict(entry)
    updates = entry.pop("updates", None)
    p = cache_path(key)
    save_checkpoint(p, entry)
    if interval and updates is not None:
        save_checkpoint(cache_path(key, interval), {"updates": updates})
    return p
