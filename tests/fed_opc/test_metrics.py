import math

import numpy as np
import pytest
import torch

from fed_opc.data.datasets import load_dataset
from fed_opc.metrics import (
    EvalSet,
    Outputs,
    accuracy_from_logits,
    avg_gap,
    dead_units_share,
    evaluate_methods,
    evaluate_outputs,
    evaluate_unlearning,
    is_collapsed,
    linear_cka,
    mean_feature_norm,
    mia_efficacy,
    mia_features,
    model_outputs,
    n_predicted_classes,
    nullspace_share,
    predictive_entropy,
    true_class_confidence,
)
from fed_opc.models import build_model
from fed_opc.rng import numpy_rng, torch_rng

W = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # row space: the first two axes


def test_accuracy_entropy_norms_by_hand():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 0.0]])
    assert accuracy_from_logits(logits, torch.tensor([0, 0, 0])) == pytest.approx(2 / 3)
    assert math.isnan(accuracy_from_logits(torch.zeros(0, 2), torch.zeros(0, dtype=torch.int64)))
    assert predictive_entropy(torch.zeros(1, 4)).item() == pytest.approx(math.log(4))
    assert predictive_entropy(torch.tensor([[100.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-12)
    assert mean_feature_norm(torch.tensor([[3.0, 4.0], [0.0, 1.0]])) == pytest.approx(3.0)


def test_cka_identity_orthogonal_and_scaling_invariance():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 6, generator=g)
    assert linear_cka(x, x) == pytest.approx(1.0)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g))
    assert linear_cka(x, 3.5 * x @ q) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(x @ q, x) == pytest.approx(1.0, abs=1e-9)
    # an unrelated representation scores far below 1; a mixture in between
    y = torch.randn(200, 6, generator=g)
    low = linear_cka(x, y)
    assert low < 0.2
    assert low < linear_cka(x, x + y) < 1.0
    # a constant representation carries no information about the samples
    assert linear_cka(x, torch.ones(200, 6)) == 0.0
    with pytest.raises(ValueError):
        linear_cka(x, x[:10])


def test_cka_by_hand_one_dimensional():
    # 1-d features: CKA is the squared Pearson correlation
    a = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    b = torch.tensor([[1.0], [3.0], [2.0], [4.0]])
    r = np.corrcoef(a[:, 0].numpy(), b[:, 0].numpy())[0, 1]
    assert linear_cka(a, b) == pytest.approx(r**2)


def test_nullspace_share_by_hand():
    assert nullspace_share(torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]]), W) == pytest.approx(0.0)
    assert nullspace_share(torch.tensor([[0.0, 0.0, 3.0]]), W) == pytest.approx(1.0)
    assert nullspace_share(torch.tensor([[1.0, 0.0, 1.0]]), W) == pytest.approx(0.5)
    # a rotated head has the same row space rotated: only the energy outside counts
    w2 = torch.tensor([[1.0, 1.0, 0.0]])  # row space spanned by (1,1,0)/sqrt2
    assert nullspace_share(torch.tensor([[1.0, -1.0, 0.0]]), w2) == pytest.approx(1.0)
    assert nullspace_share(torch.tensor([[2.0, 0.0, 0.0]]), w2) == pytest.approx(0.5)
    assert math.isnan(nullspace_share(torch.zeros(2, 3), W))


def test_dead_units_and_predicted_classes():
    f = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.5]])
    assert dead_units_share(f) == pytest.approx(0.5)
    assert dead_units_share(torch.ones(3, 4)) == 0.0
    assert n_predicted_classes(torch.tensor([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 1.0]])) == 2


def test_collapse_rule():
    assert is_collapsed(1, 0.0, 9)
    assert is_collapsed(2, 0.0, 7)
    assert not is_collapsed(3, 0.0, 7)
    assert is_collapsed(9, 0.51, 9)
    assert not is_collapsed(9, 0.5, 9)
    assert is_collapsed(9, 0.0, 9, retain_acc=0.3, original_retain_acc=0.64)  # retain accuracy more than halved
    assert not is_collapsed(9, 0.0, 9, retain_acc=0.5, original_retain_acc=0.64)
    assert not is_collapsed(9, 0.0, 9, retain_acc=0.3)  # no original to compare with
    assert not is_collapsed(2, 0.0, 2)  # a two-class model predicting both classes is fine
    assert is_collapsed(1, 0.0, 2)


