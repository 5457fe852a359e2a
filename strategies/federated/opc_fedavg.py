"""Federated OPC as FedAvg over local OPC objectives (``unlearning.fed_opc.protocol: fedavg``).

The federation minimises centralized OPC's objective (arXiv 2507.07754; DESIGN section 3),

    L = mean over retained data of CE  +  lambda x mean over forget data of ||h(x)||,

each term computed only where its data lives. In every round the server samples requesters (clients holding forget
data of the requests being served) and retain clients, and each sampled client k minimises its own share of ``L``:

    L_k = a_k x CE on its remaining data  +  b_k x lambda x contraction of its forget data,

and the server averages the updates with weights ``w_k``. With ``u_k`` = k's share of the round's retained samples and
``v_k`` = its share of the round's forget samples, ``w_k = (u_k + v_k) / 2``, ``a_k = u_k / w_k`` and ``b_k = v_k /
w_k``, so that ``sum_k w_k L_k = sum_k u_k CE_k + lambda sum_k v_k C_k``: the round's estimate of ``L``, whose
stationary points are centralized OPC's. With ``lambda`` 0 (or no forget data in the round) ``w_k = u_k`` and
``a_k = 1``: exactly FedAvg over the retained data. A requester with no data to keep (a whole-client deletion) has
``u_k = 0``: it contributes only the contraction term.

The server step is ``theta <- theta + server_lr x m`` with ``m <- server_momentum x m + sum_k w_k (theta_k -
theta)`` (FedAvgM; plain FedAvg with the defaults 1 and 0). The stopping rule reads the *global* model: each round the
clients first measure the model they received (the aggregate of the previous round) on their own data, and the server
stops once the forget / retain feature-norm ratio falls below ``stop_ratio`` (a class removed everywhere) or the
requesters' forget accuracy reaches the server's held-out accuracy on those classes (a client's data, some samples).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord, RecordDict

from fed_opc.checkpoint import load_checkpoint, save_checkpoint
from fed_opc.data.forget import ForgetSplit, union_forget
from fed_opc.flower import EngineError, arrays_from_state, check_sender, message, record_bytes, state_from_arrays
from fed_opc.unlearning.federated import FedOPCConfig
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
from strategies.federated.exchange import apply, sub
from strategies.federated.fedavg_based import fedavg_world

log = logging.getLogger("fed_opc")


def round_weights(
    n_retain: dict[int, int], n_forget: dict[int, int], lambda_: float
) -> dict[int, tuple[float, float, float]]:
    """``pid -> (w, a, b)``: aggregation weight, CE weight and contraction weight of each participant.

    ``n_retain`` / ``n_forget``: each participant's retained and forget sample counts. See the module docstring.
    """
    total_r = sum(n_retain.values())
    total_f = sum(n_forget.values())
    out: dict[int, tuple[float, float, float]] = {}
    for p in sorted(n_retain):
        u = n_retain[p] / total_r if total_r else 0.0
        if lambda_ <= 0 or total_f == 0:
            out[p] = (u, 1.0, 0.0)
            continue
        v = n_forget[p] / total_f
        w = (u + v) / 2.0
        out[p] = (w, u / w, v / w) if w > 0 else (0.0, 0.0, 0.0)
    return out


def server_step(
    state: dict[str, torch.Tensor],
    deltas: Sequence[dict[str, torch.Tensor]],
    weights: Sequence[float],
    momentum: dict[str, torch.Tensor] | None,
    lr: float,
    beta: float,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``m = beta m + sum_i weights_i deltas_i`` (weights renormalised to sum 1); ``theta + lr m``. Returns (state, m)."""
    total = float(sum(weights))
    mean = {k: sum(d[k] * (w / total) for d, w in zip(deltas, weights)) for k in deltas[0]}
    m = mean if momentum is None or beta == 0 else {k: beta * momentum[k] + mean[k] for k in mean}
    step = m if lr == 1.0 else {k: lr * v for k, v in m.items()}
    return apply(state, step), m


def _counts(sd, requests: Sequence[ForgetSplit], exclude: list[str]) -> tuple[dict[int, int], dict[int, int]]:
    gone = union_forget([sd.request(r) for r in exclude])
    n_retain = {p: int(len(np.setdiff1d(sd.partitions[p], gone))) for p in range(sd.num_clients)}
    n_forget: dict[int, int] = {}
    for r in requests:
        for p, idx in r.client_forget.items():
            n_forget[p] = n_forget.get(p, 0) + int(len(idx))
    return n_retain, n_forget


