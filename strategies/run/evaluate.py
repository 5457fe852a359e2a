"""The evaluation stage: the centralized methods, then every method's metrics against ground truth."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fed_opc.centralized import run_centralized
from fed_opc.checkpoint import load_checkpoint, save_checkpoint
from fed_opc.data.forget import union_forget
from fed_opc.metrics import EvalSet, accuracy_from_logits, evaluate_outputs, model_outputs
from fed_opc.models import new_model
from strategies.cost import Cost
from strategies.run.attacks import attack_all
from strategies.run.progress import stage_line

log = logging.getLogger("fed_opc")


def evaluate_all(sc, sd, pre_state, fed_methods, cen_methods, outcomes, ck: Path, ledger, results, states, progress):
    """Centralized methods, then metrics for every method on the union of the forget sets."""
    forget = union_forget(sd.requests)
    retain = np.setdiff1d(sd.pool, forget)
    classes = sorted({c for r, s in zip(sc.requests, sd.requests) if r.clients == "all" for c in s.classes})
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
            results["timing"]["centralized_methods"] = time.perf_counter() - t_cen
            save_checkpoint(cen_ckpt, cen)
            for m in cen_methods:
                ledger.mark(sc.request_ids(), m, "done")
    for m in cen_methods:
        states[m] = cen[m]["state"]

    ev = EvalSet.make(sd.data.train, sd.data.test, forget, retain, sd.test_idx, seed=sc.seed, forgotten_classes=classes)
    original = model_outputs(pretrained, ev, device=device)
    model_of = {}
    for m, st in states.items():
        net = new_model(sc, sd)
        net.load_state_dict(st, strict=True)
        model_of[m] = net
    outputs = {m: model_outputs(net, ev, device=device) for m, net in model_of.items()}
    fed_ref = "fed_retrain" if "fed_retrain" in outputs else None
    ref_metrics = None
    if fed_ref:
        ref_metrics = evaluate_outputs(
            outputs[fed_ref], ev, head_weight=model_of[fed_ref].head.weight, original=original
        )
    for m in fed_methods:
        o = outcomes[m]
        metrics = evaluate_outputs(
            outputs[m],
            ev,
            head_weight=model_of[m].head.weight,
            original=original,
            retrain=outputs.get(fed_ref) if fed_ref else outputs.get("retrain"),
            retrain_metrics=ref_metrics,
        )
        if m == fed_ref:
            metrics["avg_gap"] = 0.0
        metrics = {"RTE_s": o.wall_s} | metrics
        results["methods"][m] = {"setting": "federated", "metrics": metrics, "cost": o.cost.results("federated")}
        if o.diagnostics:
            results["methods"][m]["diagnostics"] = o.diagnostics
        if o.edge:
            results["methods"][m]["edge"] = o.edge
    for m in cen_methods:
        c = cen[m]
        cost = Cost(client_samples=int(c["cost"].get("client_samples", 0)))  # no rounds, no messages
        results["methods"][m] = {
            "setting": "centralized",
            "metrics": dict(c["metrics"]),
            "cost": cost.results("centralized"),
        }
    # per request: UA on its own forget set (a subset of the union, whose logits every method already has), RA / TA
    # as for the union
    for s in sd.requests:
        pos = np.searchsorted(ev.forget_idx, s.forget)
        y = torch.from_numpy(sd.data.train.labels[s.forget])
        per: dict[str, dict[str, float]] = {}
        for m in results["methods"]:
            mm = results["methods"][m]["metrics"]
            ua = 1.0 - accuracy_from_logits(outputs[m].forget_logits[pos], y)
            per[m] = {"UA": ua, "RA": mm["RA"], "TA": mm["TA"]}
        results[f"_request_metrics/{s.request_id}"] = per
    attack_all(sc, sd, pretrained, model_of, forget, classes, outcomes, ck, results, progress)
    states["original"] = pre_state
