import numpy as np
import pytest

from fed_opc.data.datasets import load_dataset
from fed_opc.models import build_model
from fed_opc.rng import numpy_rng, torch_rng
from fed_opc.unlearning import retrain
from fed_opc.unlearning.base import UnlearnData


@pytest.fixture(scope="session")
def synth():
    """A 4-class synthetic set (8x8 RGB); class 0 is forgotten."""
    data = load_dataset("synthetic", synthetic=(3, 400, 160, 4, 8, 3, 0.2))
    forget = np.flatnonzero(data.train.labels == 0)
    retain = np.flatnonzero(data.train.labels != 0)
    return data, forget, retain


@pytest.fixture(scope="session")
def pretrained(synth):
    """A width-4 small CNN trained briefly on all of the synthetic training data."""
    data, _, _ = synth
    model = build_model("small_cnn", 4, 3, generator=torch_rng(0, "test/unlearning"), width=4)
    everything = np.arange(len(data.train))
    res = retrain.unlearn(
        model,
        UnlearnData(data.train, np.zeros(0, dtype=np.int64), everything),
        retrain.Config(epochs=8, lr=0.05, batch_size=32),
        generator=numpy_rng(0, "test/pretrain"),
        device="cpu",
    )
    return res.model
