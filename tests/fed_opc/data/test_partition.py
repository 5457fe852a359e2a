import numpy as np
import pytest

from fed_opc.data import PartitionError, dirichlet, iid, label_counts, shards
from fed_opc.rng import numpy_rng

LABELS = np.repeat(np.arange(10), 300)  # 3,000 samples, 10 balanced classes


def _check_cover(parts, n):
    allidx = np.concatenate(parts)
    assert len(allidx) == n and len(np.unique(allidx)) == n  # every sample exactly once
    assert all(len(p) > 0 for p in parts)
    assert all(np.all(np.diff(p) > 0) for p in parts)


@pytest.mark.parametrize(
    "fn",
    [
        lambda r: iid(LABELS, 20, r),
        lambda r: dirichlet(LABELS, 20, 0.3, r),
        lambda r: shards(LABELS, 20, 2, r),
    ],
)
def test_cover_and_determinism(fn):
    a, b, c = fn(numpy_rng(0, "p")), fn(numpy_rng(0, "p")), fn(numpy_rng(1, "p"))
    _check_cover(a, len(LABELS))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_iid_sizes_balanced():
    sizes = [len(p) for p in iid(LABELS, 7, numpy_rng(0, "p"))]
    assert max(sizes) - min(sizes) <= 1


def _skew(parts):
    counts = label_counts(LABELS, parts, 10).astype(float)
    shares = counts / counts.sum(1, keepdims=True)
    return float(shares.max(1).mean())  # mean share of each client's largest class


def test_dirichlet_skew_grows_as_alpha_shrinks():
    skews = [np.mean([_skew(dirichlet(LABELS, 20, a, numpy_rng(s, "p"))) for s in range(3)]) for a in (100.0, 1.0, 0.1)]
    assert skews[0] < skews[1] < skews[2]
    assert skews[0] < 0.2 and skews[2] > 0.6


def test_shards_limit_classes_per_client():
    parts = shards(LABELS, 30, 2, numpy_rng(0, "p"))
    ncls = (label_counts(LABELS, parts, 10) > 0).sum(1)
    assert ncls.max() <= 3 and np.median(ncls) <= 2  # a shard can straddle one class boundary


def test_impossible_partitions_raise():
    with pytest.raises(PartitionError, match="iid"):
        iid(LABELS[:5], 10, numpy_rng(0, "p"))
    with pytest.raises(PartitionError, match="shards"):
        shards(LABELS[:10], 10, 2, numpy_rng(0, "p"))
    with pytest.raises(PartitionError, match="dirichlet"):
        dirichlet(LABELS[:50], 40, 0.01, numpy_rng(0, "p"), min_size=1, max_tries=5)
