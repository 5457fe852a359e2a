"""The server's side of a message exchange, and the arithmetic on model states that combines the replies.

``exchange`` sends one content to a set of partitions and meters what travelled (payload bytes, messages, client
samples, failures; on an edge federation the stragglers past the deadline are dropped). ``retain_round`` and
``unlearn_round`` are the two phases of an unlearning round built on it: ordinary ``train`` messages to the retain
clients (their mean update is ``delta_r``) and ``train.unlearn`` to the requesters. The state arithmetic (``sub``,
``apply``, ``combine``, ``weighted_mean``) works on ``name -> tensor`` dicts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from fed_opc.client_unlearn import LocalUnlearnSpec
from fed_opc.flower import EngineError, arrays_from_state, check_sender, message, record_bytes, state_from_arrays
from strategies.federated.context import FedContext

log = logging.getLogger("fed_opc")


def sub(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``a - b`` over the floating-point entries (integer buffers, such as batch norm's step count, are skipped)."""
    return {k: (a[k].float() - b[k].float()) for k in a if a[k].is_floating_point()}


def apply(state: dict[str, torch.Tensor], *deltas: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state + sum(deltas)``, each entry kept in its own dtype; ``state`` is not changed."""
    out = {k: v.clone() for k, v in state.items()}
    for d in deltas:
        for k, v in d.items():
            out[k] = (out[k].float() + v).to(out[k].dtype)
    return out


def buffer_names(ctx: FedContext) -> set[str]:
    """The names of the scenario model's buffers (batch norm's running statistics), as :func:`combine` takes them."""
    from fed_opc.models import new_model

    return {n for n, _ in new_model(ctx.sc, ctx.sd).named_buffers()}


def combine(state, delta_r, delta_f, buffers: set[str]) -> dict[str, torch.Tensor]:
    """``theta + delta_r + delta_f`` for parameters: the joint objective's two parts, each computed where its data
    lives. Statistics buffers (batch norm's running mean and variance) are not gradient steps: adding both changes
    would count the shift twice (and can drive a variance negative), so they take the mean of the two.
    """
    half = {k: v * 0.5 for k, v in delta_f.items() if k in buffers}
    out = apply(state, {k: v * (0.5 if k in buffers else 1.0) for k, v in delta_r.items()})
    return apply(out, {k: (half[k] if k in buffers else v) for k, v in delta_f.items()})


def weighted_mean(deltas: Sequence[dict[str, torch.Tensor]], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """The mean of ``deltas`` weighted by ``weights`` (renormalised to sum 1)."""
    total = float(sum(weights))
    return {k: sum(d[k] * (w / total) for d, w in zip(deltas, weights)) for k in deltas[0]}


def exchange(
    ctx: FedContext, content: RecordDict, pids: list[int], kind: str, group: str, who: str
) -> tuple[list[tuple[int, RecordDict]], dict[str, int]]:
    """Send ``content`` to each partition in ``pids`` as ``kind``; return the answers in partition order and the costs.

    Error replies and missing answers are logged and counted as failures. Bytes count the array payloads: every
    ArrayRecord of ``content`` per message down, the reply's ``arrays`` up.
    """
    msgs = [message(content, ctx.node_of[p], kind, group_id=group) for p in pids]
    replies = ctx.grid.send_and_receive(msgs, timeout=ctx.sc.federation.round_timeout_s)
    pid_of = ctx.pid_of
    down = sum(record_bytes(rec) for rec in content.array_records.values())
    meter = {"bytes_down": down * len(pids), "messages": len(pids), "bytes_up": 0, "client_samples": 0}
    ok = []
    for r in sorted(replies, key=lambda r: pid_of.get(r.metadata.src_node_id, -1)):
        if r.has_error():
            log.warning("round %s: %s %s failed: %s", group, who, pid_of.get(r.metadata.src_node_id), r.error.reason)
            continue
        p = check_sender(r, pid_of)
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


def retain_round(
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
    ok, meter = exchange(ctx, RecordDict({"arrays": arrays, "config": cfg}), pids, "train", str(rnd), "retain client")
    deltas, weights, norms = [], [], []
    for _, content in ok:
        m = content["metrics"]
        if int(m["num-examples"]) == 0:
            continue
        deltas.append(sub(state_from_arrays(content["arrays"]), state))
        weights.append(float(m["num-examples"]))
        norms.append(float(m["feature_norm"]))
    if not deltas:
        if not pids or meter.get("stragglers", 0):
            return None, 0.0, meter
        raise EngineError(f"round {rnd}: no retain client answered")
    return weighted_mean(deltas, weights), float(np.average(norms, weights=weights)), meter


def unlearn_round(
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
    ok, meter = exchange(ctx, content, pids, "train.unlearn", str(rnd), "requester")
    out = [(p, state_from_arrays(c["arrays"]), dict(c["metrics"])) for p, c in ok]
    return out, meter
