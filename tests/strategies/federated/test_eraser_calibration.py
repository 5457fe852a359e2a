"""FedEraser's calibrated step (``strategies.federated.eraser.calibrate``) on hand-made updates.

Two clients, equal weights. New updates: a = (w [0, 6], v [8, 0]), b = zeros: mean w [0, 3], v [4, 0] (norm 5).
Stored updates: a = (w [12, 0]), b = (w [0, 16]), v zero in both: mean w [6, 8] (norm 10), v [0, 0].
Batch norm's running variance: new a [2], b [4]; stored [100], [100].
"""

import pytest
import torch

from strategies.federated.eraser import calibrate

T = torch.tensor
BUFFERS = {"bn.running_var"}


def _updates():
    news = [
        {"w": T([0.0, 6.0]), "v": T([8.0, 0.0]), "bn.running_var": T([2.0])},
        {"w": T([0.0, 0.0]), "v": T([0.0, 0.0]), "bn.running_var": T([4.0])},
    ]
    olds = [
        {"w": T([12.0, 0.0]), "v": T([0.0, 0.0]), "bn.running_var": T([100.0])},
        {"w": T([0.0, 16.0]), "v": T([0.0, 0.0]), "bn.running_var": T([100.0])},
    ]
    return news, olds


def test_model_calibration_gives_the_mean_new_direction_the_mean_stored_length():
    news, olds = _updates()
    step = calibrate(news, olds, [1.0, 1.0], BUFFERS, "model")
    # one scale for every parameter: |stored mean| / |new mean| = 10 / 5 = 2
    assert step["w"].tolist() == [0.0, 6.0]
    assert step["v"].tolist() == [8.0, 0.0]
    assert step["bn.running_var"].tolist() == [3.0]  # the new statistics' mean, not scaled


def test_layer_calibration_scales_each_tensor_to_its_stored_length():
    news, olds = _updates()
    step = calibrate(news, olds, [1.0, 1.0], BUFFERS, "layer")
    assert step["w"].tolist() == pytest.approx([0.0, 10.0])  # [0, 3] x 10 / 3
    assert step["v"].tolist() == [0.0, 0.0]  # its stored mean update is 0
    assert step["bn.running_var"].tolist() == [3.0]


def test_weights_enter_both_means():
    news, olds = _updates()
    step = calibrate(news, olds, [3.0, 1.0], BUFFERS, "model")
    # new mean: w [0, 4.5], v [6, 0] (norm 7.5); stored mean: w [9, 4] (norm sqrt(97)), so the scale is sqrt(97) / 7.5
    s = 97**0.5 / 7.5
    assert step["w"].tolist() == pytest.approx([0.0, 4.5 * s])
    assert step["v"].tolist() == pytest.approx([6.0 * s, 0.0])
    assert step["bn.running_var"].tolist() == [2.5]


def test_a_zero_new_update_stays_zero():
    _, olds = _updates()
    zeros = [{"w": T([0.0, 0.0]), "v": T([0.0, 0.0]), "bn.running_var": T([0.0])}] * 2
    for how in ("model", "layer"):
        step = calibrate(zeros, olds, [1.0, 1.0], BUFFERS, how)
        assert step["w"].tolist() == [0.0, 0.0] and step["v"].tolist() == [0.0, 0.0]


def test_an_unknown_calibration_is_refused():
    news, olds = _updates()
    with pytest.raises(ValueError, match="unknown calibration 'client'"):
        calibrate(news, olds, [1.0, 1.0], BUFFERS, "client")


def test_the_scenario_names_the_calibration_field():
    from fed_opc.config import parse_scenario
    from fed_opc.schema import ConfigError
    from tests.helpers import tiny

    raw = tiny()
    raw["unlearning"] = {"methods": ["fed_eraser"], "fed_eraser": {"calibration": "client"}}
    with pytest.raises(
        ConfigError, match=r"^unlearning.fed_eraser.calibration: expected one of model, layer, got 'client'$"
    ):
        parse_scenario(raw)
    raw["unlearning"]["fed_eraser"] = {}
    assert parse_scenario(raw).unlearning.params["fed_eraser"].calibration == "model"
