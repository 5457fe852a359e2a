"""The server's state arithmetic (``strategies.federated.exchange``) with hand-made numbers."""

import torch

from strategies.federated.exchange import apply, combine, sub, weighted_mean


def test_weighted_mean_and_apply():
    deltas = [{"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([3.0, -2.0])}]
    mean = weighted_mean(deltas, [1.0, 3.0])
    assert torch.equal(mean["w"], torch.tensor([2.5, -1.0]))
    state = {"w": torch.tensor([1.0, 1.0]), "n": torch.tensor(5)}
    out = apply(state, mean)
    assert torch.equal(out["w"], torch.tensor([3.5, 0.0])) and out["n"] == 5 and out["n"].dtype == torch.int64
    assert torch.equal(sub(out, state)["w"], mean["w"]) and "n" not in sub(out, state)  # integer buffers skipped


def test_combine_adds_parameter_steps_and_averages_statistics():
    state = {"w": torch.tensor([1.0]), "bn.running_var": torch.tensor([1.0])}
    delta_r = {"w": torch.tensor([0.5]), "bn.running_var": torch.tensor([0.4])}
    delta_f = {"w": torch.tensor([-0.25]), "bn.running_var": torch.tensor([-0.2])}
    out = combine(state, delta_r, delta_f, buffers={"bn.running_var"})
    assert torch.equal(out["w"], torch.tensor([1.25]))  # theta + delta_r + delta_f
    assert torch.allclose(out["bn.running_var"], torch.tensor([1.1]))  # theta + (delta_r + delta_f) / 2
