"""Datasets as shared uint8 arrays: CIFAR-10 and MNIST from disk, and a seeded synthetic set.

A dataset is loaded once per process (``load_dataset`` is memoised) and every simulated client in that process indexes
into the same arrays with its partition's index array; nothing is copied per client.

Integrity: CIFAR-10 and MNIST files are checked against the official md5 sums. A copy whose bytes legitimately differ
(for example CIFAR-10 rebuilt offline) is accepted only through an explicit checksum manifest, given by
``data.checksums`` in the scenario or ``$FED_OPC_DATA_CHECKSUMS``; the check itself is never skipped.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fed_opc import environment
from fed_opc.data.array_cache import entry_key, read_entry, write_entry
from fed_opc.rng import numpy_rng

MANIFEST_DIR = Path(__file__).parent / "manifests"

# Official md5s of the decompressed MNIST IDX files (the values torchvision's download checks, applied after gunzip so
# that a re-compressed but byte-identical archive is accepted).
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
CIFAR10_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")


class DataError(RuntimeError):
    """The data on disk is missing, corrupted or fails its checksum."""


@dataclass(frozen=True, eq=False)
class ArrayDataset:
    """Images as one uint8 array (N, H, W, C) plus int64 labels, and the normalisation to apply on the fly."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    _mean_t: torch.Tensor = field(init=False, repr=False)
    _std_t: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"{self.name}: images must be uint8 (N, H, W, C), got {self.images.dtype} {self.images.shape}"
            )
        if len(self.images) != len(self.labels):
            raise ValueError(f"{self.name}: {len(self.images)} images but {len(self.labels)} labels")
        object.__setattr__(self, "_mean_t", torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1))
        object.__setattr__(self, "_std_t", torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1))

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        """Number of classes (the length of ``classes``)."""
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one model input."""
        _, h, w, c = self.images.shape
        return (c, h, w)

    def tensors(self, idx: np.ndarray, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised float images (B, C, H, W) and int64 labels for the given indices."""
        idx = np.asarray(idx, dtype=np.int64)
        x = torch.from_numpy(self.images[idx]).permute(0, 3, 1, 2).float().div_(255.0)
        x = (x - self._mean_t) / self._std_t
        y = torch.from_numpy(self.labels[idx])
        return x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    def normalize(self, x01: torch.Tensor) -> torch.Tensor:
        """Map images in [0, 1] (B, C, H, W) to model inputs."""
        return (x01 - self._mean_t.to(x01.device)) / self._std_t.to(x01.device)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map model inputs back to images in [0, 1]."""
        return x * self._std_t.to(x.device) + self._mean_t.to(x.device)


@dataclass(frozen=True, eq=False)
class DatasetPair:
    """A dataset's train and test splits."""

    train: ArrayDataset
    test: ArrayDataset


# --------------------------------------------------------------------------------------------------------------------
# checksums


def _md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(path: str | Path) -> dict[str, str]:
    """Read an md5sum-style manifest (``<md5>  <file name>`` per line, ``#`` comments) into {file name: md5}."""
    table: dict[str, str] = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) != 32:
            raise DataError(f"{path}:{n}: expected '<md5>  <file name>', got {line!r}")
        table[parts[1].lstrip("*")] = parts[0].lower()
    return table


def resolve_manifest(checksums: str | None, base_dir: Path | None = None) -> Path | None:
    """Find a checksum manifest: a path (relative to ``base_dir``), or the name of one shipped in ``data/manifests``."""
    value = checksums if checksums is not None else environment.data_checksums()
    if value is None:
        return None
    p = Path(value).expanduser()
    candidates = [p] if p.is_absolute() else [Path.cwd() / p] + ([base_dir / p] if base_dir is not None else [])
    candidates.append(MANIFEST_DIR / (value if value.endswith(".md5") else value + ".md5"))
    for c in candidates:
        if c.is_file():
            return c
    shipped = sorted(q.stem for q in MANIFEST_DIR.glob("*.md5"))
    raise DataError(f"checksum manifest {value!r} not found (a file path, or one of the shipped: {', '.join(shipped)})")


