"""The FedAvg-based baselines: ``fed_retrain`` and ``fed_finetune``, and ``fedavg_world``, the FedAvg rounds of a
method's world without the data it has forgotten (also a round-based method's recovery rounds and the world's
continuation between request rounds).

These rounds are ordinary FedAvg, run by ``strategies.training.federated_training`` with the Flower strategy
``strategies.fedavg.SeededFedAvg``: only the excluded requests and the eligible clients differ from pretraining.
"""

from __future__ import annotations

from fed_opc.unlearning.federated import FedFinetuneConfig, FedRetrainConfig
from strategies.cost import Cost
from strategies.federated.context import FedContext, MethodOutcome, remaining_clients
from strategies.training import federated_training


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
