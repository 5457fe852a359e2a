"""The round-based methods: ``fed_opc`` (protocol ``two_phase``; ``fedavg`` is in ``opc_fedavg``), ``fed_ga``,
``fed_rl`` and ``pga``.

They share one loop of *unlearning rounds* (``unlearning_rounds``): sampled retain clients send ordinary FedAvg
updates, aggregated into the retain update ``delta_r``; the requester(s) receive the global model and ``delta_r`` in a
``train.unlearn`` message addressed to them only, run local steps of their objective under the method's constraint,
and send their model back; the server combines the two, then reads the round's stopping rule before the next one.
Each method differs only in the requester's ``LocalUnlearnSpec`` and its stopping rule.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fed_opc.checkpoint import load_checkpoint, save_checkpoint
from fed_opc.client_unlearn import LocalUnlearnSpec
from fed_opc.data.forget import ForgetSplit
from fed_opc.flower import EngineError
from fed_opc.unlearning.federated import FedGAConfig, FedOPCConfig, FedRLConfig, PGAConfig, RoundsConfig
from strategies.cost import Cost
from strategies.fedavg import sample_clients
from strategies.federated.context import (
    FedContext,
    MethodOutcome,
    fmt_reading,
    per_class_test_accuracy,
    remaining_clients,
    stop_rule_for,
)
from strategies.federated.exchange import apply, buffer_names, combine, retain_round, sub, unlearn_round, weighted_mean
from strategies.federated.fedavg_based import fedavg_world
from strategies.federated.opc_fedavg import fedavg_opc

log = logging.getLogger("fed_opc")


# A request that finds no requester online waits at most this many rounds inside a method's unlearning rounds.
IDLE_LIMIT = 1000


def unlearning_rounds(
    ctx: FedContext,
    requests: Sequence[ForgetSplit],
    cfg: RoundsConfig,
    spec: LocalUnlearnSpec,
    start_state: dict[str, torch.Tensor],
    *,
    stop_ratio: float | None = None,
    stop_acc: float | None = None,
    stop_rule: str = "none",
) -> MethodOutcome:
    """Serve ``requests`` one after another with unlearning rounds, then ``cfg.recovery_rounds`` of FedAvg.

    For each request: rounds until its stopping rule holds or ``cfg.max_rounds`` rounds were served (a round in which
    no requester answered is retried, up to 3 times in a row). The new global model after a round is
    ``theta + delta_r + delta_f`` (``delta_f``: the requesters' mean change, weighted by forget-set size) when the
    requester started from ``theta``, and the requesters' mean model when it started from the retain reference
    ``theta + delta_r`` (``spec.start == "reference"``).

    Stopping rules: ``stop_ratio`` (forget / retain feature norm below it), ``stop_acc`` (requester's forget accuracy
    at or below it), and ``stop_rule`` ``norm_ratio`` / ``reference_acc`` / ``auto`` (see :func:`stop_rule_for`).
    """
    sc, sd = ctx.sc, ctx.sd
    k_retain = cfg.retain_clients or sc.federation.clients_per_round
    k_req = cfg.max_requesters or sc.federation.clients_per_round
    state, cost = start_state, Cost()
    diagnostics: dict[str, Any] = {"unlearning_rounds": []}
    observed: dict[str, Any] = {}
    served_in_group: list[str] = []
    rnd = ctx.round0
    buffers = buffer_names(ctx)
    for req in requests:
        exclude = ctx.served_before + served_in_group + [req.request_id]
        retain_pool = [p for p in remaining_clients(sd, exclude) if not (req.scope == "client" and p in req.clients)]
        rule = stop_rule_for(req, stop_rule)
        ckpt = ctx.ckpt_dir / f"{ctx.world}.{req.request_id}.unlearn.ckpt"
        per_round: list[dict[str, Any]] = []
        served = failed_streak = 0
        if ckpt.is_file():
            ck = load_checkpoint(ckpt)
            state, per_round, observed, rnd = ck["state"], ck["per_round"], ck["observed"], ck["rnd"]
            cost = Cost.from_dict(ck["cost"])
            if ctx.clock is not None and "clock" in ck:
                ctx.clock.restore(ck["clock"])
            served = sum(1 for r in per_round if r["served"])
        stopped = bool(per_round and per_round[-1].get("stop"))
        idle = 0
        while not stopped and served < cfg.max_rounds:
            rnd += 1
            online_retain = ctx.online(rnd, retain_pool)
            retain_pids = sample_clients(sc.seed, rnd, online_retain, k_retain, purpose=f"{ctx.world}/retain")
            delta_r, retain_norm, m1 = retain_round(ctx, state, rnd, retain_pids, exclude)
            online_req = ctx.online(rnd, req.clients)
            if delta_r is None or not online_req:
                # an edge federation: no retain update in time, or no requester online. Without the requester the
                # round is an ordinary FedAvg round; the request waits for the next round
                cost += Cost.metered(m1, rounds=1)
                if delta_r is not None:
                    state = apply(state, delta_r)
                if not online_req and ctx.clock is not None:
                    ctx.clock.offline_met += 1
                if ctx.clock is not None:
                    ctx.clock.end_round(rnd)
                per_round.append(
                    {"round": rnd, "request": req.request_id, "requesters": [], "served": False, "idle": True}
                )
                idle += 1
                if idle > IDLE_LIMIT:
                    raise EngineError(f"{ctx.world}: {req.request_id} found no requester online in {IDLE_LIMIT} rounds")
                continue
            idle = 0
            req_pids = sample_clients(sc.seed, rnd, online_req, k_req, purpose=f"{ctx.world}/requesters")
            extra: dict[str, Any] = {}
            if rule == "reference_acc":
                extra["ref_class_acc"] = per_class_test_accuracy(ctx, state)
            outs, m2 = unlearn_round(ctx, state, delta_r, rnd, req_pids, [req.request_id], spec, extra)
            cost += Cost.metered(m1) + Cost.metered(m2, rounds=1)
            if ctx.clock is not None:
                ctx.clock.end_round(rnd)
            if not outs and m2.get("stragglers", 0):  # the requesters' updates came too late: FedAvg, then retry
                state = apply(state, delta_r)
                per_round.append({"round": rnd, "request": req.request_id, "requesters": req_pids, "served": False})
                continue
            if not outs:
                failed_streak += 1
                log.warning("round %d: no requester of %s answered; retrying next round", rnd, req.request_id)
                per_round.append({"round": rnd, "request": req.request_id, "requesters": req_pids, "served": False})
                if failed_streak >= 3:
                    raise EngineError(f"{ctx.world}: no requester of {req.request_id} answered in 3 rounds in a row")
                continue
            failed_streak = 0
            served += 1
            weights = [float(m["num-examples"]) for _, _, m in outs]
            delta_f = weighted_mean([sub(s, state) for _, s, _ in outs], weights)
            new_state = (
                apply(state, delta_f) if spec.start == "reference" else combine(state, delta_r, delta_f, buffers)
            )
            if req.request_id not in observed:  # the first update the server saw: the inversion attack's target
                p, s_end, m = outs[0]
                observed[req.request_id] = {
                    "client": p,
                    "round": rnd,
                    "start": state,
                    "end": s_end,
                    "steps": int(m["steps"]),
                    "lr": spec.lr,
                    "batch_size": spec.forget_batch_size,
                    "objective": spec.objective,
                    "n_forget": int(m["num-examples"]),
                    "layer": spec.layer,
                    "lambda": spec.lambda_,
                    "squared": spec.squared,
                }
            forget_norm = float(np.average([m["forget_norm"] for _, _, m in outs], weights=weights))
            forget_acc = float(np.average([m["forget_acc"] for _, _, m in outs], weights=weights))
            # undefined (None, never inf or nan: a results file holds neither) when the retained features have no
            # energy, as in a collapsed model; the ratio rule then never fires
            ratio = forget_norm / retain_norm if retain_norm > 0 else None
            target = float(np.average([m["stop_acc"] for _, _, m in outs], weights=weights))
            steps = int(sum(m["steps"] for _, _, m in outs))
            stop = (
                (stop_ratio is not None and rule in ("norm_ratio", "none") and ratio is not None and ratio < stop_ratio)
                or (stop_acc is not None and forget_acc <= stop_acc)
                or (rule == "reference_acc" and (forget_acc <= target or steps == 0))
            )
            rec = {
                "round": rnd,
                "request": req.request_id,
                "stop_rule": rule,
                "retain_clients": retain_pids,
                "requesters": [p for p, _, _ in outs],
                "served": True,
                "forget_norm": forget_norm,
                "retain_norm": retain_norm,
                "norm_ratio": ratio,
                "requester_forget_acc": forget_acc,
                "local_steps": steps,
                "conflicts": int(sum(m["conflicts"] for _, _, m in outs)),
                "max_inner": float(max(m["max_inner"] for _, _, m in outs)),
                "stop": bool(stop),
            }
            if rule == "reference_acc":
                rec["target_acc"] = target
            per_round.append(rec)
            log.info(
                "[%s] %s round %d: norm ratio %s, requester forget acc %.3f (%d local steps)",
                ctx.world,
                req.request_id,
                rnd,
                fmt_reading(ratio, 4),
                forget_acc,
                steps,
            )
            state = new_state
            save_checkpoint(
                ckpt,
                {"rnd": rnd, "state": state, "cost": cost.to_dict(), "per_round": per_round, "observed": observed}
                | ({"clock": ctx.clock.state()} if ctx.clock is not None else {}),
            )
            stopped = stop
        diagnostics["unlearning_rounds"] += per_round
        served_in_group.append(req.request_id)
    if cfg.recovery_rounds:
        first = rnd + 1
        state, meter, hist = fedavg_world(ctx, requests, state, first, first + cfg.recovery_rounds - 1, "recovery")
        cost += Cost.metered(meter, cfg.recovery_rounds)
        diagnostics["recovery_rounds"] = hist
    return MethodOutcome(state, cost, diagnostics, observed)


def local_spec(cfg: RoundsConfig, **kw: Any) -> LocalUnlearnSpec:
    """The requester's local-step settings shared by every round-based method, plus the method's own ``kw``."""
    return LocalUnlearnSpec(
        lr=cfg.lr,
        momentum=cfg.momentum,
        epochs=cfg.local_epochs,
        batch_size=cfg.batch_size,
        forget_batch_size=cfg.forget_batch_size,
        **kw,
    )


def serve_fed_opc(ctx: FedContext, requests, cfg: FedOPCConfig, start_state) -> MethodOutcome:
    """Federated OPC with the scenario's protocol: ``fedavg`` (``strategies.federated.opc_fedavg``) or ``two_phase``."""
    if cfg.protocol == "fedavg":
        return fedavg_opc(ctx, requests, cfg, start_state)
    spec = local_spec(
        cfg,
        objective="opc",
        lambda_=cfg.lambda_,
        layer=cfg.layer,
        squared=cfg.squared,
        constraint={"sum": "none", "project": "project", "ball": "ball"}[cfg.constraint],
        epsilon=cfg.epsilon,
        start="global",
        use_retain=cfg.requester_retain,
    )
    return unlearning_rounds(ctx, requests, cfg, spec, start_state, stop_ratio=cfg.stop_ratio, stop_rule=cfg.stop_rule)


def serve_fed_ga(ctx: FedContext, requests, cfg: FedGAConfig, start_state) -> MethodOutcome:
    """Gradient ascent on the requesters' forget data in unlearning rounds, until their forget accuracy is at most
    ``stop_acc`` or ``max_rounds`` rounds were served.
    """
    spec = local_spec(cfg, objective="ga", constraint="none", stop_acc=cfg.stop_acc)
    return unlearning_rounds(ctx, requests, cfg, spec, start_state, stop_acc=cfg.stop_acc)


def serve_fed_rl(ctx: FedContext, requests, cfg: FedRLConfig, start_state) -> MethodOutcome:
    """Random other labels on the requesters' forget data (with their own retain data), for ``max_rounds`` unlearning
    rounds.
    """
    spec = local_spec(cfg, objective="rl", constraint="none")
    return unlearning_rounds(ctx, requests, cfg, spec, start_state)


def serve_pga(ctx: FedContext, requests, cfg: PGAConfig, start_state) -> MethodOutcome:
    """Halimi et al.: ascent from the other clients' average, kept within ``radius`` of it, then recovery rounds."""
    radius = cfg.radius
    if radius is None:
        # one third of the distance to a freshly initialised model, as in the paper; measured from the global model
        # the request arrives at (the reference itself only exists once the retain clients have answered)
        radius = float(torch.sqrt(sum((d**2).sum() for d in sub(start_state, ctx.init_state).values()))) / 3.0
    spec = local_spec(cfg, objective="ga", constraint="ball", epsilon=radius, start="reference", stop_acc=cfg.stop_acc)
    out = unlearning_rounds(ctx, requests, cfg, spec, start_state, stop_acc=cfg.stop_acc)
    out.diagnostics["radius"] = radius
    return out
