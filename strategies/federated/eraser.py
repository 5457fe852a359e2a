"""FedEraser (Liu et al., "FedEraser: Enabling Efficient Client-Level Data Removal from Federated Learning Models",
IWQoS 2021): calibrated replay of the client updates the server stored during pretraining.
"""

from __future__ import annotations

from flwr.app import ConfigRecord, RecordDict

from fed_opc.flower import EngineError, arrays_from_state, state_bytes, state_from_arrays
from fed_opc.unlearning.federated import FedEraserConfig
from strategies.cost import Cost
from strategies.federated.context import FedContext, MethodOutcome, remaining_clients
from strategies.federated.exchange import apply, exchange, sub, weighted_mean


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
        ok, meter = exchange(ctx, RecordDict({"arrays": arrays, "config": config}), pids, "train", f"cal{t}", "client")
        cost += Cost.metered(meter, rounds=1)
        deltas, weights = [], []
        for p, content in ok:
            m = content["metrics"]
            if int(m["num-examples"]) == 0:
                continue
            new = sub(state_from_arrays(content["arrays"]), state)
            old = hist[t][p]
            cal = {k: new[k] * (old[k].float().norm() / new[k].norm()) if new[k].norm() > 0 else new[k] for k in new}
            deltas.append(cal)
            weights.append(float(m["num-examples"]))
        if deltas:
            state = apply(state, weighted_mean(deltas, weights))
    return MethodOutcome(state, cost, {"calibrated_rounds": len(hist)})