def _cifar10_official_md5() -> dict[str, str]:
    from torchvision.datasets import CIFAR10

    return {name: md5 for name, md5 in CIFAR10.train_list + CIFAR10.test_list} | {
        CIFAR10.meta["filename"]: CIFAR10.meta["md5"]
    }


def verify_files(folder: Path, expected: dict[str, str], source: str) -> None:
    """Raise ``DataError`` unless every file in ``expected`` exists in ``folder`` with the expected md5."""
    for name, md5 in expected.items():
        path = folder / name
        if not path.is_file():
            raise DataError(f"{path}: missing")
        got = _md5_file(path)
        if got != md5:
            raise DataError(f"{path}: md5 {got} does not match {source} ({md5})")


# --------------------------------------------------------------------------------------------------------------------
# loaders


def dataset_present(name: str, root: Path) -> bool:
    """Whether ``root`` holds the files of dataset ``name`` in torchvision's layout (no checksum check).

    A folder on the way that cannot be searched (permissions) raises ``DataError`` naming it.
    """
    try:
        if name == "cifar10":
            return all((root / "cifar-10-batches-py" / f).is_file() for f in CIFAR10_FILES)
        if name == "mnist":
            raw = root / "MNIST" / "raw"
            return all((raw / f).is_file() or (raw / (f + ".gz")).is_file() for f in MNIST_MD5)
    except OSError as e:  # names the root: which folder below it is closed is for the user to see
        raise DataError(f"{root}: cannot read ({e.strerror or e.__class__.__name__})") from None
    return True


def _unreadable(e: OSError, fallback: Path) -> str:
    where = e.filename if e.filename else fallback
    return f"{where}: cannot read ({e.strerror or e.__class__.__name__})"


def _verify_cifar10(folder: Path, manifest: Path | None) -> dict[str, str] | None:
    """Check the folder against the official sums; failing that, against ``manifest`` if one was given.

    Returns the manifest's table when the folder matched the manifest, None when it matched the official sums.
    """
    try:
        verify_files(folder, _cifar10_official_md5(), "the official CIFAR-10 checksum")
        return None
    except DataError as official:
        if manifest is None:
            raise DataError(
                f"{official}; a copy whose bytes differ on purpose needs a checksum manifest "
                "(data.checksums or $FED_OPC_DATA_CHECKSUMS)"
            ) from None
    table = read_manifest(manifest)
    missing = [f for f in CIFAR10_FILES if f not in table]
    if missing:
        raise DataError(f"{manifest}: no checksum for {', '.join(missing)}")
    verify_files(folder, table, f"manifest {manifest.name}")
    return table


def _download(fetch, what: str, root: Path) -> None:
    """Run torchvision's download (which checks the official archive's md5) and word any failure in one line."""
    try:
        fetch()
    except Exception as e:  # network errors come as RuntimeError, URLError, OSError, ... from torchvision
        first = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        raise DataError(f"{root}: {what} is missing and its download failed ({first})") from None


def _load_cifar10(root: Path, download: bool, manifest: Path | None) -> DatasetPair:
    from torchvision.datasets import CIFAR10

    folder = root / "cifar-10-batches-py"
    if not dataset_present("cifar10", root):
        if not download:
            raise DataError(f"{folder}: CIFAR-10 not found and data.download is false")
        _download(lambda: CIFAR10(str(root), train=True, download=True), "CIFAR-10", root)
    table = _verify_cifar10(folder, manifest)

    class _Checked(CIFAR10):
        # Every file was hashed just above, against the official sums or the manifest. torchvision's constructor would
        # hash all six files again for the train split and again for the test split (twice 180 MB more in every
        # process that loads the data); its reader is used unchanged, with the table that matched.
        if table is not None:
            train_list = [[f, table[f]] for f in CIFAR10_FILES[:5]]
            test_list = [["test_batch", table["test_batch"]]]
            if "batches.meta" in table:
                meta = dict(CIFAR10.meta, md5=table["batches.meta"])

        def _check_integrity(self) -> bool:
            return True

    tr, te = _Checked(str(root), train=True), _Checked(str(root), train=False)
    classes = tuple(tr.classes)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    mk = lambda d, split: ArrayDataset(  # noqa: E731
        f"cifar10-{split}", np.ascontiguousarray(d.data), np.asarray(d.targets, dtype=np.int64), classes, mean, std
    )
    return DatasetPair(mk(tr, "train"), mk(te, "test"))


