"""The inversion attack's replay of a requester's OPC update uses the loss and the step the requester used."""

import torch

from fed_opc.attacks.inversion import observe_update
from fed_opc.models import build_model
from strategies.attack_run import _loss_name, _replay_lr


def test_loss_names_follow_objective_layer_and_squared():
    assert _loss_name("opc", "penultimate") == "feature_norm"
    assert _loss_name("opc", "penultimate", squared=True) == "feature_norm_sq"
    assert _loss_name("opc", "logits", squared=True) == "logit_norm_sq"
    assert _loss_name("ga", None) == "ascent"
    assert _loss_name("rl", None, squared=True) == "ce"
    assert _replay_lr({"objective": "opc", "lr": 0.01, "lambda": 3.0}) == 0.01 * 3.0
    assert _replay_lr({"objective": "ga", "lr": 0.01, "lambda": 3.0}) == 0.01


def test_replayed_squared_opc_step_is_lambda_times_the_contraction_step():
    g = torch.Generator().manual_seed(0)
    model = build_model("small_cnn", 4, 3, generator=g, norm="none", width=4)
    x, y = torch.rand(3, 3, 8, 8, generator=g), torch.tensor([0, 1, 2])
    obs = {"objective": "opc", "layer": "penultimate", "squared": True, "lr": 0.05, "lambda": 2.0}
    upd = observe_update(model, x, y, steps=1, lr=_replay_lr(obs), loss=_loss_name("opc", "penultimate", True))
    # by hand: one plain SGD step on lambda * mean ||h||^2
    m = torch.nn.Module.train(model)
    loss = 2.0 * m.features(x).pow(2).sum(1).mean()
    params = dict(m.named_parameters())
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()), allow_unused=True)))
    assert set(upd.target) == set(params)
    for name, delta in upd.target.items():
        expected = torch.zeros_like(delta) if grads[name] is None else -0.05 * grads[name]  # the head gets none
        torch.testing.assert_close(delta, expected, rtol=1e-4, atol=1e-7)
