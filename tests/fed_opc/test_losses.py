import math

import pytest
import torch
from torch import nn

from fed_opc.losses import (
    bad_teacher_loss,
    cross_entropy,
    distill_kl,
    gradient_ascent,
    l1_norm,
    l1_sparse_loss,
    neggrad_plus,
    opc_forget_term,
    opc_loss,
    random_label_loss,
    random_other_labels,
    scrub_max_loss,
    scrub_min_loss,
)
from fed_opc.models import FeatureModel

H = torch.tensor([[1.0, 2.0, 2.0], [0.0, 3.0, 4.0]])  # row norms 3 and 5


def identity_model() -> FeatureModel:
    """features(x) = x (3-d); head W = [[1,0,0],[0,1,0]], b = [0, 1]."""
    head = nn.Linear(3, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
        head.bias.copy_(torch.tensor([0.0, 1.0]))
    return FeatureModel(nn.Identity(), head)


def test_opc_forget_term_by_hand():
    assert opc_forget_term(H).item() == pytest.approx(4.0)  # (3 + 5) / 2
    assert opc_forget_term(H, squared=True).item() == pytest.approx(17.0)  # (9 + 25) / 2


def test_opc_forget_term_empty_and_gradient():
    assert opc_forget_term(torch.zeros(0, 3)).item() == 0.0
    h = H.clone().requires_grad_(True)
    opc_forget_term(h).backward()
    # d/dh mean ||h_i|| = h_i / (2 ||h_i||)
    assert torch.allclose(h.grad, H / torch.tensor([[6.0], [10.0]]))
    h = H.clone().requires_grad_(True)
    opc_forget_term(h, squared=True).backward()
    assert torch.allclose(h.grad, H)  # d/dh mean ||h_i||^2 = 2 h_i / 2


def test_opc_loss_penultimate_and_logits_by_hand():
    model = identity_model()
    x_r = torch.tensor([[0.0, 0.0, 5.0]])  # logits [0, 1]
    batch = {"x": x_r, "y": torch.tensor([1]), "x_forget": H, "y_forget": torch.tensor([0, 0])}
    ce = math.log(1 + math.exp(-1.0))  # CE of logits [0, 1] for class 1
    pen = opc_loss(model, batch, lambda_=0.5, layer="penultimate").item()
    assert pen == pytest.approx(ce + 0.5 * 4.0, rel=1e-6)
    pen_sq = opc_loss(model, batch, lambda_=0.5, layer="penultimate", squared=True).item()
    assert pen_sq == pytest.approx(ce + 0.5 * 17.0, rel=1e-6)
    # logits of the forget rows: [1, 3] and [0, 4] -> norms sqrt(10) and 4
    lo = opc_loss(model, batch, lambda_=0.5, layer="logits").item()
    assert lo == pytest.approx(ce + 0.5 * (math.sqrt(10) + 4) / 2, rel=1e-6)
    lo_sq = opc_loss(model, batch, lambda_=0.5, layer="logits", squared=True).item()
    assert lo_sq == pytest.approx(ce + 0.5 * (10 + 16) / 2, rel=1e-6)


def test_opc_loss_forget_only_and_errors():
    model = identity_model()
    assert opc_loss(model, {"x_forget": H}, lambda_=2.0).item() == pytest.approx(8.0)
    with pytest.raises(KeyError):
        opc_loss(model, {}, lambda_=1.0)
    with pytest.raises(ValueError, match="penultimate"):
        opc_loss(model, {"x_forget": H}, lambda_=1.0, layer="middle")


def test_cross_entropy_and_ascent_by_hand():
    model = identity_model()
    x = torch.tensor([[0.0, 0.0, 1.0]])  # logits [0, 1]
    batch = {"x": x, "y": torch.tensor([0]), "x_forget": x, "y_forget": torch.tensor([0])}
    ce0 = math.log(1 + math.e)  # -log softmax([0,1])[0]
    assert cross_entropy(model, batch).item() == pytest.approx(ce0, rel=1e-6)
    assert gradient_ascent(model, batch).item() == pytest.approx(-ce0, rel=1e-6)
    assert neggrad_plus(model, batch, alpha=0.75).item() == pytest.approx(0.5 * ce0, rel=1e-6)


def test_random_other_labels_never_true_and_cover_others():
    gen = torch.Generator().manual_seed(0)
    y = torch.zeros(2000, dtype=torch.int64)
    r = random_other_labels(y, 4, gen)
    assert (r != y).all()
    assert set(r.tolist()) == {1, 2, 3}
    with pytest.raises(ValueError):
        random_other_labels(y, 1, gen)


def test_random_label_loss_uses_y_random():
    model = identity_model()
    x = torch.tensor([[0.0, 0.0, 1.0]])  # logits [0, 1]
    b = {"x_forget": x, "y_forget": torch.tensor([0]), "y_random": torch.tensor([1])}
    assert random_label_loss(model, b).item() == pytest.approx(math.log(1 + math.exp(-1.0)), rel=1e-6)


def test_distill_kl_zero_at_target_and_positive_elsewhere():
    logits = torch.tensor([[1.0, 2.0, 0.5]])
    for t in (1.0, 4.0):
        target = torch.softmax(logits / t, 1)
        assert distill_kl(logits, target, t).item() == pytest.approx(0.0, abs=1e-7)
    uniform = torch.full((1, 3), 1 / 3)
    kl = sum((1 / 3) * math.log((1 / 3) / q) for q in torch.softmax(logits, 1)[0].tolist())
    assert distill_kl(logits, uniform, 1.0).item() == pytest.approx(kl, rel=1e-5)
    assert distill_kl(logits, uniform, 2.0).item() > 0


def test_scrub_and_bad_teacher_losses_vanish_when_student_is_teacher():
    model = identity_model()
    x = H
    batch = {"x": x, "y": torch.tensor([0, 1]), "x_forget": x, "y_forget": torch.tensor([0, 1])}
    assert scrub_max_loss(model, batch, teacher=model, temperature=4.0).item() == pytest.approx(0.0, abs=1e-6)
    ce = cross_entropy(model, batch).item()
    got = scrub_min_loss(model, batch, teacher=model, temperature=4.0, alpha=0.5, gamma=0.25).item()
    assert got == pytest.approx(0.25 * ce, rel=1e-6)
    zero = FeatureModel(nn.Identity(), nn.Linear(3, 2))
    with torch.no_grad():
        zero.head.weight.zero_()
        zero.head.bias.zero_()
    # retain half follows the student itself (0), forget half the uniform teacher
    got = bad_teacher_loss(model, batch, competent=model, incompetent=zero, temperature=1.0).item()
    with torch.no_grad():
        p = torch.softmax(model(x), 1)
    expected = float((0.5 * torch.log(0.5 / p)).sum(1).sum() / 4)  # KL summed over 2 forget rows, / 4 samples
    assert got == pytest.approx(expected, rel=1e-5)


def test_l1_terms():
    model = identity_model()  # |W| sums to 2, |b| to 1
    assert l1_norm(model.parameters()).item() == pytest.approx(3.0)
    batch = {"x": torch.tensor([[0.0, 0.0, 1.0]]), "y": torch.tensor([1])}
    ce = cross_entropy(model, batch).item()
    assert l1_sparse_loss(model, batch, gamma=0.1).item() == pytest.approx(ce + 0.3, rel=1e-6)
    assert l1_sparse_loss(model, batch, gamma=0.0).item() == pytest.approx(ce, rel=1e-6)