def fedavg_opc(ctx: FedContext, requests: Sequence[ForgetSplit], cfg: FedOPCConfig, start) -> MethodOutcome:
    """Serve ``requests`` together by FedAvg over local OPC objectives, then ``cfg.recovery_rounds`` of FedAvg."""
    sc, sd = ctx.sc, ctx.sd
    fed = sc.federation
    ids = [r.request_id for r in requests]
    exclude = ctx.served_before + ids
    n_retain, n_forget = _counts(sd, requests, exclude)
    holders = sorted(p for p, n in n_forget.items() if n > 0)
    retain_pool = [p for p in remaining_clients(sd, exclude) if p not in holders]
    k_retain = cfg.retain_clients or fed.clients_per_round
    k_req = cfg.max_requesters or fed.clients_per_round
    rules = {stop_rule_for(r, cfg.stop_rule) for r in requests}
    rule = "norm_ratio" if "norm_ratio" in rules else "reference_acc"
    epochs = cfg.local_epochs_for(rule)
    lr = cfg.lr if cfg.lr is not None else fed.lr
    ckpt = ctx.ckpt_dir / f"{ctx.world}.r{ctx.round0}.fedavg_opc.ckpt"
    state, cost, momentum, rnd = start, Cost(), None, ctx.round0
    per_round: list[dict[str, Any]] = []
    observed: dict[str, Any] = {}
    if ckpt.is_file():
        ck = load_checkpoint(ckpt)
        state, momentum, rnd = ck["state"], ck["momentum"], ck["rnd"]
        cost = Cost.from_dict(ck["cost"])
        per_round, observed = ck["per_round"], ck["observed"]
        if ctx.clock is not None and "clock" in ck:
            ctx.clock.restore(ck["clock"])
    stopped = bool(per_round and per_round[-1].get("stop"))
    while not stopped and len(per_round) < cfg.max_rounds:
        rnd += 1
        req_pids = sample_clients(sc.seed, rnd, ctx.online(rnd, holders), k_req, purpose=f"{ctx.world}/requesters")
        ret_pids = sample_clients(sc.seed, rnd, ctx.online(rnd, retain_pool), k_retain, purpose=f"{ctx.world}/retain")
        pids = sorted(req_pids + ret_pids)
        weights = round_weights({p: n_retain[p] for p in pids}, {p: n_forget.get(p, 0) for p in pids}, cfg.lambda_)
        target = per_class_test_accuracy(ctx, state) if rule == "reference_acc" else None
        arrays = arrays_from_state(state)
        down = record_bytes(arrays)
        msgs = []
        for p in pids:
            _, a, b = weights[p]
            config = {
                "server-round": rnd,
                "stage": f"{ctx.world}/opc",
                "exclude": exclude,
                "world": ctx.world,
                "lr": lr,
                "epochs": epochs,
                "opc.serving": ids,
                "opc.lambda": b * cfg.lambda_,
                "opc.ce_weight": a,
                "opc.layer": cfg.layer,
                "opc.squared": cfg.squared,
                "opc.forget_batch_size": cfg.forget_batch_size,
                "opc.batch_norm": cfg.batch_norm,
                "opc.measure": True,
            }
            msgs.append(
                message(RecordDict({"arrays": arrays, "config": ConfigRecord(config)}), ctx.node_of[p], "train")
            )
        replies = ctx.grid.send_and_receive(msgs, timeout=fed.round_timeout_s)
        ok = sorted(
            ((check_sender(r, ctx.pid_of), r.content) for r in replies if not r.has_error()), key=lambda x: x[0]
        )
        meter = {
            "bytes_down": down * len(pids),
            "messages": len(pids),
            "bytes_up": sum(record_bytes(c["arrays"]) for _, c in ok),
            "client_samples": sum(int(c["metrics"]["samples"]) for _, c in ok),
            "failures": len(pids) - len(ok),
        }
        if ctx.clock is not None:
            work = [(p, int(c["metrics"]["samples"]), down, record_bytes(c["arrays"])) for p, c in ok]
            late = set(ctx.clock.phase(work).stragglers)
            ok = [(p, c) for p, c in ok if p not in late]
            ctx.clock.end_round(rnd)
        cost += Cost.metered(meter, rounds=1)
        # the received (global) model, measured where the data live: the stopping rule's reading
        req_ok = [(p, c["metrics"]) for p, c in ok if n_forget.get(p, 0) > 0]
        ret_ok = [(p, c["metrics"]) for p, c in ok if n_retain[p] > 0]
        ratio, forget_acc = received_reading(req_ok, ret_ok, n_forget, n_retain)
        goal = _goal(target, sd, requests, req_ok)
        rec = {
            "round": rnd,
            "requesters": [p for p, _ in req_ok],
            "retain_clients": [p for p, _ in ret_ok],
            "received_norm_ratio": ratio,
            "received_forget_acc": forget_acc,
            "stop_rule": rule,
        }
        if per_round and (
            (rule == "norm_ratio" and ratio is not None and ratio < cfg.stop_ratio)
            or (rule == "reference_acc" and forget_acc is not None and forget_acc <= goal)
        ):
            # the global model of the previous round already meets the rule: keep it, drop this round's updates
            rec["stop"] = True
            per_round.append(rec)
            _save(ckpt, ctx, state, cost, momentum, rnd, per_round, observed)
            break
        usable = [(p, c) for p, c in ok if weights[p][0] > 0]
        if not usable:
            raise EngineError(f"{ctx.world}: round {rnd}: no usable update for {', '.join(ids)}")
        deltas = [sub(state_from_arrays(c["arrays"]), state) for _, c in usable]
        if not observed and req_ok:  # the first update a requester sent: the inversion attack's target
            p = req_ok[0][0]
            c = dict(ok)[p]
            observed[ids[0]] = {
                "client": p,
                "round": rnd,
                "start": state,
                "end": state_from_arrays(c["arrays"]),
                "steps": int(c["metrics"]["samples"]) // max(1, fed.batch_size),
                "lr": lr,
                "batch_size": cfg.forget_batch_size,
                "objective": "opc",
                "n_forget": n_forget[p],
                "layer": cfg.layer,
                "lambda": weights[p][2] * cfg.lambda_,
                "squared": cfg.squared,
                "batch_norm": cfg.batch_norm,
            }
        state, momentum = server_step(
            state, deltas, [weights[p][0] for p, _ in usable], momentum, cfg.server_lr, cfg.server_momentum
        )
        rec["stop"] = False
        per_round.append(rec)
        reading = fmt_reading(ratio, 4), fmt_reading(forget_acc, 3)
        log.info("[%s] %s round %d: received norm ratio %s, forget acc %s", ctx.world, ids, rnd, *reading)
        _save(ckpt, ctx, state, cost, momentum, rnd, per_round, observed)
    diagnostics: dict[str, Any] = {"protocol": "fedavg", "local_epochs": epochs, "unlearning_rounds": per_round}
    if cfg.recovery_rounds:
        first = rnd + 1
        state, meter, hist = fedavg_world(ctx, requests, state, first, first + cfg.recovery_rounds - 1, "recovery")
        cost += Cost.metered(meter, cfg.recovery_rounds)
        diagnostics["recovery_rounds"] = hist
    return MethodOutcome(state, cost, diagnostics, observed)


