import copy

import numpy as np
import pytest
import torch
from torch import nn

from fed_opc.attacks import INVERSION_TARGETS, SampleSet, ServerView, run_inversion
from fed_opc.attacks.images import baseline_psnr, psnr
from fed_opc.attacks.inversion import (
    Config,
    ImageSpace,
    cosine_cost,
    infer_labels,
    invert,
    observe_gradient,
    observe_update,
    trial_quantity,
)
from fed_opc.data.datasets import load_dataset
from fed_opc.models import FeatureModel, build_model, init_weights


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # These models are tiny: a second thread buys nothing and, on a busy machine, its spin-waits cost a lot.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", synthetic=(0, 64, 64, 10, 8, 3, 0.25)).train


@pytest.fixture(scope="module")
def space(data):
    return ImageSpace.of(data)


def fc(num_classes=10, seed=1):
    """A tiny fully connected FeatureModel on 8x8 RGB images: its first layer's gradient holds the input."""
    m = FeatureModel(nn.Sequential(nn.Flatten(), nn.Linear(192, 32), nn.ReLU()), nn.Linear(32, num_classes))
    return init_weights(m, torch.Generator().manual_seed(seed))


def view_of(model, data, **kw):
    return ServerView(original=model, unlearned=model, calibration=SampleSet(data, np.arange(8)), **kw)


def test_registry_holds_the_three_targets():
    assert set(INVERSION_TARGETS) == {"global_model", "unlearning_update", "model_difference"}


def test_config_defaults_are_the_measured_working_setting():
    cfg = Config()
    assert (cfg.iterations, cfg.restarts, cfg.lr, cfg.tv, cfg.init_std) == (2000, 2, 0.1, 1e-3, 0.1)
    assert cfg.signed and cfg.decay and cfg.replay and cfg.labels == "infer"


def test_config_from_scenario_keeps_the_default_tv_for_null():
    from fed_opc.config import InversionConfig

    assert Config.from_scenario(InversionConfig(iterations=7, tv=None)).tv == 1e-3
    assert Config.from_scenario(InversionConfig(iterations=7, tv=0.01)).tv == 0.01


def test_label_inference_from_the_bias_gradient(data):
    model = build_model("small_cnn", 10, 3, generator=torch.Generator().manual_seed(0), width=4)
    x, y = data.tensors(np.arange(40))
    bias = "head.bias"
    # one image at a time (iDLG): the single negative entry
    for i in range(20):
        obs = observe_gradient(model, x[i : i + 1], y[i : i + 1])
        assert infer_labels(obs.target[bias], 1).tolist() == [int(y[i])]
    # a batch of distinct labels: the negative entries
    pick = [int(np.flatnonzero(data.labels[:40] == c)[0]) for c in (1, 4, 6, 9, 0)]
    obs = observe_gradient(model, x[pick], y[pick])
    assert sorted(infer_labels(obs.target[bias], 5).tolist()) == sorted(y[pick].tolist())
    # a repeated label: the count comes from the class's share of the negative mass
    pick = [int(i) for i in np.flatnonzero(data.labels[:40] == 3)[:2]] + pick[:2]
    obs = observe_gradient(model, x[pick], y[pick])
    assert sorted(infer_labels(obs.target[bias], 4).tolist()) == sorted(y[pick].tolist())
    # a multi-step update: minus the update points along the summed gradients
    obs = observe_update(model, x[pick], y[pick], steps=3, lr=0.1)
    assert sorted(infer_labels(-obs.target[bias], 4).tolist()) == sorted(y[pick].tolist())


def test_cosine_cost_is_scale_free():
    a = [torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])]
    assert float(cosine_cost(a, [5 * t for t in a])) == pytest.approx(0.0, abs=1e-6)
    assert float(cosine_cost(a, [-t for t in a])) == pytest.approx(2.0)
    assert float(cosine_cost([torch.zeros(2)], [torch.ones(2)])) == 1.0  # a zero gradient stays finite


def test_inversion_of_one_image_through_a_fully_connected_model(data, space):
    model = fc()
    x, y = data.tensors([0])
    truth = space.to01(x)
    inv = invert(observe_gradient(model, x, y), model, Config(iterations=200, restarts=1), space)
    assert inv.labels.tolist() == y.tolist()
    p = float(psnr(inv.images, truth))
    assert p > 25.0
    assert p > float(baseline_psnr(truth, space.mean)) + 10


