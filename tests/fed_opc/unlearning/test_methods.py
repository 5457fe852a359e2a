import dataclasses

import numpy as np
import pytest
import torch

from fed_opc.data.forget import ForgottenDataError, GuardedDataset
from fed_opc.metrics import mean_feature_norm
from fed_opc.models import build_model
from fed_opc.rng import numpy_rng, torch_rng
from fed_opc.schema import ConfigError, build
from fed_opc.train import accuracy, predict
from fed_opc.unlearning import CENTRALIZED, get_method, opc, salun
from fed_opc.unlearning.base import UnlearnData, UnlearnResult, reinitialized

ALL = (
    "retrain",
    "finetune",
    "ga",
    "rl",
    "neggrad_plus",
    "l1_sparse",
    "salun",
    "scrub",
    "bad_teacher",
    "opc",
)


def short(name: str):
    """The method's default Config capped to a couple of steps."""
    return dataclasses.replace(get_method(name).config(), max_steps=2)


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_registry_holds_the_ten_methods():
    assert sorted(CENTRALIZED) == sorted(ALL)
    for name, spec in CENTRALIZED.items():
        assert spec.name == name and spec.setting == "centralized" and callable(spec.fn)
        assert dataclasses.is_dataclass(spec.config) and spec.config.__dataclass_params__.frozen
        assert spec.config.__module__ == f"fed_opc.unlearning.{name}"


def test_unknown_method_lists_valid_names():
    with pytest.raises(KeyError) as err:
        get_method("gradient_descent")
    for name in ALL:
        assert name in str(err.value)


@pytest.mark.parametrize("name", ALL)
def test_method_runs_and_leaves_input_untouched(name, synth, pretrained):
    data, forget, retain = synth
    before = state(pretrained)
    # the guard forbids the forget indices: a method may read them only through the explicit forget view
    udata = UnlearnData(GuardedDataset(data.train, forbidden=forget), forget, retain)
    res = get_method(name).fn(pretrained, udata, short(name), generator=numpy_rng(0, name), device="cpu")
    assert isinstance(res, UnlearnResult)
    assert res.model is not pretrained
    assert list(res.model.state_dict()) == list(before)
    for k, v in pretrained.state_dict().items():
        assert torch.equal(v, before[k]), f"{name} changed the input's {k}"
    changed = any(not torch.equal(v, before[k]) for k, v in res.model.state_dict().items())
    assert changed, f"{name} returned the weights unchanged"
    assert 1 <= res.steps <= 2
    assert res.samples > 0
    assert all(np.isfinite(v) for v in res.diagnostics.values() if isinstance(v, float))


@pytest.mark.parametrize("name", ALL)
def test_method_is_deterministic_given_its_generator(name, synth, pretrained):
    data, forget, retain = synth
    udata = UnlearnData(data.train, forget, retain)
    a = get_method(name).fn(pretrained, udata, short(name), generator=numpy_rng(1, name), device="cpu")
    b = get_method(name).fn(pretrained, udata, short(name), generator=numpy_rng(1, name), device="cpu")
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k


def test_retain_only_methods_never_read_forget(synth, pretrained):
    data, forget, retain = synth
    guarded = GuardedDataset(data.train, forbidden=forget)
    # a retain set that smuggles in a forget index is caught by the guard
    leaky = UnlearnData(guarded, forget[:0], np.concatenate([retain, forget[:1]]))
    for name in ("retrain", "finetune", "l1_sparse"):
        cfg = dataclasses.replace(short(name), max_steps=None, epochs=1.0)
        with pytest.raises(ForgottenDataError):
            get_method(name).fn(pretrained, leaky, cfg, generator=numpy_rng(0, name), device="cpu")


def test_unlearn_data_rejects_overlap(synth):
    data, forget, retain = synth
    with pytest.raises(ValueError, match="overlap"):
        UnlearnData(data.train, forget, np.concatenate([retain, forget[:2]]))


def test_opc_contracts_forget_features(synth, pretrained):
    data, forget, retain = synth
    udata = UnlearnData(data.train, forget, retain)
    cfg = opc.Config(lambda_=1.0, epochs=3.0, lr=0.01, batch_size=32, forget_batch_size=32)
    res = opc.unlearn(pretrained, udata, cfg, generator=numpy_rng(0, "opc"), device="cpu")

    def ratio(model):
        f = predict(model, data.train, forget, what="features")
        r = predict(model, data.train, retain, what="features")
        return mean_feature_norm(f) / mean_feature_norm(r)

    assert ratio(res.model) < 0.5 * ratio(pretrained)
    assert accuracy(res.model, data.train, forget) < accuracy(pretrained, data.train, forget)


