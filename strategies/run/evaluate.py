"""The evaluation stage: the centralized methods, then every method's metrics against ground truth (``MethodResult``)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fed_opc.centralized import run_centralized
from fed_opc.checkpoint import load_checkpoint, save_checkpoint
from fed_opc.data.forget import union_forget
from fed_opc.data.scenario_data import forgotten_classes
from fed_opc.metrics import EvalSet, accuracy_from_logits, evaluate_methods, model_outputs
from fed_opc.models import FeatureModel, new_model
from strategies.cost import Cost
from strategies.run.progress import stage_line

log = logging.getLogger("fed_opc")


@dataclass
class MethodResult:
    """One method of the run, evaluated: its final model, metrics and cost, and its metrics per deletion request.

    ``to_json`` is the method's entry in ``results.json``'s ``methods`` block (the attack stage adds ``attacks``);
    ``request_metrics`` (request id -> UA on that request's forget set, RA and TA) go to each request's entry.
    """

    setting: str  # "federated" | "centralized"
    state: dict[str, torch.Tensor]
    metrics: dict[str, float]
    cost: Cost
    diagnostics: dict[str, Any] = field(default_factory=dict)
    edge: dict[str, Any] = field(default_factory=dict)
    request_metrics: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The method's entry in ``results.json``: setting, metrics and cost, plus diagnostics and edge costs when there
        are any.
        """
        out: dict[str, Any] = {
            "setting": self.setting,
            "metrics": self.metrics,
            "cost": self.cost.results(self.setting),
        }
        if self.diagnostics:
            out["diagnostics"] = self.diagnostics
        if self.edge:
            out["edge"] = self.edge
        return out


@dataclass
class Evaluation:
    """The evaluated methods, in results order (federated, then centralized), and what the attack stage needs."""

    methods: dict[str, MethodResult]
    pretrained: FeatureModel
    model_of: dict[str, FeatureModel]  # method -> its final model
    forget: np.ndarray  # the union of the requests' forget sets
    classes: list[int]  # the classes removed everywhere


def evaluate_all(
    sc, sd, pre_state, fed_methods, cen_methods, outcomes, ck: Path, ledger, timing, progress
) -> Evaluation:
    """Centralized methods, then metrics for every method on the union of the forget sets and per request.

    The centralized methods' metrics are those ``fed_opc.centralized.run_centralized`` measured (their reference is
    the centralized ``retrain``); the federated methods' are measured here with ``fed_retrain`` as the reference (the
    centralized ``retrain``, for the CKA only, when the run has no ``fed_retrain``). Both settings go through
    ``fed_opc.metrics.evaluate_methods``.
    ``timing["centralized_methods"]`` gets the centralized stage's seconds when it ran here.
    """
    forget = union_forget(sd.requests)
    retain = np.setdiff1d(sd.pool, forget)
    classes = forgotten_classes(sc)
    device = torch.device("cpu")
    pretrained = new_model(sc, sd)
    pretrained.load_state_dict(pre_state, strict=True)
    cen_ckpt = ck / "centralized.ckpt"
    cen: dict[str, Any] = {}
    if cen_methods:
        if cen_ckpt.is_file() and all(
            ledger.entries[r]["methods"].get(m) == "done" for r in ledger.entries for m in cen_methods
        ):
            cen = load_checkpoint(cen_ckpt)
        else:
            for m in cen_methods:
                ledger.mark(sc.request_ids(), m, "unlearning")
            stage_line(progress, f"centralized methods: {', '.join(cen_methods)}")
            t_cen = time.perf_counter()
            runs = run_centralized(
                pretrained,
                sd.data,
                forget,
                retain,
                sd.test_idx,
                cen_methods,
                {m: sc.unlearning.params[m] for m in cen_methods},
                seed=sc.seed,
                device=device,
                forgotten_classes=classes,
                log=lambda line: log.info("centralized %s", line),
            )
            cen = {m: {"state": r.model.state_dict(), "metrics": r.metrics, "cost": r.cost} for m, r in runs.items()}
            timing["centralized_methods"] = time.perf_counter() - t_cen
            save_checkpoint(cen_ckpt, cen)
            for m in cen_methods:
                ledger.mark(sc.request_ids(), m, "done")
    states = {m: outcomes[m].state for m in fed_methods} | {m: cen[m]["state"] for m in cen_methods}

    ev = EvalSet.make(sd.data.train, sd.data.test, forget, retain, sd.test_idx, seed=sc.seed, forgotten_classes=classes)
    original = model_outputs(pretrained, ev, device=device)
    model_of = {}
    for m, st in states.items():
        net = new_model(sc, sd)
        net.load_state_dict(st, strict=True)
        model_of[m] = net
    outputs = {m: model_outputs(net, ev, device=device) for m, net in model_of.items()}
    fed_metrics = evaluate_methods(
        {m: outputs[m] for m in fed_methods},
        {m: model_of[m].head.weight for m in fed_methods},
        ev,
        original=original,
        reference="fed_retrain" if "fed_retrain" in fed_methods else None,
        reference_outputs=outputs.get("retrain"),  # without fed_retrain: the centralized retrain, for the CKA only
    )
    methods: dict[str, MethodResult] = {}
    for m in fed_methods:
        o = outcomes[m]
        metrics = {"RTE_s": o.wall_s} | fed_metrics[m]
        methods[m] = MethodResult("federated", o.state, metrics, o.cost, o.diagnostics, o.edge)
    for m in cen_methods:
        c = cen[m]
        cost = Cost(client_samples=int(c["cost"].get("client_samples", 0)))  # no rounds, no messages
        methods[m] = MethodResult("centralized", c["state"], dict(c["metrics"]), cost)
    # per request: UA on its own forget set (a subset of the union, whose logits every method already has), RA / TA
    # as for the union
    for s in sd.requests:
        pos = np.searchsorted(ev.forget_idx, s.forget)
        y = torch.from_numpy(sd.data.train.labels[s.forget])
        for m, r in methods.items():
            ua = 1.0 - accuracy_from_logits(outputs[m].forget_logits[pos], y)
            r.request_metrics[s.request_id] = {"UA": ua, "RA": r.metrics["RA"], "TA": r.metrics["TA"]}
    return Evaluation(methods, pretrained, model_of, forget, classes)
