import copy
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from fed_opc.attacks import RECOVERY, AttackerSamples, RecoveryOutput, SampleSet, ServerView, run_recovery, score
from fed_opc.attacks.recovery import (
    Config,
    add_normalised_recovery,
    eval_call,
    floor_ua,
    is_measurable,
    normalised_recovery,
    scores_from_features,
)
from fed_opc.data.datasets import load_dataset
from fed_opc.losses import cross_entropy
from fed_opc.models import FeatureModel, build_model, init_weights
from fed_opc.rng import numpy_rng, torch_rng
from fed_opc.train import OptimConfig, accuracy, make_optimizer, predict, supervised_batches, train_loop

NUM_CLASSES = 4


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # These models are tiny: a second thread buys nothing and, on a busy machine, its spin-waits cost a lot.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data():
    # 4 balanced classes of 8x8 RGB images: every class has exactly n/4 samples in each split.
    return load_dataset("synthetic", synthetic=(0, 400, 400, NUM_CLASSES, 8, 3, 0.25))


def split(pair, forgotten):
    """Forget = training samples of the forgotten classes; calibration = 150 test samples (public data the server
    holds, of every class); the attacker's labelled samples: the other test samples."""
    tr, te = pair.train, pair.test
    forget = SampleSet(tr, np.flatnonzero(np.isin(tr.labels, forgotten)))
    cal = SampleSet(te, np.arange(150))
    rest = np.arange(150, len(te))
    aux = AttackerSamples(te, rest[np.isin(te.labels[rest], forgotten)], rest[~np.isin(te.labels[rest], forgotten)])
    return forget, cal, aux


@pytest.fixture(scope="module")
def trained(data):
    """A small CNN trained on every class (UA on any class well below 1)."""
    return train(cnn(1, width=8), data, np.arange(len(data.train)), 150)


def cnn(seed, width=4):
    return build_model("small_cnn", NUM_CLASSES, 3, generator=torch_rng(seed, "test_model"), width=width)


