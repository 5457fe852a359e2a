import shutil
from pathlib import Path

import numpy as np
import pytest

from fed_opc.data import DataError, load_dataset
from fed_opc.data.datasets import CIFAR10_FILES, make_synthetic, read_manifest, resolve_manifest


def test_cifar10_counts(cifar10):
    assert len(cifar10.train) == 50_000 and len(cifar10.test) == 10_000
    assert np.bincount(cifar10.train.labels).tolist() == [5000] * 10
    assert np.bincount(cifar10.test.labels).tolist() == [1000] * 10
    assert cifar10.train.images.shape == (50_000, 32, 32, 3) and cifar10.train.images.dtype == np.uint8
    assert cifar10.train.classes[0] == "airplane"
    # the first test row of the original test_batch starts 158, 159, 165 (red plane)
    assert cifar10.test.images[0, 0, :3, 0].tolist() == [158, 159, 165]


def test_loaded_once_per_process(data_root):
    a = load_dataset("cifar10", data_root, checksums="cifar10-offline-rebuild")
    b = load_dataset("cifar10", data_root, checksums="cifar10-offline-rebuild")
    assert a is b and a.train.images is b.train.images


def test_tensors_are_normalised(cifar10):
    x, y = cifar10.train.tensors(np.arange(2000))
    assert x.shape == (2000, 3, 32, 32) and y.dtype.is_floating_point is False
    assert abs(float(x.mean())) < 0.15 and 0.8 < float(x.std()) < 1.2


@pytest.fixture
def cifar_copy(data_root, tmp_path):
    dst = tmp_path / "root" / "cifar-10-batches-py"
    dst.mkdir(parents=True)
    for f in CIFAR10_FILES + ("batches.meta",):
        shutil.copyfile(data_root / "cifar-10-batches-py" / f, dst / f)
    return tmp_path / "root"


def test_rebuilt_copy_refused_without_manifest(cifar_copy, monkeypatch):
    monkeypatch.delenv("FED_OPC_DATA_CHECKSUMS", raising=False)
    with pytest.raises(DataError, match="official CIFAR-10 checksum.*manifest"):
        load_dataset("cifar10", cifar_copy)


def test_corrupted_byte_refused_even_with_manifest(cifar_copy):
    f = cifar_copy / "cifar-10-batches-py" / "data_batch_3"
    raw = bytearray(f.read_bytes())
    raw[5000] ^= 0xFF
    f.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="data_batch_3: md5"):
        load_dataset("cifar10", cifar_copy, checksums="cifar10-offline-rebuild")


def test_missing_file_refused(cifar_copy):
    (cifar_copy / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError, match="not found"):
        load_dataset("cifar10", cifar_copy, checksums="cifar10-offline-rebuild")


def test_manifest_parsing_and_lookup(tmp_path):
    table = read_manifest(resolve_manifest("cifar10-offline-rebuild"))
    assert set(CIFAR10_FILES) <= set(table) and all(len(v) == 32 for v in table.values())
    bad = tmp_path / "bad.md5"
    bad.write_text("not a checksum line\n")
    with pytest.raises(DataError, match="bad.md5:1"):
        read_manifest(bad)
    with pytest.raises(DataError, match="not found"):
        resolve_manifest("no-such-manifest")


def test_mnist(data_root):
    if not (data_root / "MNIST" / "raw").is_dir():
        pytest.skip("no MNIST under the data root")
    d = load_dataset("mnist", data_root)
    assert d.train.images.shape == (60_000, 28, 28, 1) and len(d.test) == 10_000
    assert np.bincount(d.train.labels).tolist()[:3] == [5923, 6742, 5958]


def test_mnist_corrupted_refused(data_root, tmp_path):
    src = data_root / "MNIST" / "raw"
    if not src.is_dir():
        pytest.skip("no MNIST under the data root")
    dst = tmp_path / "MNIST" / "raw"
    dst.mkdir(parents=True)
    for f in src.glob("*.gz"):
        shutil.copyfile(f, dst / f.name)
    import gzip

    labels = bytearray(gzip.decompress((dst / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    labels[100] = (labels[100] + 1) % 10
    (dst / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(labels)))
    with pytest.raises(DataError, match="t10k-labels"):
        load_dataset("mnist", tmp_path)


def test_synthetic_is_seeded_balanced_and_learnable_by_nearest_mean():
    a = make_synthetic(0, 400, 200, 4, 8, 3, 0.2)
    b = make_synthetic(0, 400, 200, 4, 8, 3, 0.2)
    c = make_synthetic(1, 400, 200, 4, 8, 3, 0.2)
    assert np.array_equal(a.train.images, b.train.images) and not np.array_equal(a.train.images, c.train.images)
    assert np.bincount(a.train.labels).tolist() == [100] * 4
    # class means of the training set classify the test set well: the classes are separable
    xtr = a.train.images.reshape(400, -1).astype(float)
    means = np.stack([xtr[a.train.labels == k].mean(0) for k in range(4)])
    xte = a.test.images.reshape(200, -1).astype(float)
    pred = np.argmin(((xte[:, None] - means[None]) ** 2).sum(-1), 1)
    assert (pred == a.test.labels).mean() > 0.9


def test_a_relative_data_root_is_tried_against_the_working_directory_then_the_scenario_folder(tmp_path, monkeypatch):
    from fed_opc.data.datasets import resolve_data_root

    scen, cwd = tmp_path / "scen", tmp_path / "cwd"
    (scen / "data").mkdir(parents=True)
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert resolve_data_root("data", scen) == scen / "data"  # only the scenario's folder has it
    (cwd / "data").mkdir()
    assert resolve_data_root("data", scen) == Path("data")  # both have it: the working directory wins
    assert resolve_data_root("/abs/data", scen) == Path("/abs/data")
    monkeypatch.setenv("FED_OPC_DATA_ROOT", str(tmp_path / "env"))
    assert resolve_data_root(None, scen) == tmp_path / "env"
