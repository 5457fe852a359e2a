import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fed_opc.attacks import INVERSION_TARGETS, SampleSet, ServerView, run_inversion
from fed_opc.attacks.images import dataset_mean_psnr, own_mean_psnr, psnr
from fed_opc.attacks.inversion import (
    BN_MEAN,
    BN_VAR,
    INFORMATIVE_MARGIN_DB,
    Config,
    ImageSpace,
    bn_costs,
    calibration,
    combine_restarts,
    cosine_cost,
    cosine_costs,
    infer_labels,
    invert,
    invert_many,
    observe_gradient,
    observe_update,
    read_against,
    total_variation,
    total_variations,
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
    assert (cfg.iterations, cfg.restarts, cfg.lr, cfg.tv, cfg.init_std, cfg.images) == (2000, 2, 0.1, 1e-2, 0.1, 4)
    assert cfg.signed and cfg.decay and cfg.replay and cfg.joint and cfg.labels == "infer" and cfg.bn_stats == 0.0


def test_config_from_scenario_keeps_the_default_tv_for_null():
    from fed_opc.config import InversionConfig

    assert Config.from_scenario(InversionConfig(iterations=7, tv=None)).tv == 1e-2
    assert Config.from_scenario(InversionConfig(iterations=7, tv=0.001)).tv == 0.001
    assert Config.from_scenario(InversionConfig(iterations=7, bn_stats=0.5)).bn_stats == 0.5
    # the scenario block's defaults are the working setting
    assert Config.from_scenario(InversionConfig()) == Config()


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
    inv = invert(observe_gradient(model, x, y), model, Config(iterations=200, restarts=1, tv=1e-3), space)
    assert inv.labels.tolist() == y.tolist()
    p = float(psnr(inv.images, truth))
    assert p > 25.0
    assert p > float(own_mean_psnr(truth)) + 10


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
    assert abs(float(psnr(inv.images, truth)) - float(dataset_mean_psnr(truth, space.mean))) < 1.0


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
    res = run_inversion(
        view, "unlearning_update", Config(iterations=200, restarts=1, tv=1e-3), [truth], space, truth_labels=[y]
    )
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
    res = run_inversion(view, "model_difference", Config(iterations=200, restarts=1, tv=1e-3), [pool], space)
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
    assert set(res) == {
        "psnr",
        "ssim",
        "baseline_psnr",
        "baseline_psnr_dataset_mean",
        "margin_db",
        "per_image",
        "label_acc",
    }
    assert len(res["per_image"]) == 2  # cfg.images caps the observations attacked
    assert set(res["per_image"][0]) == {
        "observation",
        "truth_index",
        "psnr",
        "ssim",
        "baseline_psnr",
        "baseline_psnr_dataset_mean",
        "label",
        "cost",
    }
    assert res["psnr"] == pytest.approx(np.mean([r["psnr"] for r in res["per_image"]]))
    assert res["margin_db"] == pytest.approx(res["psnr"] - res["baseline_psnr"])
    # the baselines are the flat images of each true image's own mean colour, and of the dataset-mean colour
    shown = torch.cat([truth[r["observation"]][r["truth_index"] : r["truth_index"] + 1] for r in res["per_image"]])
    assert [r["baseline_psnr"] for r in res["per_image"]] == pytest.approx(own_mean_psnr(shown).tolist())
    assert [r["baseline_psnr_dataset_mean"] for r in res["per_image"]] == pytest.approx(
        dataset_mean_psnr(shown, space.mean).tolist()
    )
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


def small_bn_cnn(seed=0):
    return build_model("small_cnn", 10, 3, generator=torch.Generator().manual_seed(seed), width=4, norm="batch")


def test_joint_optimisation_follows_each_problem_alone(data, space):
    # Three single-image gradients at one model in eval mode, two restarts each: six independent problems in one
    # vectorised batch give the images and gradient matches that six separate optimisations give.
    model = small_bn_cnn()
    x, y = data.tensors([0, 1, 2])
    obs = [observe_gradient(model, x[i : i + 1], y[i : i + 1]) for i in range(3)]
    results = {}
    for joint in (True, False):
        cfg = Config(iterations=12, restarts=2, joint=joint)
        gens = [torch.Generator().manual_seed(10 + i) for i in range(3)]
        results[joint] = invert_many(obs, model, cfg, space, generators=gens)
    for a, b in zip(results[True], results[False]):
        assert a.labels.tolist() == b.labels.tolist()
        assert a.costs == pytest.approx(b.costs, abs=1e-5)
        torch.testing.assert_close(a.images, b.images, atol=1e-5, rtol=0)
    # invert() on one observation is invert_many() on a list of one
    one = invert(obs[1], model, Config(iterations=12, restarts=2), space, generator=torch.Generator().manual_seed(11))
    torch.testing.assert_close(one.images, results[True][1].images, atol=1e-5, rtol=0)


def test_restarts_combine_into_their_mean_after_alignment_or_the_best_alone():
    # Two restarts of a two-image observation; restart 1 (the best: cost 0.1) found the images in the other order.
    a, b = torch.full((3, 2, 2), 0.2), torch.full((3, 2, 2), 0.8)
    restarts = torch.stack([torch.stack([a, b]), torch.stack([b + 0.1, a + 0.1])])
    mean, aligned = combine_restarts(restarts, (0.5, 0.1), "mean")
    # restart 0 is put in restart 1's order (b first), then the pixel mean: b -> (0.9 + 0.8) / 2, a -> (0.3 + 0.2) / 2
    torch.testing.assert_close(aligned[0], torch.stack([b, a]))
    torch.testing.assert_close(mean, torch.stack([torch.full((3, 2, 2), 0.85), torch.full((3, 2, 2), 0.25)]))
    best, _ = combine_restarts(restarts, (0.5, 0.1), "best")
    torch.testing.assert_close(best, restarts[1])
    with pytest.raises(ValueError, match="combine"):
        Config(combine="median")


def test_the_attack_outputs_the_mean_of_the_restarts_it_ran(data, space):
    # The same optimisation under both settings: the restarts agree, and each output is its combination of them.
    model = small_bn_cnn()
    x, y = data.tensors([0])
    obs = observe_gradient(model, x, y)
    out = {
        how: invert(obs, model, Config(iterations=8, restarts=3, combine=how), space, generator=torch.Generator())
        for how in ("mean", "best")
    }
    torch.testing.assert_close(out["mean"].restarts, out["best"].restarts)
    assert out["mean"].costs == out["best"].costs
    torch.testing.assert_close(out["mean"].images, out["mean"].restarts.mean(0))
    best = min(range(3), key=lambda r: out["best"].costs[r])
    torch.testing.assert_close(out["best"].images, out["best"].restarts[best])
    assert not torch.allclose(out["mean"].images, out["best"].images)


def test_batched_costs_are_the_per_problem_costs():
    g = torch.Generator().manual_seed(0)
    trial = [torch.randn(3, 4, generator=g), torch.randn(3, 2, 2, generator=g)]
    target = [torch.randn(3, 4, generator=g), torch.randn(3, 2, 2, generator=g)]
    per = [float(cosine_cost([t[p] for t in trial], [t[p] for t in target])) for p in range(3)]
    assert cosine_costs(trial, target).tolist() == pytest.approx(per, abs=1e-6)
    x = torch.rand(3, 2, 3, 5, 5, generator=g)
    assert total_variations(x).tolist() == pytest.approx([float(total_variation(x[p])) for p in range(3)], abs=1e-6)


def smooth_images(n, seed=0):
    """Natural-looking 8x8 RGB images in [0.1, 0.9]: a random 3x3 colour grid, bilinearly upsampled."""
    coarse = torch.rand(n, 3, 3, 3, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(coarse, size=(8, 8), mode="bilinear", align_corners=True) * 0.8 + 0.1


def test_single_image_through_a_tiny_untrained_cnn_beats_the_own_mean_flat_image():
    # Two conv layers (batch norm, eval mode), global average pooling, linear head: the GAP CNN's shape, in small.
    body = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    model = init_weights(FeatureModel(body, nn.Linear(16, 10)), torch.Generator().manual_seed(1)).eval()
    space = ImageSpace((3, 8, 8), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    truth = smooth_images(2)
    x, y = (truth - 0.5) / 0.25, torch.tensor([2, 7])
    obs = tuple(observe_gradient(model, x[i : i + 1], y[i : i + 1]) for i in range(2))
    data = load_dataset("synthetic", synthetic=(0, 16, 16, 10, 8, 3, 0.25)).train  # the view's (unused) calibration
    res = run_inversion(
        view_of(model, data, gradients=obs),
        "global_model",
        Config(iterations=200, restarts=1, images=2),
        [truth[i : i + 1] for i in range(2)],
        space,
        truth_labels=[y[i : i + 1] for i in range(2)],
    )
    assert res["label_acc"] == 1.0
    assert all(r["psnr"] > r["baseline_psnr"] + INFORMATIVE_MARGIN_DB for r in res["per_image"])
    assert calibration(res)["informative"] is True


def test_calibration_marks_a_comparison_uninformative_below_the_margin():
    assert INFORMATIVE_MARGIN_DB == 2.0
    good = calibration({"psnr": 17.5, "baseline_psnr": 15.0, "ssim": 0.3})
    assert good == {"psnr": 17.5, "baseline_psnr": 15.0, "ssim": 0.3, "margin_db": 2.5, "informative": True}
    edge = calibration({"psnr": 17.0, "baseline_psnr": 15.0})
    assert edge["margin_db"] == 2.0 and edge["informative"] is True
    bad = calibration({"psnr": 16.0, "baseline_psnr": 15.0})
    assert bad["margin_db"] == 1.0 and bad["informative"] is False
    assert calibration({"psnr": 16.0, "baseline_psnr": 15.0}, margin_db=0.5)["informative"] is True
    # a method's results read against it: the flag everywhere, the PSNR difference where the attack is the same
    method = {"psnr": 14.25, "baseline_psnr": 15.0}
    assert read_against(method, good, "global_model") == method | {"informative": True, "vs_original_db": -3.25}
    assert read_against(method, bad, "model_difference") == method | {"informative": False}
    assert read_against(method, None, "global_model") == method


def test_batch_norm_statistics_in_an_observation_are_what_the_running_statistics_reveal():
    # A batch-norm layer straight on the input: its batch statistics are the images' per-channel mean and variance.
    body = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model = init_weights(FeatureModel(body, nn.Linear(4, 10)), torch.Generator().manual_seed(0))
    x = torch.tensor([[[[0.0, 2.0], [4.0, 6.0]], [[1.0, 1.0], [1.0, 1.0]], [[-1.0, 1.0], [-1.0, 1.0]]]])
    x = F.pad(x, (1, 1, 1, 1))  # 4x4: the pad adds twelve zeros per channel
    obs = observe_gradient(model, x, torch.tensor([3]), train_mode=True, bn_stats=True)
    assert obs.train_mode
    # channel 0: sum 12 over 16 pixels, mean .75, E[x^2] = 56 / 16 = 3.5, variance 3.5 - .5625 = 2.9375
    torch.testing.assert_close(obs.target["body.0" + BN_MEAN], torch.tensor([0.75, 0.25, 0.0]))
    torch.testing.assert_close(obs.target["body.0" + BN_VAR], torch.tensor([2.9375, 0.1875, 0.25]))
    # A client's train-mode step moves the running mean by momentum * (batch mean - running mean): the server, which
    # sent the running mean, reads the batch mean back from the returned one.
    client = copy.deepcopy(model).train()
    client(x)
    bn = client.body[0]
    torch.testing.assert_close(bn.running_mean / bn.momentum, obs.target["body.0" + BN_MEAN])
    assert model.body[0].running_mean.abs().sum() == 0  # observing changed nothing
    # the attack's forward model reproduces the train-mode gradient on the true image
    replayed = trial_quantity(model, obs, x, torch.tensor([3]))
    names = [n for n, _ in model.named_parameters()]
    assert float(cosine_cost(replayed, [obs.target[n] for n in names])) < 1e-6


def test_batch_norm_statistics_cost():
    target = [(torch.tensor([[3.0, 4.0]]), torch.tensor([[1.0, 0.0]]))]
    assert bn_costs(target, target).tolist() == [0.0]
    # means off by (3, 4) - (0, 0): relative error 5 / 5 = 1; variances off by (1, 0) -> (0, 0): 1 / 1 = 1
    assert bn_costs([(torch.zeros(1, 2), torch.zeros(1, 2))], target).tolist() == [2.0]
    two = [target[0], (torch.tensor([[1.0]]), torch.tensor([[2.0]]))]
    trial = [(torch.zeros(1, 2), torch.zeros(1, 2)), (torch.tensor([[1.0]]), torch.tensor([[1.0]]))]
    assert bn_costs(trial, two).tolist() == [pytest.approx((2.0 + 0.5) / 2)]  # the mean over layers


def test_train_mode_gradients_with_statistics_are_optimised_jointly_as_alone(data, space):
    model = small_bn_cnn()
    x, y = data.tensors([0, 1])
    obs = [observe_gradient(model, x[i : i + 1], y[i : i + 1], train_mode=True, bn_stats=True) for i in range(2)]
    got = {}
    for joint in (True, False):
        cfg = Config(iterations=3, restarts=1, joint=joint, bn_stats=1.0)
        got[joint] = invert_many(
            obs, model, cfg, space, generators=[torch.Generator().manual_seed(i) for i in range(2)]
        )
    for a, b in zip(got[True], got[False]):
        assert a.costs == pytest.approx(b.costs, abs=1e-4)
        torch.testing.assert_close(a.images, b.images, atol=1e-4, rtol=0)
