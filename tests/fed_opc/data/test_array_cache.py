"""The decoded-array cache: CIFAR-10 / MNIST verified and decoded once per entry, then memory-mapped by every process."""

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import fed_opc.data.datasets as datasets
from fed_opc.data import load_dataset


@pytest.fixture
def mnist_copy(data_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(data_root / "MNIST", root / "MNIST")
    return root


def _no_decoding(monkeypatch):
    """Fail the test if the files are checked or decoded again."""

    def refuse(*a, **kw):
        raise AssertionError("the files were verified and decoded again")

    monkeypatch.setattr(datasets, "_read_idx", refuse)


def test_second_load_maps_the_entry_without_verifying_again(mnist_copy, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = load_dataset("mnist", mnist_copy, cache_dir=cache)
    (entry,) = (cache / "arrays").iterdir()
    assert entry.name.startswith("mnist-") and sorted(p.name for p in entry.iterdir()) == [
        "meta.json",
        "test_images.npy",
        "test_labels.npy",
        "train_images.npy",
        "train_labels.npy",
    ]
    assert isinstance(first.train.images, np.memmap)  # even the process that wrote the entry maps it
    datasets._load_cached.cache_clear()  # as a new process
    _no_decoding(monkeypatch)
    again = load_dataset("mnist", mnist_copy, cache_dir=cache)
    assert isinstance(again.train.images, np.memmap) and not again.train.images.flags.writeable
    assert again.train.images.shape == (60000, 28, 28, 1) and again.test.images.shape == (10000, 28, 28, 1)
    assert np.array_equal(again.train.images, first.train.images)
    assert np.array_equal(again.train.labels, first.train.labels) and again.train.labels.dtype == np.int64
    assert again.train.name == "mnist-train" and again.train.mean == (0.1307,) and again.train.classes[3] == "3"
    # what the loader gives without the cache: the same arrays
    monkeypatch.undo()
    plain = datasets._load_mnist(mnist_copy, download=False)
    assert np.array_equal(plain.train.images, again.train.images) and np.array_equal(
        plain.test.labels, again.test.labels
    )


def test_a_changed_file_is_a_new_entry_verified_afresh(mnist_copy, tmp_path):
    cache = tmp_path / "cache"
    load_dataset("mnist", mnist_copy, cache_dir=cache)
    f = mnist_copy / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(f.read_bytes())
    raw[-1] ^= 1  # one flipped bit in the compressed labels: same size, a new modification time
    f.write_bytes(bytes(raw))
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 1_000_000_000))
    datasets._load_cached.cache_clear()
    with pytest.raises(datasets.DataError):
        load_dataset("mnist", mnist_copy, cache_dir=cache)
    assert len(list((cache / "arrays").iterdir())) == 1  # the failed check wrote nothing


def test_a_damaged_entry_is_rebuilt(mnist_copy, tmp_path, caplog):
    cache = tmp_path / "cache"
    load_dataset("mnist", mnist_copy, cache_dir=cache)
    (entry,) = (cache / "arrays").iterdir()
    (entry / "train_images.npy").write_bytes(b"not an array")
    datasets._load_cached.cache_clear()
    with caplog.at_level(logging.WARNING, logger="fed_opc"):
        again = load_dataset("mnist", mnist_copy, cache_dir=cache)
    assert "unreadable" in caplog.text and again.train.images.shape == (60000, 28, 28, 1)
    assert isinstance(again.train.images, np.memmap)  # the entry was written anew, and is mapped
    assert np.load(entry / "train_images.npy", mmap_mode="r").shape == (60000, 28, 28, 1)
    assert json.loads((entry / "meta.json").read_text())["dataset"] == "mnist"


def test_an_unwritable_cache_keeps_the_arrays_in_memory(mnist_copy, tmp_path, caplog):
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING, logger="fed_opc"):
        pair = load_dataset("mnist", mnist_copy, cache_dir=blocked)
    assert "not writable" in caplog.text
    assert not isinstance(pair.train.images, np.memmap) and pair.train.images.shape == (60000, 28, 28, 1)


def test_a_cache_folder_this_user_cannot_search_reads_the_files(data_root):
    import tempfile

    from tests.fed_opc.test_config_data import _as_unprivileged

    top = Path(tempfile.mkdtemp(prefix="fedopc_closed_cache_"))  # under /tmp: reachable by the unprivileged user
    try:
        top.chmod(0o755)
        shutil.copytree(data_root / "MNIST", top / "data" / "MNIST")
        for d, _, files in os.walk(top / "data"):
            Path(d).chmod(0o755)
            for f in files:
                (Path(d) / f).chmod(0o644)
        closed = top / "closed"
        load_dataset("mnist", top / "data", cache_dir=closed)  # an entry exists, the user below may not reach it
        closed.chmod(0o700)
        datasets._load_cached.cache_clear()

        def attempt() -> list[str]:
            pair = load_dataset("mnist", top / "data", cache_dir=closed)
            return [f"{type(pair.train.images).__name__} {pair.train.images.shape}"]

        assert _as_unprivileged(attempt) == ["ndarray (60000, 28, 28, 1)"]
    finally:
        shutil.rmtree(top, ignore_errors=True)