def test_avg_gap_by_hand():
    m = {"UA": 1.0, "RA": 0.9, "TA": 0.8, "MIA": 0.5}
    r = {"UA": 0.8, "RA": 1.0, "TA": 0.8, "MIA": 0.9}
    assert avg_gap(m, r) == pytest.approx((0.2 + 0.1 + 0.0 + 0.4) / 4)


def _features(rng, n, conf, ent):
    return np.stack([rng.normal(conf, 0.03, n), rng.normal(ent, 0.05, n)], 1)


def test_mia_separable_members_and_nonmembers():
    rng = np.random.default_rng(0)
    member, nonmember = _features(rng, 500, 0.95, 0.2), _features(rng, 500, 0.4, 1.5)
    like_non = _features(rng, 300, 0.4, 1.5)
    like_member = _features(rng, 300, 0.95, 0.2)
    assert mia_efficacy(member, nonmember, like_non, rng=np.random.default_rng(1)) > 0.95
    assert mia_efficacy(member, nonmember, like_member, rng=np.random.default_rng(1)) < 0.05


def test_mia_identical_distributions_near_half():
    vals = []
    for s in range(5):
        rng = np.random.default_rng(s)
        a, b, t = rng.normal(size=(1000, 2)), rng.normal(size=(1000, 2)), rng.normal(size=(1000, 2))
        vals.append(mia_efficacy(a, b, t, rng=np.random.default_rng(s)))
    assert 0.35 < np.mean(vals) < 0.65


def test_mia_deterministic_and_subsampled():
    rng = np.random.default_rng(0)
    member, nonmember = _features(rng, 5000, 0.9, 0.3), _features(rng, 3000, 0.6, 1.0)
    target = _features(rng, 100, 0.75, 0.6)
    a = mia_efficacy(member, nonmember, target, rng=np.random.default_rng(3), max_per_class=300)
    b = mia_efficacy(member, nonmember, target, rng=np.random.default_rng(3), max_per_class=300)
    assert a == b
    assert math.isnan(mia_efficacy(member, nonmember, target[:0], rng=np.random.default_rng(3)))


def test_mia_features_by_hand():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    f = mia_features(logits, torch.tensor([1, 0]))
    assert f[:, 0] == pytest.approx([0.5, 0.75])
    assert f[0, 1] == pytest.approx(math.log(2))


def test_true_class_confidence_by_hand():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    assert true_class_confidence(logits, torch.tensor([1, 0])) == pytest.approx(np.array([[0.5], [0.75]]))
    assert true_class_confidence(logits, torch.tensor([1, 0])).shape == (2, 1)


def test_salun_mia_on_hand_made_confidences():
    # members sure of their class, non-members unsure: two forget samples look like members, two like non-members
    member = np.array([[1.0], [1.0], [1.0], [1.0]])
    nonmember = np.array([[0.0], [0.0], [0.0], [0.0]])
    target = np.array([[0.0], [0.05], [0.95], [1.0]])
    assert mia_efficacy(member, nonmember, target, rng=np.random.default_rng(0)) == 0.5
    assert mia_efficacy(member, nonmember, target[:2], rng=np.random.default_rng(0)) == 1.0
    assert mia_efficacy(member, nonmember, target[2:], rng=np.random.default_rng(0)) == 0.0


class _Labels:
    def __init__(self, labels, num_classes=3):
        self.labels = np.asarray(labels)
        self.num_classes = num_classes


