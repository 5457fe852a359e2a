"""Shipped scenarios leave room to measure forgetting depth.

Normalised recovery divides by ``acc_original - acc_floor`` (``acc_floor = 1 - floor_UA``, the forget accuracy of a
model that maps every forget sample to one point) and is only measurable when that gap is at least 0.15. A forget set
of a single class has floor_UA 0 (acc_floor 1): no model can show depth on it. These tests compute the floor from each
shipped scenario's real partition and forget sets, with the product's own functions, and check that it leaves the
gap against the accuracy the scenario's default model is built to reach (docs/models.md).
"""

from pathlib import Path

import numpy as np
import pytest

from fed_opc.attacks.recovery import floor_ua
from fed_opc.config import load_scenario
from fed_opc.data.forget import union_forget
from fed_opc.data.scenario_data import prepare

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((REPO / "scenarios").glob("*.yaml"))
ATTACKED = [p for p in SCENARIOS if load_scenario(p, check_environment=False).attacks.recovery]

# Test accuracy the shipped models reach on each dataset (docs/models.md); a model is at least about as accurate on
# its own training samples, which the forget sets are.
EXPECTED_ACCURACY = {"cifar10": 0.70, "mnist": 0.95}
MEASURABLE_GAP = 0.15


def floors(sc) -> dict[str, float]:
    """floor_UA of each request of ``sc`` and of their union (the forget set the run's metrics and attacks score), on
    the scenario's real partition."""
    sd = prepare(sc)
    labels = sd.data.train.labels
    out = {split.request_id: floor_ua(labels[split.forget]) for split in sd.requests}
    return out | {"union": floor_ua(labels[union_forget(sd.requests)])}


def test_the_main_and_quick_scenarios_are_checked():
    names = {p.name for p in ATTACKED}
    assert {"cifar10_100clients.yaml", "cifar10_paper_3class.yaml", "mnist_quick.yaml"} <= names


@pytest.mark.parametrize("path", ATTACKED, ids=[p.name for p in ATTACKED])
def test_depth_is_measurable(path, data_root):
    sc = load_scenario(path, check_environment=False)
    for r in sc.requests:
        if r.scope == "class":
            assert len(r.classes) >= 2, f"{path.name}: a class request of one class has floor_UA 0"
    room = EXPECTED_ACCURACY[sc.data.dataset] - MEASURABLE_GAP
    for rid, floor in floors(sc).items():
        assert floor > 0, f"{path.name}: request {rid} has floor_UA 0"
        assert 1 - floor <= room, f"{path.name}: request {rid}: acc_floor {1 - floor:.3f} > {room:.2f}"


def test_main_scenario_floors(data_root):
    """Classes 0, 1, 2 everywhere: 5,000 training images each, so the floor is 1 - 5000/15000 = 2/3. Client 7's
    Dirichlet(0.5) share (seed 0) holds 391 images, 126 of them of its largest class: floor 1 - 126/391."""
    sc = load_scenario(REPO / "scenarios" / "cifar10_100clients.yaml", check_environment=False)
    sd = prepare(sc)
    classes = sd.request("classes012")
    assert classes.classes == (0, 1, 2) and len(classes.forget) == 15000
    assert np.bincount(sd.data.train.labels[classes.forget]).tolist() == [5000, 5000, 5000]
    assert floors(sc)["classes012"] == pytest.approx(2 / 3)
    client = sd.request("client7")
    counts = np.bincount(sd.data.train.labels[client.forget], minlength=10)
    assert counts.tolist() == [60, 126, 41, 62, 10, 2, 57, 32, 1, 0]
    assert floors(sc)["client7"] == pytest.approx(265 / 391)
    # the union adds client 7's 164 images of classes 3-9 to the 15,000: floor 1 - 5000/15164
    assert floors(sc)["union"] == pytest.approx(10164 / 15164)
