import numpy as np
import torch

from fed_opc.rng import derive_seed, numpy_rng, torch_rng


def test_same_inputs_same_stream():
    assert derive_seed(0, "a", 1, 2) == derive_seed(0, "a", 1, 2)
    assert np.array_equal(numpy_rng(3, "p").integers(0, 1000, 20), numpy_rng(3, "p").integers(0, 1000, 20))
    assert torch.equal(torch.rand(5, generator=torch_rng(3, "p")), torch.rand(5, generator=torch_rng(3, "p")))


def test_every_argument_changes_the_stream():
    base = derive_seed(0, "a", 1, 2)
    others = {
        derive_seed(1, "a", 1, 2),
        derive_seed(0, "b", 1, 2),
        derive_seed(0, "a", 2, 2),
        derive_seed(0, "a", 1, 3),
    }
    assert base not in others and len(others) == 4
    assert 0 <= base < 2**63


def test_seed_zero_is_a_seed():
    assert derive_seed(0, "x") != derive_seed(1, "x")


def test_global_rng_untouched():
    state = torch.random.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    torch.rand(3, generator=torch_rng(0, "x"))
    numpy_rng(0, "x").random(3)
    assert torch.equal(state, torch.random.get_rng_state())
    assert np.array_equal(np_state, np.random.get_state()[1])