def _hand_outputs():
    """3 classes, class 0 forgotten everywhere; logits chosen so every metric can be read off by hand."""
    big, one = 10.0, 1.0
    # retain (members): classes 1 and 2, all sure and right -> confidence e^10 / (e^10 + 2)
    retain_logits = torch.tensor([[0, big, 0], [0, big, 0], [0, 0, big], [0, 0, big]])
    # test: two of class 0 (right), class 1 one right one wrong, class 2 both right, every one unsure
    test_logits = torch.tensor([[one, 0, 0], [one, 0, 0], [0, one, 0], [0, 0, one], [0, 0, one], [0, 0, one]])
    # forget (class 0): two still sure and right (look like members), two wrong at confidence 1 / (1 + 2e) = 0.16
    forget_logits = torch.tensor([[big, 0, 0], [big, 0, 0], [0, one, one], [0, one, one]])
    feats = torch.ones(4, 2)
    out = Outputs(feats, forget_logits.float(), feats, retain_logits.float(), torch.ones(6, 2), test_logits.float())
    train = _Labels([0, 0, 0, 0, 1, 1, 2, 2])
    test = _Labels([0, 0, 1, 1, 2, 2])
    ev = EvalSet(train, test, np.arange(4), np.arange(4, 8), np.arange(6), forgotten_classes=(0,), seed=0)
    return out, ev


def test_evaluate_outputs_salun_ta_and_mia_by_hand():
    out, ev = _hand_outputs()
    m = evaluate_outputs(out, ev, head_weight=torch.eye(3, 2))
    assert m["UA"] == 0.5  # two of four forget samples still right
    assert m["RA"] == 1.0
    assert m["TA"] == 0.75  # retained classes only: 3 of the 4 test samples of classes 1 and 2
    assert m["TA_all"] == pytest.approx(5 / 6)  # the whole test set, class 0 included
    assert m["TA_forgotten_classes"] == 1.0
    # SalUn's MIA: members at confidence ~1, non-members (test of classes 1, 2) at 0.58 and 0.21; the two sure forget
    # samples are judged members, the two wrong ones (confidence 0.16) non-members
    assert m["MIA"] == 0.5
    # the earlier definition keeps its own name: (confidence, entropy), non-members = the whole test set
    y_f, y_r, y_t = (torch.from_numpy(ev.train.labels[:4]), torch.from_numpy(ev.train.labels[4:]),
                     torch.from_numpy(ev.test.labels))  # fmt: skip
    expected = mia_efficacy(
        mia_features(out.retain_logits, y_r),
        mia_features(out.test_logits, y_t),
        mia_features(out.forget_logits, y_f),
        rng=numpy_rng(0, "metrics/mia"),
    )
    assert m["MIA_conf_entropy"] == expected
    # avg_gap over the SalUn definitions
    ref = {"UA": 1.0, "RA": 1.0, "TA": 0.5, "MIA": 1.0}
    assert evaluate_outputs(out, ev, head_weight=torch.eye(3, 2), retrain_metrics=ref)["avg_gap"] == pytest.approx(
        (0.5 + 0.0 + 0.25 + 0.5) / 4
    )


def test_evaluate_outputs_outside_class_scope_ta_is_the_whole_test_set():
    out, ev = _hand_outputs()
    ev = EvalSet(ev.train, ev.test, ev.forget_idx, ev.retain_idx, ev.test_idx, forgotten_classes=(), seed=0)
    m = evaluate_outputs(out, ev, head_weight=torch.eye(3, 2))
    assert m["TA"] == m["TA_all"] == pytest.approx(5 / 6)
    assert "TA_forgotten_classes" not in m


@pytest.fixture(scope="module")
def tiny():
    data = load_dataset("synthetic", synthetic=(1, 300, 120, 4, 8, 3, 0.25))
    model = build_model("small_cnn", 4, 3, generator=torch_rng(0, "test/metrics"), width=4)
    forget = np.flatnonzero(data.train.labels == 0)
    retain = np.flatnonzero(data.train.labels != 0)
    return data, model, forget, retain


