"""Decoded datasets on disk, verified once and shared by every process of the machine.

The first process that loads CIFAR-10 or MNIST from a data folder checks the files' md5 sums (``datasets.py``),
decodes them and writes the arrays as ``.npy`` files into ``<cache dir>/arrays/<dataset>-<key>/``. Every later process
(the driver, each Ray actor, the next run) maps those files read-only (``np.load(mmap_mode="r")``): the operating
system's page cache then holds one copy of the images for all of them, and neither the md5 check (about 1 s for
CIFAR-10's 180 MB) nor the decoding (about 2 s) is repeated. ``benchmarks/data_load.py`` measures it.

An entry is named by a hash of what its verification vouched for: the dataset, the resolved data folder, the
checksum manifest's content (if any) and each source file's name, size and modification time. A file changed since
(another size or time) leads to another entry, verified afresh; a file altered in place with its size and modification
time restored would not be noticed, the price of not hashing 180 MB in every process. An entry is written to a
temporary folder and renamed into place, so a reader never sees half of one and two processes racing to write the same
entry both end with a complete one. A cache folder that cannot be written is no error: the arrays then stay in this
process's memory, as before, with one warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger("fed_opc")

ENTRY_VERSION = 1  # bump when the layout of an entry changes
_SPLITS = ("train", "test")


def entry_key(dataset: str, folder: Path, sources: Sequence[Path], manifest: Path | None) -> str:
    """The hash that names a cache entry: dataset, folder, manifest content and each source file's name, size and
    modification time (nanoseconds).
    """
    h = hashlib.sha256(f"v{ENTRY_VERSION}\0{dataset}\0{folder.resolve()}\0".encode())
    h.update(manifest.read_bytes() if manifest is not None else b"official")
    for p in sorted(sources):
        st = p.stat()
        h.update(f"\0{p.name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def read_entry(entry: Path, make: Callable[..., object]) -> object | None:
    """The dataset pair stored in ``entry`` (images memory-mapped, labels read), or None when there is none."""
    meta_path = entry / "meta.json"
    try:
        if not meta_path.is_file():
            return None
    except OSError as e:  # a cache folder this user may not search: the data is read without the cache
        log.warning("dataset cache %s not readable (%s); reading the files", entry.parent, e)
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("version") != ENTRY_VERSION:
            return None
        splits = {
            s: make(
                f"{meta['dataset']}-{s}",
                np.load(entry / f"{s}_images.npy", mmap_mode="r"),
                np.load(entry / f"{s}_labels.npy"),
                tuple(meta["classes"]),
                tuple(meta["mean"]),
                tuple(meta["std"]),
            )
            for s in _SPLITS
        }
    except (OSError, ValueError, KeyError) as e:  # a damaged entry is rebuilt, never trusted
        log.warning("dataset cache entry %s unreadable (%s); decoding the files again", entry, e)
        return None
    return splits


def write_entry(entry: Path, dataset: str, splits: dict) -> bool:
    """Write ``splits`` (split -> ArrayDataset) as ``entry``; False (with a warning) when the cache cannot be written."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    except OSError as e:
        log.warning("dataset cache %s not writable (%s); the arrays stay in this process", entry.parent, e)
        return False
    try:
        first = splits[_SPLITS[0]]
        for s in _SPLITS:
            np.save(tmp / f"{s}_images.npy", np.ascontiguousarray(splits[s].images))
            np.save(tmp / f"{s}_labels.npy", np.asarray(splits[s].labels))
        meta = {
            "version": ENTRY_VERSION,
            "dataset": dataset,
            "classes": list(first.classes),
            "mean": list(first.mean),
            "std": list(first.std),
        }
        (tmp / "meta.json").write_text(json.dumps(meta))  # last: an entry with meta.json is complete
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; an entry is as readable as any cache file
        os.rename(tmp, entry)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if (entry / "meta.json").is_file():  # another process wrote the same entry first
            return True
        log.warning("dataset cache entry %s not written (%s); the arrays stay in this process", entry, e)
        return False
    return True
