import dataclasses
import json

import numpy as np
import pytest
import torch

from fed_opc.centralized import run_centralized
from fed_opc.unlearning import get_method

CONTRACT_KEYS = {
    "UA",
    "RA",
    "TA",
    "MIA",
    "RTE_s",
    "avg_gap",
    "forget_feature_norm",
    "retain_feature_norm",
    "forget_entropy",
    "cka_vs_original",
    "cka_vs_retrain",
    "nullspace_share",
    "dead_units_share",
    "n_predicted_classes",
}


def short(name, **kw):
    return dataclasses.replace(get_method(name).config(), max_steps=3, **kw)


@pytest.fixture(scope="module")
def runs(synth, pretrained):
    data, forget, retain = synth
    methods = ["opc", "finetune", "retrain"]
    params = {m: short(m) for m in methods}
    before = {k: v.clone() for k, v in pretrained.state_dict().items()}
    out = run_centralized(
        pretrained, data, forget, retain, None, methods, params, seed=0, device="cpu", forgotten_classes=(0,)
    )
    for k, v in pretrained.state_dict().items():
        assert torch.equal(v, before[k])
    return out


def test_retrain_runs_first_and_every_method_has_the_contract_block(runs):
    assert list(runs) == ["retrain", "opc", "finetune"]
    for name, run in runs.items():
        block = run.to_json()
        json.dumps(block)  # serialisable as is
        assert block["setting"] == "centralized"
        assert CONTRACT_KEYS <= set(block["metrics"]), name
        assert "TA_forgotten_classes" in block["metrics"]
        assert block["cost"]["rounds"] == 0 and block["cost"]["client_samples"] > 0
        assert block["metrics"]["RTE_s"] > 0
        for k in ("UA", "RA", "TA", "MIA", "avg_gap", "dead_units_share", "cka_vs_original", "cka_vs_retrain"):
            assert 0.0 <= block["metrics"][k] <= 1.0, (name, k)
    assert runs["retrain"].metrics["avg_gap"] == 0.0
    assert runs["retrain"].metrics["cka_vs_retrain"] == pytest.approx(1.0)


def test_avg_gap_is_measured_against_retrain(runs):
    ref = runs["retrain"].metrics
    m = runs["opc"].metrics
    expected = np.mean([abs(m[k] - ref[k]) for k in ("UA", "RA", "TA", "MIA")])
    assert m["avg_gap"] == pytest.approx(expected)


def test_results_do_not_depend_on_the_other_methods(synth, pretrained, runs):
    data, forget, retain = synth
    alone = run_centralized(
        pretrained, data, forget, retain, None, ["opc"], {"opc": short("opc")}, seed=0, device="cpu"
    )
    for k, v in alone["opc"].model.state_dict().items():
        assert torch.equal(v, runs["opc"].model.state_dict()[k]), k
    assert "avg_gap" not in alone["opc"].metrics and "cka_vs_retrain" not in alone["opc"].metrics


def test_runner_rejects_unknown_methods_and_stray_params(synth, pretrained):
    data, forget, retain = synth
    with pytest.raises(KeyError, match="opc"):
        run_centralized(pretrained, data, forget, retain, None, ["nope"], seed=0, device="cpu")
    with pytest.raises(KeyError, match="not run"):
        run_centralized(pretrained, data, forget, retain, None, ["opc"], {"ga": short("ga")}, seed=0, device="cpu")
    with pytest.raises(TypeError, match="Config"):
        run_centralized(pretrained, data, forget, retain, None, ["opc"], {"opc": short("ga")}, seed=0, device="cpu")
