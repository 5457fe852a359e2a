import numpy as np
import pytest

from fed_opc.data import ForgottenDataError, GuardedDataset, iid, resolve_request, union_forget
from fed_opc.data.datasets import make_synthetic
from fed_opc.rng import numpy_rng

LABELS = np.repeat(np.arange(4), 100)
PARTS = iid(LABELS, 5, numpy_rng(0, "p"))
POOL = np.arange(400)


def test_client_scope():
    s = resolve_request("r0", "client", PARTS, LABELS, seed=0, client=2)
    assert np.array_equal(s.forget, PARTS[2]) and s.clients == (2,)
    assert len(s.client_retain[2]) == 0
    assert np.array_equal(np.sort(np.concatenate([s.forget, s.retain])), POOL)


def test_class_scope_one_client_and_all():
    s = resolve_request("r1", "class", PARTS, LABELS, seed=0, client=1, classes=[0, 3])
    assert set(LABELS[s.forget]) <= {0, 3} and set(LABELS[s.client_retain[1]]) <= {1, 2}
    assert np.array_equal(np.sort(np.concatenate([s.forget, s.client_retain[1]])), PARTS[1])
    a = resolve_request("r2", "class", PARTS, LABELS, seed=0, all_clients=True, classes=[2])
    assert np.array_equal(a.forget, np.flatnonzero(LABELS == 2)) and len(a.clients) == 5
    assert not np.isin(a.retain, a.forget).any()


def test_samples_scope_fraction_and_count_are_seeded():
    f = resolve_request("r3", "samples", PARTS, LABELS, seed=0, client=4, fraction=0.25)
    assert len(f.forget) == 20 and np.isin(f.forget, PARTS[4]).all()
    g = resolve_request("r3", "samples", PARTS, LABELS, seed=0, client=4, fraction=0.25)
    h = resolve_request("r3", "samples", PARTS, LABELS, seed=1, client=4, fraction=0.25)
    assert np.array_equal(f.forget, g.forget) and not np.array_equal(f.forget, h.forget)
    c = resolve_request("r4", "samples", PARTS, LABELS, seed=0, client=4, count=7)
    assert c.n_forget == 7 and len(c.client_retain[4]) == len(PARTS[4]) - 7
    with pytest.raises(ValueError, match="asked"):
        resolve_request("r5", "samples", PARTS, LABELS, seed=0, client=4, count=1000)


def test_class_not_held_raises():
    parts = [np.flatnonzero(LABELS == k) for k in range(4)]
    with pytest.raises(ValueError, match="holds no samples"):
        resolve_request("r6", "class", parts, LABELS, seed=0, client=0, classes=[1])


def test_union():
    a = resolve_request("a", "client", PARTS, LABELS, seed=0, client=0)
    b = resolve_request("b", "class", PARTS, LABELS, seed=0, all_clients=True, classes=[1])
    u = union_forget([a, b])
    assert np.array_equal(u, np.union1d(a.forget, b.forget))


def test_guard_refuses_forgotten_reads():
    d = make_synthetic(0, 40, 10, 4, 4, 1, 0.1).train
    g = GuardedDataset(d)
    g.tensors(np.arange(40))
    g.forbid(np.array([3, 17]))
    g.tensors(np.array([0, 1, 2, 4]))
    with pytest.raises(ForgottenDataError, match="first index 17"):
        g.tensors(np.array([0, 17, 5]))
    x, _ = g.allow_forget().tensors(np.array([17]))  # explicit, for ground-truth metrics
    assert x.shape[0] == 1
    assert g.forbidden.tolist() == [3, 17]