def _read_idx(raw: Path, name: str) -> np.ndarray:
    plain, gz = raw / name, raw / (name + ".gz")
    data = plain.read_bytes() if plain.is_file() else gzip.decompress(gz.read_bytes())
    got = hashlib.md5(data).hexdigest()
    if got != MNIST_MD5[name]:
        raise DataError(
            f"{plain if plain.is_file() else gz}: md5 of the IDX content {got} does not match the official {MNIST_MD5[name]}"
        )
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _load_mnist(root: Path, download: bool) -> DatasetPair:
    raw = root / "MNIST" / "raw"
    if not dataset_present("mnist", root):
        if not download:
            raise DataError(f"{raw}: MNIST not found and data.download is false")
        from torchvision.datasets import MNIST

        _download(lambda: MNIST(str(root), train=True, download=True), "MNIST", root)
    classes = tuple(str(i) for i in range(10))
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x = _read_idx(raw, f"{prefix}-images-idx3-ubyte")[..., None].copy()
        y = _read_idx(raw, f"{prefix}-labels-idx1-ubyte").astype(np.int64)
        out[split] = ArrayDataset(f"mnist-{split}", x, y, classes, (0.1307,), (0.3081,))
    return DatasetPair(out["train"], out["test"])


def make_synthetic(
    seed: int, num_train: int, num_test: int, num_classes: int, image_size: int, channels: int, noise: float
) -> DatasetPair:
    """A seeded, learnable, class-conditional image set.

    Each class has a smooth random prototype image; a sample is its class prototype plus Gaussian pixel noise of
    standard deviation ``noise`` (on a 0..1 scale), quantised to uint8. Classes are exactly balanced.
    """
    rng = numpy_rng(seed, "synthetic_dataset")
    coarse = rng.uniform(0.15, 0.85, size=(num_classes, max(2, image_size // 4), max(2, image_size // 4), channels))
    reps = -(-image_size // coarse.shape[1])
    protos = np.kron(coarse, np.ones((1, reps, reps, 1)))[:, :image_size, :image_size, :]

    def split(n: int, purpose: str) -> tuple[np.ndarray, np.ndarray]:
        r = numpy_rng(seed, purpose)
        y = np.arange(n, dtype=np.int64) % num_classes
        r.shuffle(y)
        x = protos[y] + r.normal(0.0, noise, size=(n, image_size, image_size, channels))
        return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8), y

    classes = tuple(f"class{i}" for i in range(num_classes))
    xtr, ytr = split(num_train, "synthetic_train")
    xte, yte = split(num_test, "synthetic_test")
    mean, std = (0.5,) * channels, (0.25,) * channels
    return DatasetPair(
        ArrayDataset("synthetic-train", xtr, ytr, classes, mean, std),
        ArrayDataset("synthetic-test", xte, yte, classes, mean, std),
    )


def resolve_data_root(root: str | Path | None, base_dir: Path | None = None) -> Path:
    """The folder a scenario's ``data.root`` names: null is :func:`default_data_root`; a relative path is tried
    against the working directory first, then against ``base_dir`` (the scenario's folder).
    """
    if root is None:
        return default_data_root()
    p = Path(root).expanduser()
    if not p.is_absolute() and base_dir is not None and not p.exists() and (base_dir / p).exists():
        return base_dir / p
    return p


def default_data_root() -> Path:
    """``$FED_OPC_DATA_ROOT`` if set, else ``~/.cache/fed_opc/data`` (see :mod:`fed_opc.environment`)."""
    return environment.data_root()


@functools.lru_cache(maxsize=4)
def _load_cached(
    name: str, root: str, download: bool, manifest: str | None, synthetic: tuple, cache_root: str | None
) -> DatasetPair:
    try:
        if name in ("cifar10", "mnist"):
            return _load_files(
                name,
                Path(root),
                download,
                Path(manifest) if manifest else None,
                Path(cache_root) if cache_root else None,
            )
    except OSError as e:  # a file or folder this user may not read: one line, not a traceback
        raise DataError(_unreadable(e, Path(root))) from None
    if name == "synthetic":
        return make_synthetic(*synthetic)
    raise ValueError(f"unknown dataset {name!r}")


def _source_files(name: str, root: Path) -> tuple[Path, list[Path]]:
    """The folder and the files that define dataset ``name`` under ``root`` (what a cache entry is keyed by)."""
    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        return folder, [folder / f for f in (*CIFAR10_FILES, "batches.meta") if (folder / f).is_file()]
    raw = root / "MNIST" / "raw"
    return raw, [raw / f if (raw / f).is_file() else raw / (f + ".gz") for f in MNIST_MD5]


def _load_files(name: str, root: Path, download: bool, manifest: Path | None, cache_root: Path | None) -> DatasetPair:
    """Read CIFAR-10 or MNIST through the decoded-array cache (``array_cache``): verified and decoded once per entry."""

    def decode() -> DatasetPair:
        return _load_cifar10(root, download, manifest) if name == "cifar10" else _load_mnist(root, download)

    if cache_root is None or not dataset_present(name, root):
        return decode()  # no cache asked for, or files to download first (the next process finds them)
    folder, sources = _source_files(name, root)
    entry = cache_root / "arrays" / f"{name}-{entry_key(name, folder, sources, manifest)}"
    splits = read_entry(entry, ArrayDataset)
    if splits is None:
        # a damaged entry (read_entry warned) is replaced; a process still mapping its files keeps them
        if os.access(entry.parent, os.W_OK | os.X_OK) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        pair = decode()  # verifies the md5 sums first
        if not write_entry(entry, name, {"train": pair.train, "test": pair.test}):
            return pair
        splits = read_entry(entry, ArrayDataset)
        if splits is None:
            return pair
    return DatasetPair(splits["train"], splits["test"])


def load_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    download: bool = False,
    checksums: str | None = None,
    synthetic: tuple = (0, 2000, 500, 10, 16, 3, 0.25),
    base_dir: Path | None = None,
    cache_dir: str | Path | None = None,
) -> DatasetPair:
    """Load a dataset once per process and return the shared train/test arrays.

    CIFAR-10 and MNIST go through the decoded-array cache (:mod:`fed_opc.data.array_cache`) under ``cache_dir``
    (default ``$FED_OPC_CACHE_DIR``, see :mod:`fed_opc.environment`): the md5 check and the decoding happen once per
    cache entry, and every process maps the same arrays.

    Parameters
    ----------
    name : {"cifar10", "mnist", "synthetic"}
    root : folder in torchvision's layout; ``None`` uses :func:`default_data_root`.
    download : fetch with torchvision when the files are missing (needs a network).
    checksums : a checksum manifest (path or shipped name) for copies whose bytes differ from the official release.
    synthetic : (seed, num_train, num_test, num_classes, image_size, channels, noise) for ``name == "synthetic"``.
    base_dir : the folder a relative manifest path is resolved against.
    cache_dir : the cache folder; the entries go to its ``arrays/`` subfolder.

    """
    root_path = Path(root).expanduser() if root is not None else default_data_root()
    manifest = resolve_manifest(checksums, base_dir) if name == "cifar10" else None
    cache_root = Path(cache_dir).expanduser() if cache_dir is not None else environment.cache_dir()
    return _load_cached(
        name,
        str(root_path.resolve()),
        bool(download),
        str(manifest) if manifest else None,
        tuple(synthetic),
        str(cache_root),
    )