def zeroed(model):
    """A copy whose features are exactly zero for every input (the last conv's weights and bias set to 0)."""
    m = copy.deepcopy(model)
    last = [mod for mod in m.modules() if isinstance(mod, nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    return m


def reencoded(model, seed=0):
    """A copy whose features are an invertible affine transform of the original's (and with a fresh head)."""
    d = model.feature_dim
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    mix = nn.Linear(d, d)
    with torch.no_grad():
        mix.weight.copy_(q * torch.linspace(0.5, 3.0, d))  # orthogonal times a spread of scales: well conditioned
        mix.bias.copy_(torch.randn(d, generator=g))
    head = init_weights(nn.Linear(d, NUM_CLASSES), torch.Generator().manual_seed(seed + 1))
    return FeatureModel(nn.Sequential(copy.deepcopy(model.body), mix), head)


class CoarsePixels(nn.Module):
    """Features = 4x4 block means of the image: the synthetic classes' prototypes are constant on such blocks, so
    these features separate the classes well."""

    def forward(self, x):
        return nn.functional.avg_pool2d(x, 4).flatten(1)


def pixel_model():
    return init_weights(FeatureModel(CoarsePixels(), nn.Linear(12, NUM_CLASSES)), torch.Generator().manual_seed(0))


def ua(model, s: SampleSet):
    return 1.0 - accuracy(model, s.data, s.idx)


# ---------------------------------------------------------------------------------------------------------------------


def test_registry_holds_the_contract_names():
    assert set(RECOVERY) == {"fm", "hr", "probe", "forget_probe", "prototype", "relearn"}


def test_floor_ua_is_one_minus_the_largest_share():
    assert floor_ua(np.array([0, 0, 1, 2])) == 0.5
    assert floor_ua(np.array([3, 3, 3])) == 0.0
    with pytest.raises(ValueError):
        floor_ua(np.array([], dtype=np.int64))


def test_normalised_recovery_by_hand():
    # floor UA 0.6 (acc_floor 0.4), original forget accuracy 0.9: the range is 0.5
    assert normalised_recovery(0.4, 0.6, 0.9) == pytest.approx(0.4)  # (0.6 - 0.4) / 0.5
    assert normalised_recovery(0.6, 0.6, 0.9) == 0.0  # at the floor: deep
    assert normalised_recovery(0.1, 0.6, 0.9) == pytest.approx(1.0)  # the original's accuracy: shallow
    assert normalised_recovery(0.7, 0.6, 0.9) == pytest.approx(-0.2)  # below the floor: not clipped
    assert normalised_recovery(0.05, 0.6, 0.9) == pytest.approx(1.1)  # above the original: not clipped
    with pytest.raises(ValueError, match="not measurable"):
        normalised_recovery(0.0, 0.0, 1.0)  # one forgotten class: the floor is 100% accuracy


def test_measurable_needs_15_points_between_floor_and_original():
    assert is_measurable(0.5, 0.65)  # range 0.15
    assert not is_measurable(0.5, 0.64)
    assert not is_measurable(0.0, 1.0)  # a single forgotten class
    assert is_measurable(0.9, 0.8)  # a whole-client deletion over 10 classes: range 0.7


def test_add_normalised_recovery_by_hand():
    block = {
        "floor_UA": 0.6,
        "fm": {"UA": 0.4, "UA_restricted": 0.3, "entropy": 1.0},
        "relearn": {"UA": 0.1, "steps": [1, 5], "UA_steps": [0.6, 0.1], "entropy": 0.5},
        "forget_probe": {"acc": 0.9, "chance": 0.5, "entropy": 0.1},
    }
    add_normalised_recovery(block, 0.9)
    assert block["acc_original"] == 0.9 and block["measurable"] is True
    assert block["fm"]["recovery"] == pytest.approx(0.4)
    assert block["relearn"]["recovery"] == pytest.approx(1.0)
    assert block["relearn"]["recovery_steps"] == pytest.approx([0.0, 1.0])
    assert "recovery" not in block["forget_probe"]  # scored among forgotten classes, against chance
    flat = add_normalised_recovery({"floor_UA": 0.0, "fm": {"UA": 0.2}}, 1.0)
    assert flat == {"floor_UA": 0.0, "fm": {"UA": 0.2}, "acc_original": 1.0, "measurable": False}


def test_score_reads_the_restricted_argmax(data):
    forget, _, _ = split(data, [0, 1])

    def predictor(x):
        # Always class 2 (not forgotten); among the forgotten classes, class 0 scores higher than class 1.
        return torch.tensor([[1.0, 0.0, 5.0, -1.0]]).expand(len(x), -1)

    out = score(RecoveryOutput(predict=predictor, restrict_to=(0, 1)), forget)
    assert out["UA"] == 1.0
    assert out["UA_restricted"] == 0.5  # forget set balanced over classes 0 and 1
    assert out["floor_UA"] == 0.5
    p = torch.softmax(torch.tensor([1.0, 0.0, 5.0, -1.0]).double(), 0)
    assert out["entropy"] == pytest.approx(float(-(p * p.log()).sum()))
    # one forgotten class: the restricted read-out is always right, so it is not reported
    assert "UA_restricted" not in score(RecoveryOutput(predict=predictor, restrict_to=(0,)), forget)


def test_fm_recovers_an_invertible_reencoding_exactly(data, trained):
    forget, cal, _ = split(data, [0, 1])
    original = trained
    view = ServerView(original=original, unlearned=reencoded(original), calibration=cal, forgotten_classes=(0, 1))
    out = RECOVERY["fm"](view, Config(), "cpu")
    x, _ = forget.tensors()
    assert torch.equal(out.predict(x).argmax(1), predict(original, forget.data, forget.idx).argmax(1))
    res = run_recovery(view, ["fm"], forget)
    assert res["fm"]["UA"] == ua(original, forget)
    assert res["acc_original"] == 1.0 - ua(original, forget) and res["measurable"] is True
    assert res["fm"]["recovery"] == 1.0  # everything the original knew is read back
    # the unlearned model's own head reads the re-encoded features differently
    assert ua(original, forget) <= 0.2
    assert ua(view.unlearned, forget) >= 0.4


def test_hr_recovers_an_invertible_reencoding(data, trained):
    forget, cal, _ = split(data, [0, 1])
    original = trained
    view = ServerView(original=original, unlearned=reencoded(original), calibration=cal, forgotten_classes=(0, 1))
    out = RECOVERY["hr"](view, Config(logistic_c=100.0), "cpu")
    x, _ = forget.tensors()
    agree = (out.predict(x).argmax(1) == predict(original, forget.data, forget.idx).argmax(1)).double().mean()
    assert agree >= 0.9
    res = run_recovery(view, ["hr"], forget, settings=Config(logistic_c=100.0))
    assert abs(res["hr"]["UA"] - ua(original, forget)) <= 0.1


@pytest.mark.parametrize("name", ["fm", "hr"])
def test_training_free_attacks_on_zero_features_score_the_floor(data, trained, name):
    forget, cal, _ = split(data, [0, 1])
    original = trained
    view = ServerView(original=original, unlearned=zeroed(original), calibration=cal, forgotten_classes=(0, 1))
    x, _ = forget.tensors()
    assert torch.count_nonzero(view.unlearned.features(x)) == 0
    preds = RECOVERY[name](view, Config(), "cpu").predict(x).argmax(1)
    assert len(preds.unique()) == 1  # one point in feature space: one prediction
    res = run_recovery(view, [name], forget)
    floor = res["floor_UA"]
    assert floor == 0.5
    # A constant read-out among two balanced forgotten classes is right on exactly half of them: exactly the floor.
    assert res[name]["UA_restricted"] == floor
    assert res[name]["UA"] in (floor, 1.0)
    # at the floor: recovery 0; a constant prediction of a retained class: below 0 by (1 - 0.5) / (acc_original - 0.5)
    expected = 0.0 if res[name]["UA"] == floor else -0.5 / (res["acc_original"] - 0.5)
    assert res[name]["recovery"] == pytest.approx(expected)


def test_kshot_attacks_read_separable_features(data):
    forget, cal, aux = split(data, [0, 1])
    model = pixel_model()
    view = ServerView(original=model, unlearned=model, calibration=cal, forgotten_classes=(0, 1), aux=aux)
    res = run_recovery(view, ["probe", "prototype", "forget_probe"], forget, k_shot=10)
    assert res["probe"]["UA"] <= 0.05
    assert res["prototype"]["UA"] <= 0.05
    assert res["forget_probe"]["acc"] >= 0.95
    assert res["forget_probe"]["chance"] == 0.5


def test_kshot_attacks_on_zero_features_stay_at_chance(data, trained):
    forget, cal, aux = split(data, [0, 1])
    original = trained
    view = ServerView(original=original, unlearned=zeroed(original), calibration=cal, forgotten_classes=(0, 1), aux=aux)
    res = run_recovery(view, ["probe", "prototype", "forget_probe"], forget, k_shot=10)
    assert res["forget_probe"]["acc"] == res["forget_probe"]["chance"] == 0.5
    assert res["probe"]["UA"] in (0.5, 1.0)
    assert res["prototype"]["UA"] in (0.5, 1.0)
    # every class mean is the same point: the posterior is uniform over the four classes
    assert res["prototype"]["entropy"] == pytest.approx(math.log(NUM_CLASSES))


def test_forget_probe_is_absent_for_one_forgotten_class(data):
    forget, cal, aux = split(data, [0])
    model = pixel_model()
    view = ServerView(original=model, unlearned=model, calibration=cal, forgotten_classes=(0,), aux=aux)
    res = run_recovery(view, ["forget_probe", "fm"], forget)
    assert "forget_probe" not in res
    assert set(res["fm"]) == {"UA", "entropy"}  # no UA_restricted with one class, no recovery (not measurable)
    assert res["floor_UA"] == 0.0
    assert res["measurable"] is False and res["acc_original"] == 1.0 - ua(model, forget)


def train(model, pair, idx, steps, seed=0):
    batches = supervised_batches(pair.train, idx, 32, 100, numpy_rng(seed, "test_train"))
    opt = make_optimizer(model.parameters(), OptimConfig(lr=0.05, momentum=0.9))
    train_loop(model, cross_entropy, (b for _, b in zip(range(steps), batches)), opt)
    return model


def test_relearn_brings_back_a_class_the_model_never_learned(data, trained):
    forget, cal, aux = split(data, [0])
    retain = np.flatnonzero(data.train.labels != 0)
    unlearned = train(cnn(3, width=8), data, retain, 150)  # retrained without class 0
    before = {k: v.clone() for k, v in unlearned.state_dict().items()}
    assert ua(unlearned, forget) == 1.0
    view = ServerView(original=trained, unlearned=unlearned, calibration=cal, forgotten_classes=(0,), aux=aux)
    res = run_recovery(view, ["relearn"], forget, k_shot=10, relearn_steps=(1, 5, 20), settings=Config(relearn_lr=0.05))
    entry = res["relearn"]
    assert entry["steps"] == [1, 5, 20]
    assert entry["UA"] == entry["UA_steps"][-1]
    assert entry["UA"] <= 0.5
    assert all(torch.equal(before[k], v) for k, v in unlearned.state_dict().items())  # the view's model is untouched


def test_run_recovery_produces_the_contract_block(data, trained):
    forget, cal, aux = split(data, [0, 1])
    original = trained
    view = ServerView(original=original, unlearned=original, calibration=cal, forgotten_classes=(0, 1), aux=aux)
    res = run_recovery(view, list(RECOVERY), forget, k_shot=5, relearn_steps=(1, 2))
    assert set(res) == {"floor_UA", "acc_original", "measurable", *RECOVERY}
    assert res["measurable"] is True
    assert set(res["fm"]) == set(res["hr"]) == {"UA", "UA_restricted", "entropy", "recovery"}
    assert set(res["probe"]) == set(res["prototype"]) == {"UA", "entropy", "recovery"}
    assert set(res["forget_probe"]) == {"acc", "chance", "entropy"}
    assert set(res["relearn"]) == {"UA", "steps", "UA_steps", "entropy", "recovery", "recovery_steps"}
    for name in ("fm", "hr", "probe", "prototype", "relearn"):
        assert res[name]["recovery"] == normalised_recovery(res[name]["UA"], res["floor_UA"], res["acc_original"])
    fractions = [res["floor_UA"], res["forget_probe"]["acc"], *res["relearn"]["UA_steps"]]
    fractions += [
        v for e in res.values() if isinstance(e, dict) for k, v in e.items() if k.startswith("UA") and k != "UA_steps"
    ]
    assert all(0.0 <= f <= 1.0 for f in fractions)
    json.dumps(res)


def test_run_recovery_refuses_leaked_ground_truth(data):
    forget, cal, aux = split(data, [0, 1])
    model = pixel_model()
    leaky_cal = SampleSet(forget.data, np.concatenate([forget.idx[:3], np.arange(5)]))
    with pytest.raises(ValueError, match="calibration"):
        run_recovery(ServerView(original=model, unlearned=model, calibration=leaky_cal), ["fm"], forget)
    leaky_aux = AttackerSamples(forget.data, forget.idx[:5], aux.retain_idx)
    view = ServerView(original=model, unlearned=model, calibration=cal, aux=leaky_aux)
    with pytest.raises(ValueError, match="labelled samples"):
        run_recovery(view, ["probe"], forget)
    with pytest.raises(KeyError, match="valid"):
        run_recovery(view, ["nope"], forget)
    with pytest.raises(ValueError, match="aux"):
        run_recovery(ServerView(original=model, unlearned=model, calibration=cal), ["probe"], forget)


def test_one_shared_feature_pass_scores_exactly_as_running_each_predictor(data, trained):
    # More than one scoring chunk (512), so the shared pass and the per-attack passes must chunk alike.
    more = load_dataset("synthetic", synthetic=(1, 1200, 4, NUM_CLASSES, 8, 3, 0.25)).train
    forget = SampleSet(more, np.arange(len(more)))
    _, cal, aux = split(data, [0, 1])
    unlearned = reencoded(trained)
    view = ServerView(original=trained, unlearned=unlearned, calibration=cal, forgotten_classes=(0, 1), aux=aux)
    cfg = Config(k_shot=5)
    calls = []

    def features():
        calls.append(1)
        return predict(unlearned, forget.data, forget.idx, what="features")

    for name in ("fm", "hr", "probe", "prototype"):
        out = RECOVERY[name](view, cfg, "cpu")
        assert out.on_features is not None
        assert score(out, forget, features=features) == score(out, forget)  # bit for bit
    assert len(calls) == 4 and len(forget) == 1200


def test_calibration_features_are_computed_once_per_view_and_model():
    view = ServerView(original=nn.Identity(), unlearned=nn.Linear(1, 1), calibration=SampleSet(None, np.arange(3)))
    calls = []

    def compute(model, samples):
        calls.append(type(model).__name__)
        return torch.full((len(samples), 2), float(len(calls)))

    first = view.calibration_features("unlearned", compute)
    assert view.calibration_features("unlearned", compute) is first
    assert view.calibration_features("original", compute).tolist() == [[2.0, 2.0]] * 3
    assert view.calibration_features("original", compute).tolist() == [[2.0, 2.0]] * 3
    assert calls == ["Linear", "Identity"]
    # the server's readings of the original model, given: nothing computed for it
    given = torch.zeros(3, 2)
    other = ServerView(
        original=nn.Identity(), unlearned=nn.Identity(), calibration=view.calibration, original_features=given
    )
    assert other.calibration_features("original", compute) is given and len(calls) == 2
    with pytest.raises(ValueError, match="2 rows for 3 calibration samples"):
        ServerView(
            original=nn.Identity(), unlearned=nn.Identity(), calibration=view.calibration, original_features=given[:2]
        )


def test_readings_of_the_original_given_once_leave_every_result_bit_for_bit(data, trained):
    # What attack_all computes once for every method (the original's calibration features, its forget accuracy)
    # gives the block that each view computing them itself gives; hr's targets (the original's head on those
    # features) are its predictions on the images, chunk by chunk.
    forget, cal, aux = split(data, [0, 1])
    unlearned = reencoded(trained)
    names = ["fm", "hr", "probe", "prototype", "relearn"]
    plain = ServerView(original=trained, unlearned=unlearned, calibration=cal, forgotten_classes=(0, 1), aux=aux)
    alone = run_recovery(plain, names, forget, k_shot=5, relearn_steps=(1, 3))
    feats = predict(trained, cal.data, cal.idx, what="features")
    acc = accuracy(trained, forget.data, forget.idx)
    given = ServerView(
        original=trained, unlearned=unlearned, calibration=cal, forgotten_classes=(0, 1), aux=aux,
        original_features=feats,
    )  # fmt: skip
    shared = run_recovery(given, names, forget, k_shot=5, relearn_steps=(1, 3), acc_original=acc)
    assert json.dumps(shared, sort_keys=True) == json.dumps(alone, sort_keys=True)
    assert shared["acc_original"] == acc
    more = load_dataset("synthetic", synthetic=(1, 1200, 4, NUM_CLASSES, 8, 3, 0.25)).train  # 3 chunks of 512
    all_idx = np.arange(len(more))
    on_feats = scores_from_features(
        eval_call(trained, trained.head), predict(trained, more, all_idx, what="features"), "cpu"
    )
    assert torch.equal(on_feats, predict(trained, more, all_idx))