def test_evaluate_unlearning_block(tiny):
    data, model, forget, retain = tiny
    ev = EvalSet.make(data.train, data.test, forget, retain, None, seed=0, forgotten_classes=(0,), max_retain=100)
    assert len(ev.retain_idx) == 100 and set(ev.retain_idx) <= set(retain)
    ref = model_outputs(model, ev, device="cpu")
    m = evaluate_unlearning(model, ev, device="cpu", original=ref, retrain=ref)
    for k in ("UA", "RA", "TA", "TA_all", "TA_forgotten_classes", "MIA", "MIA_conf_entropy", "dead_units_share"):
        assert 0.0 <= m[k] <= 1.0, k
    assert m["cka_vs_original"] == pytest.approx(1.0) and m["cka_vs_retrain"] == pytest.approx(1.0)
    assert "avg_gap" not in m  # no retrain metrics given: absent, not None
    assert all(v is not None for v in m.values())
    assert m["collapsed"] in (0, 1)
    assert 1 <= m["n_predicted_classes"] <= 4
    # the block agrees with the pure functions on the same outputs
    y_f = torch.from_numpy(data.train.labels[forget])
    assert m["UA"] == pytest.approx(1 - accuracy_from_logits(ref.forget_logits, y_f))
    m2 = evaluate_unlearning(model, ev, device="cpu", retrain_metrics=m)
    assert m2["avg_gap"] == pytest.approx(0.0)
    assert "cka_vs_original" not in m2


def test_eval_set_retain_subsample_is_seeded(tiny):
    data, _, forget, retain = tiny
    a = EvalSet.make(data.train, data.test, forget, retain, None, seed=5, max_retain=50)
    b = EvalSet.make(data.train, data.test, forget, retain, None, seed=5, max_retain=50)
    c = EvalSet.make(data.train, data.test, forget, retain, None, seed=6, max_retain=50)
    assert np.array_equal(a.retain_idx, b.retain_idx)
    assert not np.array_equal(a.retain_idx, c.retain_idx)


def test_psnr_and_ssim_by_hand():
    from fed_opc.metrics import psnr, ssim

    ref = torch.zeros(2, 3, 16, 16)
    noisy = ref + 0.1  # mse 0.01 -> 20 dB
    assert psnr(noisy, ref).tolist() == pytest.approx([20.0, 20.0])
    assert math.isinf(float(psnr(ref, ref)[0]))
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 16, 16, generator=g)
    assert ssim(img, img).tolist() == pytest.approx([1.0, 1.0])
    assert (ssim(torch.rand(2, 3, 16, 16, generator=g), img) < 0.5).all()


def test_evaluate_methods_measures_every_block_against_one_reference(tiny):
    data, model, forget, retain = tiny
    ev = EvalSet.make(data.train, data.test, forget, retain, None, seed=0, forgotten_classes=(0,), max_retain=100)
    other = build_model("small_cnn", 4, 3, generator=torch_rng(1, "test/metrics"), width=4)
    outs = {"retrain": model_outputs(model, ev, device="cpu"), "opc": model_outputs(other, ev, device="cpu")}
    heads = {"retrain": model.head.weight, "opc": other.head.weight}
    got = evaluate_methods(outs, heads, ev, original=outs["opc"], reference="retrain")
    assert list(got) == ["retrain", "opc"]
    assert got["retrain"]["avg_gap"] == 0.0 and got["retrain"]["cka_vs_retrain"] == pytest.approx(1.0)
    r, m = got["retrain"], got["opc"]
    assert m["avg_gap"] == pytest.approx(np.mean([abs(m[k] - r[k]) for k in ("UA", "RA", "TA", "MIA")]))
    assert m["cka_vs_original"] == pytest.approx(1.0)  # ``original`` was opc's own outputs
    # no reference of its own setting: the other setting's retrained model gives the CKA, and nobody an avg_gap
    alone = evaluate_methods({"opc": outs["opc"]}, heads, ev, original=outs["opc"], reference_outputs=outs["retrain"])
    assert "avg_gap" not in alone["opc"] and alone["opc"]["cka_vs_retrain"] == pytest.approx(m["cka_vs_retrain"])
    assert alone["opc"] == {k: v for k, v in m.items() if k != "avg_gap"}
