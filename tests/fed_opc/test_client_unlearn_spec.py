"""The ``train.unlearn`` settings on the wire: one typed spec, written and parsed by one function pair."""

import dataclasses

import pytest
from flwr.app import ConfigRecord

from fed_opc.client_unlearn import LocalUnlearnSpec, SpecError

STEPS = dict(lr=0.01, momentum=0.9, epochs=0.25, batch_size=32, forget_batch_size=16)


def test_round_trip_through_a_config_record():
    spec = LocalUnlearnSpec(objective="opc", constraint="project", lambda_=5.0, layer="penultimate", squared=True,
                            stop_acc=0.3, max_steps=7, use_retain=False, **STEPS)  # fmt: skip
    record = ConfigRecord(spec.to_config() | {"server-round": 3})
    assert LocalUnlearnSpec.from_config(record) == spec
    ga = LocalUnlearnSpec(objective="ga", constraint="ball", epsilon=0.5, start="reference", **STEPS)
    assert "unlearn.lambda_" not in ga.to_config()
    assert LocalUnlearnSpec.from_config(ConfigRecord(ga.to_config())) == ga


def test_an_int_is_accepted_for_a_float_and_nothing_else_is_converted():
    cfg = LocalUnlearnSpec(objective="rl", constraint="none", **STEPS).to_config() | {"unlearn.lr": 1}
    assert LocalUnlearnSpec.from_config(cfg).lr == 1.0
    for key, bad, message in [
        ("unlearn.lr", "0.01", "unlearn.lr: expected float, got '0.01'"),
        ("unlearn.batch_size", 32.0, "unlearn.batch_size: expected int, got 32.0"),
        ("unlearn.use_retain", 1, "unlearn.use_retain: expected bool, got 1"),
        ("unlearn.objective", "neggrad", "unlearn.objective: expected one of opc, ga, rl, got 'neggrad'"),
        ("unlearn.lamda", 1.0, "unlearn.lamda: unknown setting"),
    ]:
        with pytest.raises(SpecError) as e:
            LocalUnlearnSpec.from_config(cfg | {key: bad})
        assert str(e.value) == message


def test_required_settings_are_never_defaulted():
    cfg = LocalUnlearnSpec(objective="rl", constraint="none", **STEPS).to_config()
    del cfg["unlearn.momentum"]
    with pytest.raises(SpecError) as e:
        LocalUnlearnSpec.from_config(cfg)
    assert str(e.value) == "unlearn.momentum: missing"
    with pytest.raises(SpecError):
        LocalUnlearnSpec(objective="opc", constraint="none", **STEPS)  # OPC without lambda and layer
    with pytest.raises(SpecError):
        dataclasses.replace(LocalUnlearnSpec(objective="ga", constraint="none", **STEPS), constraint="ball")
