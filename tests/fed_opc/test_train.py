import numpy as np
import torch

from fed_opc.losses import cross_entropy
from fed_opc.models import build_model
from fed_opc.rng import numpy_rng, torch_rng
from fed_opc.train import (
    OptimConfig,
    accuracy,
    index_batches,
    make_optimizer,
    paired_batches,
    predict,
    supervised_batches,
    train_loop,
)


def test_index_batches_cover_each_epoch():
    idx = np.arange(10, 33)
    batches = list(index_batches(idx, 5, 2, numpy_rng(0, "b")))
    allidx = np.concatenate(batches)
    assert len(allidx) == 46 and np.array_equal(np.sort(allidx[:23]), idx)
    half = np.concatenate(list(index_batches(idx, 5, 0.5, numpy_rng(0, "b"))))
    assert len(half) == 12


def test_loss_goes_down_and_accuracy_up(synthetic):
    m = build_model("small_cnn", 4, 3, generator=torch_rng(0, "init"), width=8)
    tr = np.arange(len(synthetic.train))
    te = np.arange(len(synthetic.test))
    before = accuracy(m, synthetic.test, te)
    opt = make_optimizer(m.parameters(), OptimConfig(lr=0.05, momentum=0.9))
    stats = train_loop(m, cross_entropy, supervised_batches(synthetic.train, tr, 32, 3, numpy_rng(0, "b")), opt)
    assert stats.steps == 3 * int(np.ceil(600 / 32)) and stats.samples == 1800
    assert np.mean(stats.losses[-5:]) < np.mean(stats.losses[:5]) * 0.7
    assert accuracy(m, synthetic.test, te) > max(0.6, before + 0.2)


def test_same_generators_same_weights(synthetic):
    def run():
        m = build_model("small_cnn", 4, 3, generator=torch_rng(0, "init"), width=4)
        opt = make_optimizer(m.parameters(), OptimConfig(lr=0.05))
        train_loop(m, cross_entropy, supervised_batches(synthetic.train, np.arange(200), 16, 1, numpy_rng(0, "b")), opt)
        return m.state_dict()

    a, b = run(), run()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_grad_transform_and_stop_rule(synthetic):
    m = build_model("small_cnn", 4, 3, generator=torch_rng(0, "init"), width=4)
    frozen = m.head.weight.detach().clone()

    def zero_head(model):
        model.head.weight.grad.zero_()

    opt = make_optimizer(m.parameters(), OptimConfig(lr=0.1))
    stats = train_loop(
        m,
        cross_entropy,
        supervised_batches(synthetic.train, np.arange(600), 16, 5, numpy_rng(0, "b")),
        opt,
        grad_transform=zero_head,
        should_stop=lambda s: s.steps >= 3,
    )
    assert stats.steps == 3 and torch.equal(m.head.weight, frozen)


def test_paired_batches(synthetic):
    retain, forget = np.arange(0, 100), np.arange(100, 110)
    bs = list(
        paired_batches(
            synthetic.train,
            retain,
            synthetic.train,
            forget,
            batch_size=20,
            forget_batch_size=4,
            epochs=1,
            rng=numpy_rng(0, "b"),
        )
    )
    assert len(bs) == 5 and all(b["x_forget"].shape[0] == 4 for b in bs)
    only_forget = list(
        paired_batches(
            synthetic.train,
            [],
            synthetic.train,
            forget,
            batch_size=20,
            forget_batch_size=4,
            epochs=1,
            rng=numpy_rng(0, "b"),
        )
    )
    assert sum(b["x_forget"].shape[0] for b in only_forget) == 10 and "x" not in only_forget[0]


def test_predict_features_shape(synthetic):
    m = build_model("small_cnn", 4, 3, generator=torch_rng(0, "init"), width=4)
    f = predict(m, synthetic.test, np.arange(7), what="features")
    assert f.shape == (7, 16)
    assert predict(m, synthetic.test, np.arange(0), what="logits").shape == (0, 4)


def test_frozen_batch_norm_trains_the_parameters_on_the_running_statistics():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2))
    bn = model[1]
    bn.running_mean.fill_(1.0)
    bn.running_var.fill_(4.0)
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.0, 0.5], [2.0, 2.0]])
    batch = {"x": x, "y": torch.tensor([0, 1, 0, 1])}
    seen = []

    def loss(m, b):
        seen.append(m[1].training)
        return torch.nn.functional.cross_entropy(m(b["x"]), b["y"])

    w0 = model[0].weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    train_loop(model, loss, [batch], opt, frozen_batch_norm=True)
    assert seen == [False] and model[2].training  # batch norm in eval mode, the rest in train mode
    assert torch.equal(bn.running_mean, torch.ones(3)) and torch.equal(bn.running_var, torch.full((3,), 4.0))
    assert not torch.equal(model[0].weight, w0)
    train_loop(model, loss, [batch], opt)
    assert seen == [False, True] and not torch.equal(bn.running_mean, torch.ones(3))