def test_opc_logits_layer_contracts_logits(synth, pretrained):
    data, forget, retain = synth
    udata = UnlearnData(data.train, forget, retain)
    cfg = opc.Config(lambda_=1.0, layer="logits", epochs=3.0, lr=0.01, batch_size=32, forget_batch_size=32)
    res = opc.unlearn(pretrained, udata, cfg, generator=numpy_rng(0, "opc"), device="cpu")
    before = predict(pretrained, data.train, forget).norm(dim=1).mean()
    after = predict(res.model, data.train, forget).norm(dim=1).mean()
    assert after < 0.5 * before


def test_ga_stopping_rule(synth, pretrained):
    data, forget, retain = synth
    udata = UnlearnData(data.train, forget, retain)
    cfg = get_method("ga").config(lr=0.05, stop_forget_acc=0.05, check_every=1, batch_size=16, epochs=20)
    res = get_method("ga").fn(pretrained, udata, cfg, generator=numpy_rng(0, "ga"), device="cpu")
    assert res.diagnostics["stopped_by"] in ("forget_acc", "loss")
    budget_steps = 20 * -(-len(forget) // 16)
    assert res.steps < budget_steps
    if res.diagnostics["stopped_by"] == "forget_acc":
        assert res.diagnostics["probe_forget_acc"] <= 0.05
    # a generous threshold never fires, so the budget ends the run
    capped = dataclasses.replace(cfg, stop_forget_acc=0.0, max_forget_loss=1e6, epochs=1.0, lr=1e-5)
    res = get_method("ga").fn(pretrained, udata, capped, generator=numpy_rng(0, "ga"), device="cpu")
    assert res.diagnostics["stopped_by"] == "budget"


def test_salun_moves_only_salient_weights(synth, pretrained):
    data, forget, retain = synth
    udata = UnlearnData(data.train, forget, retain)
    cfg = salun.Config(max_steps=3)
    mask = salun.saliency_mask(pretrained, data.train, np.sort(forget), cfg.mask_ratio, device="cpu")
    share = sum(float(m.sum()) for m in mask.values()) / sum(m.numel() for m in mask.values())
    assert share == pytest.approx(0.5, abs=0.01)
    res = salun.unlearn(pretrained, udata, cfg, generator=numpy_rng(0, "salun"), device="cpu")
    after = dict(res.model.named_parameters())
    moved_outside = moved_inside = 0
    for name, p in pretrained.named_parameters():
        delta = (after[name].detach() - p.detach()).abs()
        moved_outside += int(((delta > 0) & (mask[name] == 0)).sum())
        moved_inside += int(((delta > 0) & (mask[name] == 1)).sum())
    assert moved_outside == 0 and moved_inside > 0


def test_reinitialized_matches_build_model(pretrained):
    fresh = reinitialized(pretrained, torch_rng(7, "x"))
    built = build_model("small_cnn", 4, 3, generator=torch_rng(7, "x"), width=4)
    for k, v in built.state_dict().items():
        assert torch.equal(v, fresh.state_dict()[k]), k


def test_reinitialized_resets_batch_norm():
    model = build_model("small_cnn", 3, 1, generator=torch_rng(0, "bn"), norm="batch", width=4)
    model.train()
    model(torch.randn(8, 1, 8, 8) * 3 + 2)
    fresh = reinitialized(model, torch_rng(1, "bn"))
    bn = [m for m in fresh.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bn and all(torch.equal(m.running_mean, torch.zeros_like(m.running_mean)) for m in bn)
    assert all(int(m.num_batches_tracked) == 0 for m in bn)


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError) as err:
        build(opc.Config, {"lambda": -1.0}, "unlearning.opc")
    assert err.value.field == "unlearning.opc.lambda"
    with pytest.raises(ConfigError) as err:
        build(opc.Config, {"layer": "hidden"}, "unlearning.opc")
    assert err.value.field == "unlearning.opc.layer"
    with pytest.raises(ConfigError) as err:
        build(get_method("scrub").config, {"epochs": 2, "max_epochs": 3}, "unlearning.scrub")
    assert err.value.field == "unlearning.scrub.max_epochs"
    with pytest.raises(ConfigError) as err:
        build(get_method("salun").config, {"mask_ratio": 0.0}, "unlearning.salun")
    assert err.value.field == "unlearning.salun.mask_ratio"
    assert build(opc.Config, {"lambda": 2, "squared": True}, "unlearning.opc") == opc.Config(lambda_=2.0, squared=True)


@pytest.mark.parametrize("name", ALL)
def test_every_config_builds_from_an_empty_block(name):
    spec = get_method(name)
    assert build(spec.config, {}, f"unlearning.{name}") == spec.config()