def test_inversion_through_zeroed_features_stays_at_the_flat_image(data, space):
    model = build_model("small_cnn", 10, 3, generator=torch.Generator().manual_seed(0), width=4)
    last = [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    x, y = data.tensors([5])
    truth = space.to01(x)
    obs = observe_gradient(model, x, y)
    # Only the head bias has a gradient, and it does not depend on the image.
    assert all(torch.count_nonzero(g) == 0 for n, g in obs.target.items() if n != "head.bias")
    inv = invert(obs, model, Config(iterations=150, restarts=1), space)
    assert abs(float(psnr(inv.images, truth)) - float(baseline_psnr(truth, space.mean))) < 1.0


def test_replaying_the_true_images_reproduces_the_observed_update(data):
    model = fc()
    x, y = data.tensors([1, 2, 3])
    obs = observe_update(model, x, y, steps=5, lr=0.3, batch_size=2)
    assert obs.local_steps == 5 and obs.kind == "update"
    replayed = trial_quantity(model, obs, x, y, replay=True)
    assert float(cosine_cost(replayed, list(obs.target.values()))) < 1e-5
    for name, r in zip(obs.target, replayed):
        torch.testing.assert_close(r, obs.target[name], atol=1e-5, rtol=1e-4)
    # Read as one gradient, the same update matches less well.
    one = trial_quantity(model, obs, x, y, replay=False)
    assert float(cosine_cost(one, [-t for t in obs.target.values()])) > 1e-3


def test_multi_step_update_is_inverted_by_replay(data, space):
    model = fc()
    x, y = data.tensors([1, 2])
    obs = observe_update(model, x, y, steps=4, lr=0.3, batch_size=1)
    view = view_of(model, data, updates=(obs,))
    truth = space.to01(x)
    res = run_inversion(view, "unlearning_update", Config(iterations=200, restarts=1), [truth], space, truth_labels=[y])
    assert res["label_acc"] == 1.0
    assert sorted(r["truth_index"] for r in res["per_image"]) == [0, 1]
    assert min(r["psnr"] for r in res["per_image"]) > 25.0


def test_model_difference_is_matched_into_the_forget_pool(data, space):
    original = fc()
    x, y = data.tensors([7])
    obs = observe_update(original, x, y, steps=1, lr=0.1)
    unlearned = copy.deepcopy(original)
    with torch.no_grad():
        for n, p in unlearned.named_parameters():
            p.add_(obs.target[n])
    view = ServerView(original=original, unlearned=unlearned, calibration=SampleSet(data, np.arange(8)))
    pool = space.to01(data.tensors([3, 7, 11])[0])
    res = run_inversion(view, "model_difference", Config(iterations=200, restarts=1), [pool], space)
    (row,) = res["per_image"]
    assert row["truth_index"] == 1
    assert row["psnr"] > 25.0


def test_run_inversion_output_and_grid(data, space, tmp_path):
    model = fc()
    x, y = data.tensors([0, 1, 2])
    obs = tuple(observe_gradient(model, x[i : i + 1], y[i : i + 1]) for i in range(3))
    view = view_of(model, data, gradients=obs)
    cfg = Config(iterations=60, restarts=2, images=2)
    truth = [space.to01(x[i : i + 1]) for i in range(3)]
    res = run_inversion(
        view,
        "global_model",
        cfg,
        truth,
        space,
        truth_labels=[y[i : i + 1] for i in range(3)],
        grid_path=tmp_path / "g.png",
    )
    assert set(res) == {"psnr", "ssim", "baseline_psnr", "per_image", "label_acc"}
    assert len(res["per_image"]) == 2  # cfg.images caps the observations attacked
    assert set(res["per_image"][0]) == {"observation", "truth_index", "psnr", "ssim", "baseline_psnr", "label", "cost"}
    assert res["psnr"] == pytest.approx(np.mean([r["psnr"] for r in res["per_image"]]))
    assert 0.0 <= res["ssim"] <= 1.0
    from PIL import Image

    assert Image.open(tmp_path / "g.png").size == ((2 * 8 + 2) * 4, (2 * 8 + 2) * 4)
    with pytest.raises(KeyError, match="valid"):
        run_inversion(view, "nope", cfg, truth, space)
    with pytest.raises(ValueError, match="ground truth"):
        run_inversion(view, "global_model", cfg, truth[:1], space)
    with pytest.raises(ValueError, match="no unlearning updates"):
        run_inversion(view, "unlearning_update", cfg, truth, space)


def test_given_labels_need_public_labels(data, space):
    model = fc()
    x, y = data.tensors([0])
    with pytest.raises(ValueError, match="no labels"):
        invert(observe_gradient(model, x, y), model, Config(iterations=1, restarts=1, labels="given"), space)
    inv = invert(
        observe_gradient(model, x, y, labels_public=True),
        model,
        Config(iterations=1, restarts=1, labels="given"),
        space,
    )
    assert inv.labels.tolist() == y.tolist()