def received_reading(
    req_ok: list[tuple[int, Any]], ret_ok: list[tuple[int, Any]], n_forget: dict[int, int], n_retain: dict[int, int]
) -> tuple[float | None, float | None]:
    """``(forget / retain feature-norm ratio, forget accuracy)`` of the received global model, from the clients'
    ``received_*`` measurements weighted by their sample counts.

    A reading that is undefined is None (never nan, which a results file cannot hold): the ratio when no requester or
    no retain client replied, or when the retained features have no energy (a collapsed model, whose every feature is
    0); the forget accuracy when no requester replied. The stopping rule never fires on None.
    """
    forget_norm = _mean([m["received_forget_norm"] for _, m in req_ok], [n_forget[p] for p, _ in req_ok])
    forget_acc = _mean([m["received_forget_acc"] for _, m in req_ok], [n_forget[p] for p, _ in req_ok])
    retain_norm = _mean([m["received_retain_norm"] for _, m in ret_ok], [n_retain[p] for p, _ in ret_ok])
    ratio = forget_norm / retain_norm if forget_norm is not None and retain_norm else None
    return ratio, forget_acc


def _mean(values: list[float], weights: list[int]) -> float | None:
    return float(np.average(values, weights=weights)) if values and sum(weights) > 0 else None


def _goal(target: list[float] | None, sd, requests: Sequence[ForgetSplit], req_ok) -> float:
    """The requesters' forget accuracy the ``reference_acc`` rule aims at: the server's held-out per-class accuracy,
    averaged over the forget samples' labels.
    """
    if target is None or not req_ok:
        return -1.0
    labels = np.concatenate([sd.data.train.labels[r.forget] for r in requests])
    return float(np.asarray(target)[labels].mean())


def _save(ckpt, ctx: FedContext, state, cost: Cost, momentum, rnd, per_round, observed) -> None:
    save_checkpoint(
        ckpt,
        {
            "state": state,
            "cost": cost.to_dict(),
            "momentum": momentum,
            "rnd": rnd,
            "per_round": per_round,
            "observed": observed,
        }
        | ({"clock": ctx.clock.state()} if ctx.clock is not None else {}),
    )
