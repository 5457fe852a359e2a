"""The rules every federated method shares (``strategies.federated.context``): the stopping rule a request gets."""

import numpy as np
import pytest

from fed_opc.data.forget import ForgetSplit
from strategies.federated.context import stop_rule_for


def _split(scope, clients):
    e = np.zeros(0, np.int64)
    return ForgetSplit("r", scope, tuple(clients), (1,) if scope == "class" else (), e, {}, {}, e)


@pytest.mark.parametrize(
    ("scope", "clients", "expected"),
    [("class", (0, 1, 2), "norm_ratio"), ("class", (4,), "reference_acc"), ("client", (4,), "reference_acc"),
     ("samples", (4,), "reference_acc")],
)  # fmt: skip
def test_auto_stop_rule(scope, clients, expected):
    assert stop_rule_for(_split(scope, clients), "auto") == expected
    assert stop_rule_for(_split(scope, clients), "norm_ratio") == "norm_ratio"  # an explicit rule is kept
