"""FedEraser (Liu et al., "FedEraser: Enabling Efficient Client-Level Data Removal from Federated Learning Models",
IWQoS 2021): calibrated replay of the client updates the server stored during pretraining.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from flwr.app import ConfigRecord, RecordDict

from fed_opc.flower import EngineError, arrays_from_state, state_bytes, state_from_arrays
from fed_opc.unlearning.federated import FedEraserConfig
from strategies.cost import Cost
from strategies.federated.context import FedContext, MethodOutcome, remaining_clients
from strategies.federated.exchange import apply, buffer_names, exchange, sub, weighted_mean


def serve_fed_eraser(ctx: FedContext, requests, cfg: FedEraserConfig, start_state) -> MethodOutcome:
    """FedEraser (Liu et al., IWQoS 2021): replay the stored rounds with calibration training.

    The server stored every participant's update at rounds 1, 1 + interval, ... of pretraining. Starting from the
    initial model, for each stored round the remaining participants train ``calibration_ratio`` x the local epochs
    from the current calibrated model; the weighted mean of their new updates gives the step's direction and the
    weighted mean of the same participants' stored updates its length (:func:`calibrate`). Requesters' updates are
    dropped (client scope) or recomputed without the forgotten data (class / samples scope).
    """
    hist = ctx.update_history
    if not hist:
        raise EngineError("fed_eraser: no stored client updates from pretraining")
    sc, sd = ctx.sc, ctx.sd
    exclude = ctx.served_before + [r.request_id for r in requests]
    alive = set(remaining_clients(sd, exclude))
    storage = sum(state_bytes(u) for per in hist.values() for u in per.values())
    state = ctx.init_state
    buffers = buffer_names(ctx)
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
        news, olds, weights = [], [], []
        for p, content in ok:
            m = content["metrics"]
            if int(m["num-examples"]) == 0:
                continue
            new = sub(state_from_arrays(content["arrays"]), state)
            news.append(new)
            olds.append({k: hist[t][p][k].float() for k in new})
            weights.append(float(m["num-examples"]))
        if news:
            state = apply(state, calibrate(news, olds, weights, buffers, cfg.calibration))
    return MethodOutcome(state, cost, {"calibrated_rounds": len(hist)})


def calibrate(
    news: Sequence[dict[str, torch.Tensor]],
    olds: Sequence[dict[str, torch.Tensor]],
    weights: Sequence[float],
    buffers: set[str],
    how: str,
) -> dict[str, torch.Tensor]:
    """One calibrated step: the direction of the weighted mean of the new updates ``news``, the length of the
    weighted mean of the same clients' stored updates ``olds``.

    ``how``: ``model`` measures both lengths over all parameters together (one scale for the step); ``layer`` per
    parameter tensor (FedEraser's reference code). Statistics buffers (batch norm's running mean and variance) are not
    steps of a learned parameter: they take the new updates' mean, unscaled.

    Both calibrate the aggregate, not each client: scaling every client's update to its own stored length, then
    averaging (the paper's equation read per client), undid the cancellation between non-IID clients and collapsed
    the main scenario's model on 2 seeds of 3 (docs/federated.md, "FedEraser's calibration, measured").
    """
    new, old = weighted_mean(news, weights), weighted_mean(olds, weights)
    params = [k for k in new if k not in buffers]

    def scale(keys: Sequence[str]) -> float:
        n_new = torch.sqrt(sum(new[k].pow(2).sum() for k in keys))
        n_old = torch.sqrt(sum(old[k].pow(2).sum() for k in keys))
        return float(n_old / n_new) if n_new > 0 else 1.0

    if how == "model":
        s = scale(params)
        return {k: (new[k] if k in buffers else new[k] * s) for k in new}
    if how == "layer":
        return {k: (new[k] if k in buffers else new[k] * scale([k])) for k in new}
    raise ValueError(f"fed_eraser: unknown calibration {how!r} (valid: layer, model)")
