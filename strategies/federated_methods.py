"""Federated unlearning methods, run on the grid against one group of deletion requests.

Each method is a function ``serve_<name>(ctx, requests, cfg, start_state) -> MethodOutcome``. A method runs in its own
*world*: its own timeline of the same federation, in which the requests it serves become excluded data (clients are
told the world's served request ids, and refuse to read those samples again). All methods of a run start from the
same pretrained global model and serve the same forget sets; costs count what each one actually sent and computed.

``fed_opc``, ``fed_ga``, ``fed_rl`` and ``pga`` share one loop of *unlearning rounds* (``unlearning_rounds``): sampled
retain clients send ordinary FedAvg updates, aggregated into the retain update ``delta_r``; the requester(s) receive
the global model and ``delta_r`` in a ``train.unlearn`` message addressed to them only, run local steps of their
objective under the method's constraint, and send their model back; the server combines the two.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from fed_opc.checkpoint import load_checkpoint, save_checkpoint
from fed_opc.client_unlearn import LocalUnlearnSpec
from fed_opc.data.forget import ForgetSplit, union_forget
from fed_opc.data.scenario_data import ScenarioData
from fed_opc.edge import Availability, EdgeClock, sampling_pool
from fed_opc.flower import EngineError, arrays_from_state, message, record_bytes, state_bytes, state_from_arrays
from fed_opc.unlearning.federated import (
    FedEraserConfig,
    FedFinetuneConfig,
    FedGAConfig,
    FedOPCConfig,
    FedRetrainConfig,
    FedRLConfig,
    PGAConfig,
    RoundsConfig,
)
from strategies.cost import Cost
from strategies.fedavg import sample_clients
from strategies.training import federated_training, test_logits

log = logging.getLogger("fed_opc")


@dataclass
class FedContext:
    """What a federated method needs: the grid, the scenario, the node map, its world and its checkpoint folder."""

    grid: Any
    sc: Any
    sd: ScenarioData
    node_of: dict[int, int]
    world: str
    served_before: list[str]  # ids this world served at earlier request rounds
    round0: int  # absolute round at which the requests fire
    ckpt_dir: Path
    init_state: dict[str, torch.Tensor] | None = None  # the seeded initial model (fed_retrain, fed_eraser)
    pretrain_rounds: int = 0
    update_history: dict[int, dict[int, dict[str, torch.Tensor]]] | None = None  # fed_eraser: round -> pid -> update
    availability: Availability | None = None  # who is online per round (None: everybody, always)
    clock: EdgeClock | None = None  # this world's simulated clock (device profiles)

    def online(self, rnd: int, pids: Sequence[int]) -> list[int]:
        """The clients of ``pids`` that are online in round ``rnd``."""
        return sampling_pool(self.availability, rnd, pids)


@dataclass
class MethodOutcome:
    state: dict[str, torch.Tensor]
    cost: Cost
    diagnostics: dict[str, Any] = field(default_factory=dict)
    observed: dict[str, Any] = field(default_factory=dict)  # what the server saw, for the attacks
    latency: dict[str, dict[str, Any]] = field(default_factory=dict)  # request id -> when and by whom it was served
    edge: dict[str, Any] = field(default_factory=dict)  # the world's simulated clock and device costs
    wall_s: float = 0.0  # the seconds the method's stage took (set by the run, for the whole stage)


# Methods whose protocol needs the requester itself (its local steps); on an edge federation they wait for it to come
# online. The others (fed_retrain, fed_finetune, fed_eraser) serve a request without it.
NEEDS_REQUESTER = frozenset({"fed_opc", "pga", "fed_ga", "fed_rl"})


def _sub(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (a[k].float() - b[k].float()) for k in a if a[k].is_floating_point()}


def _apply(state: dict[str, torch.Tensor], *deltas: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {k: v.clone() for k, v in state.items()}
    for d in deltas:
        for k, v in d.items():
            out[k] = (out[k].float() + v).to(out[k].dtype)
    return out


def _buffer_names(ctx: FedContext) -> set[str]:
    from fed_opc.models import new_model

    return {n for n, _ in new_model(ctx.sc, ctx.sd).named_buffers()}


def _combine(state, delta_r, delta_f, buffers: set[str]) -> dict[str, torch.Tensor]:
    """``theta + delta_r + delta_f`` for parameters: the joint objective's two parts, each computed where its data
    lives. Statistics buffers (batch norm's running mean and variance) are not gradient steps: adding both changes
    would count the shift twice (and can drive a variance negative), so they take the mean of the two.
    """
    half = {k: v * 0.5 for k, v in delta_f.items() if k in buffers}
    out = _apply(state, {k: v * (0.5 if k in buffers else 1.0) for k, v in delta_r.items()})
    return _apply(out, {k: (half[k] if k in buffers else v) for k, v in delta_f.items()})


def _weighted_mean(deltas: Sequence[dict[str, torch.Tensor]], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    total = float(sum(weights))
    return {k: sum(d[k] * (w / total) for d, w in zip(deltas, weights)) for k in deltas[0]}


def remaining_clients(sd: ScenarioData, exclude: Sequence[str]) -> list[int]:
    """Partition ids that still hold data once the ``exclude`` requests are removed."""
    gone = union_forget([sd.request(r) for r in exclude])
    return [p for p in range(sd.num_clients) if len(np.setdiff1d(sd.partitions[p], gone))]


# A request that finds no requester online waits at most this many rounds inside a method's unlearning rounds.
IDLE_LIMIT = 1000

# ----------------------------------------------------------------------------------------------------------------------
# FedAvg-based baselines


def fedavg_world(
    ctx: FedContext, requests, start: dict, first: int, last: int, tag: str, lr: float | None = None
) -> tuple[dict, dict, list]:
    """FedAvg rounds ``first..last`` in the method's world without the served and given requests' data.

    Checkpointed every round under ``<world>.r<request round>.<tag>.ckpt``: the request round keeps the stages of
    requests served at different rounds apart. Returns (state, cost meter, per-round records).
    """
    exclude = ctx.served_before + [r.request_id for r in requests]
    res = federated_training(
        ctx.grid,
        ctx.sc,
        ctx.sd,
        ctx.node_of,
        initial_state=start,
        first_round=first,
        last_round=last,
        stage=f"{ctx.world}/{tag}",
        exclude=exclude,
        eligible=remaining_clients(ctx.sd, exclude),
        checkpoint=ctx.ckpt_dir / f"{ctx.world}.r{ctx.round0}.{tag}.ckpt",
        lr=lr,
        world=ctx.world,
        availability=ctx.availability,
        clock=ctx.clock,
    )
    return res.state, res.cost.as_dict(), [r.as_dict() for r in res.rounds]


def serve_fed_retrain(ctx: FedContext, requests, cfg: FedRetrainConfig, start_state) -> MethodOutcome:
    """FedAvg from the same seeded initial model, for as many rounds as the federation has trained when the request
    fires, without the forgotten data (of this request and of every request served before it).
    """
    rounds = cfg.rounds or ctx.round0
    state, meter, hist = fedavg_world(ctx, requests, ctx.init_state, 1, rounds, "retrain")
    return MethodOutcome(state, Cost.metered(meter, rounds), {"rounds": hist})


def serve_fed_finetune(ctx: FedContext, requests, cfg: FedFinetuneConfig, start_state) -> MethodOutcome:
    """FedAvg continued from the pretrained global model for ``rounds`` rounds without the forgotten data."""
    first = ctx.round0 + 1
    state, meter, hist = fedavg_world(ctx, requests, start_state, first, ctx.round0 + cfg.rounds, "finetune", cfg.lr)
    return MethodOutcome(state, Cost.metered(meter, cfg.rounds), {"rounds": hist})


# ----------------------------------------------------------------------------------------------------------------------
# unlearning rounds: retain update + requester's local steps


def _exchange(
    ctx: FedContext, content: RecordDict, pids: list[int], kind: str, group: str, who: str
) -> tuple[list[tuple[int, RecordDict]], dict[str, int]]:
    """Send ``content`` to each partition in ``pids`` as ``kind``; return the answers in partition order and the costs.

    Error replies and missing answers are logged and counted as failures. Bytes count the array payloads: every
    ArrayRecord of ``content`` per message down, the reply's ``arrays`` up.
    """
    msgs = [message(content, ctx.node_of[p], kind, group_id=group) for p in pids]
    replies = ctx.grid.send_and_receive(msgs, timeout=ctx.sc.federation.round_timeout_s)
    pid_of = {n: p for p, n in ctx.node_of.items()}
    down = sum(record_bytes(rec) for rec in content.array_records.values())
    meter = {"bytes_down": down * len(pids), "messages": len(pids), "bytes_up": 0, "client_samples": 0}
    ok = []
    for r in sorted(replies, key=lambda r: pid_of.get(r.metadata.src_node_id, -1)):
        p = pid_of.get(r.metadata.src_node_id)
        if r.has_error():
            log.warning("round %s: %s %s failed: %s", group, who, p, r.error.reason)
            continue
        meter["bytes_up"] += record_bytes(r.content["arrays"])
        meter["client_samples"] += int(r.content["metrics"]["samples"])
        ok.append((p, r.content))
    meter["failures"] = len(pids) - len(ok)
    if ctx.clock is not None:  # one phase on the simulated clock; updates past the deadline are dropped
        work = [(p, int(c["metrics"]["samples"]), down, record_bytes(c["arrays"])) for p, c in ok]
        late = set(ctx.clock.phase(work).stragglers)
        if late:
            log.info("round %s: %s stragglers dropped (past the deadline): %s", group, who, sorted(late))
            ok = [(p, c) for p, c in ok if p not in late]
        meter["stragglers"] = len(late)
    return ok, meter


def _retain_round(
    ctx: FedContext, state, rnd: int, pids: list[int], exclude: list[str]
) -> tuple[dict | None, float, dict]:
    """Ordinary training messages to ``pids``; returns (delta_r, weighted retain feature norm, cost meter).

    ``delta_r`` is None when no retain client was online or every update came after the deadline (an idle round).
    """
    arrays = arrays_from_state(state)
    fed = ctx.sc.federation
    cfg = ConfigRecord(
        {
            "server-round": rnd,
            "stage": f"{ctx.world}/retain",
            "exclude": exclude,
            "world": ctx.world,
            "lr": fed.lr,
            "epochs": fed.local_epochs,
            "report_norm": True,
        }
    )
    ok, meter = _exchange(ctx, RecordDict({"arrays": arrays, "config": cfg}), pids, "train", str(rnd), "retain client")
    deltas, weights, norms = [], [], []
    for _, content in ok:
        m = content["metrics"]
        if int(m["num-examples"]) == 0:
            continue
        deltas.append(_sub(state_from_arrays(content["arrays"]), state))
        weights.append(float(m["num-examples"]))
        norms.append(float(m["feature_norm"]))
    if not deltas:
        if not pids or meter.get("stragglers", 0):
            return None, 0.0, meter
        raise EngineError(f"round {rnd}: no retain client answered")
    return _weighted_mean(deltas, weights), float(np.average(norms, weights=weights)), meter


def _unlearn_round(
    ctx: FedContext,
    state,
    delta_r,
    rnd: int,
    pids: list[int],
    serving: list[str],
    spec: LocalUnlearnSpec,
    extra: dict[str, Any] | None = None,
) -> tuple[list[tuple[int, dict, dict]], dict]:
    """``train.unlearn`` to each requester in ``pids``; returns [(pid, local state, metrics)] and the cost meter."""
    arrays = arrays_from_state(state)
    dr = ArrayRecord({k: v for k, v in delta_r.items()})
    cfg = ConfigRecord(
        {"server-round": rnd, "world": ctx.world, "exclude": list(ctx.served_before), "serving": serving}
        | spec.to_config()
        | (extra or {})
    )
    content = RecordDict({"arrays": arrays, "retain_update": dr, "config": cfg})
    ok, meter = _exchange(ctx, content, pids, "train.unlearn", str(rnd), "requester")
    out = [(p, state_from_arrays(c["arrays"]), dict(c["metrics"])) for p, c in ok]
    return out, meter


def _fmt(x: float | None, digits: int) -> str:
    """A reading for the log: ``digits`` decimals, or "undefined" for None (a ratio without retained energy)."""
    return "undefined" if x is None else f"{x:.{digits}f}"


def per_class_test_accuracy(ctx: FedContext, state: dict[str, torch.Tensor]) -> list[float]:
    """The server's held-out accuracy of ``state`` per class (its own evaluation data; no client data involved)."""
    sd = ctx.sd
    pred = test_logits(ctx.sc, sd, state).argmax(1).numpy()
    y = sd.data.test.labels[sd.test_idx]
    return [float((pred[y == c] == c).mean()) if (y == c).any() else 0.0 for c in range(sd.data.test.num_classes)]


def stop_rule_for(request: ForgetSplit, rule: str) -> str:
    """``auto``: contract to the norm-ratio threshold when a class is removed from every client; otherwise (a client's
    data, some samples, one client's share of a class: data the rest of the federation still represents) stop once the
    requester's forget accuracy reaches the server's held-out accuracy on those classes (``reference_acc``).
    """
    if rule != "auto":
        return rule
    return "norm_ratio" if request.scope == "class" and len(request.clients) > 1 else "reference_acc"


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
    buffers = _buffer_names(ctx)
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
            delta_r, retain_norm, m1 = _retain_round(ctx, state, rnd, retain_pids, exclude)
            online_req = ctx.online(rnd, req.clients)
            if delta_r is None or not online_req:
                # an edge federation: no retain update in time, or no requester online. Without the requester the
                # round is an ordinary FedAvg round; the request waits for the next round
                cost += Cost.metered(m1, rounds=1)
                if delta_r is not None:
                    state = _apply(state, delta_r)
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
            outs, m2 = _unlearn_round(ctx, state, delta_r, rnd, req_pids, [req.request_id], spec, extra)
            cost += Cost.metered(m1) + Cost.metered(m2, rounds=1)
            if ctx.clock is not None:
                ctx.clock.end_round(rnd)
            if not outs and m2.get("stragglers", 0):  # the requesters' updates came too late: FedAvg, then retry
                state = _apply(state, delta_r)
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
            delta_f = _weighted_mean([_sub(s, state) for _, s, _ in outs], weights)
            new_state = (
                _apply(state, delta_f) if spec.start == "reference" else _combine(state, delta_r, delta_f, buffers)
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
                _fmt(ratio, 4),
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


def _local_spec(cfg: RoundsConfig, **kw: Any) -> LocalUnlearnSpec:
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
    """Federated OPC with the scenario's protocol: ``fedavg`` (``strategies.opc_fedavg``) or ``two_phase``."""
    if cfg.protocol == "fedavg":
        from strategies.opc_fedavg import fedavg_opc  # it builds on this module's message exchange and arithmetic

        return fedavg_opc(ctx, requests, cfg, start_state)
    spec = _local_spec(
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
    spec = _local_spec(cfg, objective="ga", constraint="none", stop_acc=cfg.stop_acc)
    return unlearning_rounds(ctx, requests, cfg, spec, start_state, stop_acc=cfg.stop_acc)


def serve_fed_rl(ctx: FedContext, requests, cfg: FedRLConfig, start_state) -> MethodOutcome:
    spec = _local_spec(cfg, objective="rl", constraint="none")
    return unlearning_rounds(ctx, requests, cfg, spec, start_state)


def serve_pga(ctx: FedContext, requests, cfg: PGAConfig, start_state) -> MethodOutcome:
    """Halimi et al.: ascent from the other clients' average, kept within ``radius`` of it, then recovery rounds."""
    radius = cfg.radius
    if radius is None:
        # one third of the distance to a freshly initialised model, as in the paper; measured from the global model
        # the request arrives at (the reference itself only exists once the retain clients have answered)
        radius = float(torch.sqrt(sum((d**2).sum() for d in _sub(start_state, ctx.init_state).values()))) / 3.0
    spec = _local_spec(cfg, objective="ga", constraint="ball", epsilon=radius, start="reference", stop_acc=cfg.stop_acc)
    out = unlearning_rounds(ctx, requests, cfg, spec, start_state, stop_acc=cfg.stop_acc)
    out.diagnostics["radius"] = radius
    return out


# ----------------------------------------------------------------------------------------------------------------------
# FedEraser


def serve_fed_eraser(ctx: FedContext, requests, cfg: FedEraserConfig, start_state) -> MethodOutcome:
    """FedEraser (Liu et al., IWQoS 2021): replay the stored rounds with calibration training.

    The server stored every participant's update at rounds 1, 1 + interval, ... of pretraining. Starting from the
    initial model, for each stored round the remaining participants train ``calibration_ratio`` x the local epochs
    from the current calibrated model; each calibrated update keeps the stored update's per-tensor norm and takes the
    new update's direction; their weighted mean moves the calibrated model. Requesters' updates are dropped (client
    scope) or recomputed without the forgotten data (class / samples scope).
    """
    hist = ctx.update_history
    if not hist:
        raise EngineError("fed_eraser: no stored client updates from pretraining")
    sc, sd = ctx.sc, ctx.sd
    exclude = ctx.served_before + [r.request_id for r in requests]
    alive = set(remaining_clients(sd, exclude))
    storage = sum(state_bytes(u) for per in hist.values() for u in per.values())
    state = ctx.init_state
    cost = Cost(server_storage_bytes=storage)
    epochs = sc.federation.local_epochs * cfg.calibration_ratio
    for i, t in enumerate(sorted(hist)):
        # the stored round's participants that remain and are online now (the calibration runs at round0 + 1 + i)
        pids = ctx.online(ctx.round0 + 1 + i, sorted(p for p in hist[t] if p in alive))
        if not pids:
            continue
        arrays = arrays_from_state(state)
        config = ConfigRecord(
            {
                "server-round": t,
                "stage": f"{ctx.world}/calibrate",
                "exclude": exclude,
                "world": ctx.world,
                "lr": sc.federation.lr,
                "epochs": epochs,
            }
        )
        ok, meter = _exchange(ctx, RecordDict({"arrays": arrays, "config": config}), pids, "train", f"cal{t}", "client")
        cost += Cost.metered(meter, rounds=1)
        deltas, weights = [], []
        for p, content in ok:
            m = content["metrics"]
            if int(m["num-examples"]) == 0:
                continue
            new = _sub(state_from_arrays(content["arrays"]), state)
            old = hist[t][p]
            cal = {k: new[k] * (old[k].float().norm() / new[k].norm()) if new[k].norm() > 0 else new[k] for k in new}
            deltas.append(cal)
            weights.append(float(m["num-examples"]))
        if deltas:
            state = _apply(state, _weighted_mean(deltas, weights))
    return MethodOutcome(state, cost, {"calibrated_rounds": len(hist)})


# The server side of each federated method, keyed like its config in fed_opc.unlearning.federated.CONFIGS (a test
# checks that the two registries name the same methods).
SERVE = {
    "fed_opc": serve_fed_opc,
    "fed_retrain": serve_fed_retrain,
    "fed_finetune": serve_fed_finetune,
    "fed_eraser": serve_fed_eraser,
    "pga": serve_pga,
    "fed_ga": serve_fed_ga,
    "fed_rl": serve_fed_rl,
}
