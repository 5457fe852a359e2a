"""The stage of each federated method: serving every request group in the method's own world.

The serve functions themselves are in ``strategies.federated`` (``registry.METHODS``); this module runs them request
group by request group, with the waiting, deadlines, fallback and continuation rounds between them, and
checkpoints the method's outcome once it has served every request.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from fed_opc.checkpoint import load_checkpoint, save_checkpoint
from fed_opc.config import Scenario
from fed_opc.data.forget import ForgetSplit
from fed_opc.data.scenario_data import ScenarioData
from fed_opc.edge import edge_of, new_clock
from fed_opc.flower import EngineError
from strategies.cost import Cost
from strategies.federated.context import FedContext, MethodOutcome
from strategies.federated.fedavg_based import fedavg_world
from strategies.federated.registry import METHODS
from strategies.federated.rounds import IDLE_LIMIT
from strategies.run.ledger import Ledger
from strategies.run.progress import stage_line


def request_groups(sc: Scenario, sd: ScenarioData) -> list[tuple[int, list[ForgetSplit]]]:
    """Requests grouped by the round they fire at, in round order."""
    by_round: dict[int, list[ForgetSplit]] = defaultdict(list)
    for r, split in zip(sc.requests, sd.requests):
        by_round[r.round].append(split)
    return sorted(by_round.items())


def method_stage(sc, sd, m, groups, pre, init_state, rounds, ck: Path, ledger: Ledger, outcomes, progress):
    """One federated method serving every request group in its own world (a ServerApp stage).

    The world starts from the pretrained model at the first request's round. Requests that fire at the same round are
    served together; between request rounds, and after the last one up to ``federation.rounds``, the world continues
    FedAvg without the served data. On an edge federation (``federation.availability``), a method that needs its
    requester (``FederatedMethod.needs_requester``) first waits for it to come online, the world training meanwhile without the
    pending request's data; a request still waiting after its ``deadline_rounds`` is served by
    ``unlearning.fallback`` when one is set. Every request's latency is recorded.
    """

    def stage(grid, node_of) -> None:
        t0 = time.perf_counter()
        state = pre["state"]
        served: list[str] = []
        total = Cost()
        diagnostics: dict[str, Any] = {}
        observed: dict[str, Any] = {}
        latency: dict[str, dict[str, Any]] = {}
        history = pre.get("updates")
        availability, _ = edge_of(sc)
        clock = new_clock(sc, pre.get("clock"))
        request_cfg = dict(zip(sc.request_ids(), sc.requests))
        cur = groups[0][0] if groups else 0  # the last round the world has trained

        def context(served_before: list[str], round0: int) -> FedContext:
            return FedContext(
                grid, sc, sd, node_of, m, list(served_before), round0, ck, init_state, rounds, history,
                availability, clock,
            )  # fmt: skip

        def serve(
            method: str, splits: list[ForgetSplit], rnd: int, requested: float, one_by_one: bool, pending=()
        ) -> None:
            """Serve ``splits`` with ``method``; ``pending``: requests of the same round still waiting (excluded too)."""
            nonlocal state, observed, cur, total
            ids = [s.request_id for s in splits]
            ctx = context(served + [p.request_id for p in pending], cur)
            outcome = METHODS[method].serve(ctx, splits, sc.unlearning.params[method], state)
            state = outcome.state
            total += outcome.cost
            if one_by_one:  # an edge federation: each request served when its requester is online
                diag = outcome.diagnostics | ({"served_by": method} if method != m else {})
                diagnostics.setdefault("requests", {})[ids[0]] = diag
            else:
                diagnostics.update({f"round{rnd}": outcome.diagnostics} if len(groups) > 1 else outcome.diagnostics)
            observed = observed or outcome.observed
            served.extend(ids)
            for s in splits:
                entry = {
                    "requested_round": rnd,
                    "served_round": cur + outcome.cost.rounds,
                    "served_by": method,
                }
                entry["latency_rounds"] = entry["served_round"] - rnd
                deadline = request_cfg[s.request_id].deadline_rounds
                if deadline is not None:
                    entry["overdue"] = entry["latency_rounds"] > deadline or method != m
                if clock is not None and clock.devices.enabled:
                    entry["latency_s"] = clock.now_s - requested
                latency[s.request_id] = entry
            if clock is not None:
                # on an edge federation the rounds spent serving are rounds of the world's timeline (and clock): the
                # world goes on after them
                cur = max(cur, cur + outcome.cost.rounds)

        def wait_rounds(pending: list[ForgetSplit], last: int, tag: str) -> None:
            """FedAvg rounds cur+1..last without the served and the pending requests' data."""
            nonlocal state, cur, total
            if last <= cur:
                return
            if clock is not None:
                clock.offline_met += last - cur  # rounds in which the pending request's requester was offline
            state_, meter, _ = fedavg_world(context(served, cur), pending, state, cur + 1, last, tag)
            state = state_
            total += Cost.metered(meter, last - cur)
            cur = last

        for i, (rnd, splits) in enumerate(groups):
            ids = [s.request_id for s in splits]
            stage_line(progress, f"{m}: serving {', '.join(ids)} (round {rnd})")
            ledger.mark(ids, m, "unlearning")
            cur = max(cur, rnd)
            requested = clock.round_end_s.get(rnd, clock.now_s) if clock is not None else 0.0
            if availability is None or not METHODS[m].needs_requester:
                serve(m, splits, rnd, requested, one_by_one=False)
            else:
                for j, split in enumerate(splits):
                    online_at = availability.next_online(split.clients, after=cur, limit=IDLE_LIMIT)
                    deadline = request_cfg[split.request_id].deadline_rounds
                    fallback = sc.unlearning.fallback
                    late = deadline is not None and (online_at is None or online_at - rnd > deadline)
                    if late and fallback is not None:
                        wait_rounds(splits[j:], rnd + deadline, f"wait{rnd}.{split.request_id}")
                        stage_line(progress, f"{m}: {split.request_id} overdue; served by {fallback}")
                        serve(fallback, [split], rnd, requested, one_by_one=True, pending=splits[j + 1 :])
                        continue
                    if online_at is None:
                        raise EngineError(f"{m}: no requester of {split.request_id} online within {IDLE_LIMIT} rounds")
                    wait_rounds(splits[j:], online_at - 1, f"wait{rnd}.{split.request_id}")
                    serve(m, [split], rnd, requested, one_by_one=True, pending=splits[j + 1 :])
            nxt = groups[i + 1][0] if i + 1 < len(groups) else sc.federation.rounds
            if nxt > cur:  # the world goes on training without the served data until the next request (or the end)
                cont = context(served, rnd)
                state, meter, _ = fedavg_world(cont, [], state, cur + 1, nxt, f"continue{rnd}")
                total += Cost.metered(meter, nxt - cur)
                cur = nxt
        wall_s = time.perf_counter() - t0
        edge = clock.as_dict() if clock is not None else {}
        outcomes[m] = MethodOutcome(state, total, diagnostics, observed, latency, edge, wall_s)
        save_checkpoint(
            ck / f"method.{m}.ckpt",
            {
                "state": state,
                "cost": total.to_dict() | {"wall_s": wall_s},
                "diagnostics": diagnostics,
                "observed": observed,
                "latency": latency,
                "edge": edge,
            },
        )
        ledger.mark(served, m, "done")
        stage_line(progress, f"{m}: done in {wall_s:.1f} s")

    return stage


def latency_of(request_id: str, outcomes: dict[str, MethodOutcome]) -> dict[str, Any]:
    """``{"latency": {method: {requested_round, served_round, latency_rounds, latency_s?, overdue?, served_by}}}``."""
    per = {m: o.latency[request_id] for m, o in outcomes.items() if request_id in o.latency}
    return {"latency": per} if per else {}


def finished_outcome(ck: Path, m: str, ledger: Ledger) -> MethodOutcome | None:
    """Method ``m``'s outcome from its checkpoint when it has served every request (a resumed run), else None."""
    p = ck / f"method.{m}.ckpt"
    if not (ledger.done(m) and p.is_file()):
        return None
    saved = load_checkpoint(p)
    return MethodOutcome(
        saved["state"],
        Cost.from_dict(saved["cost"]),
        saved["diagnostics"],
        saved["observed"],
        saved.get("latency", {}),
        saved.get("edge", {}),
        float(saved["cost"].get("wall_s", 0.0)),
    )
