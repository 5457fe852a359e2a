"""The Flower ``ClientApp``: one simulated device holding one partition of the training set.

Message types handled (Flower's Message API, ``"<category>.<action>"``):

- ``query.whoami``: reports the partition id, so the server can map partition ids to Flower's random node ids;
- ``train``: local epochs of cross-entropy on the client's current data through the one training loop;
- ``evaluate``: loss and accuracy of the received model on the client's current data;
- ``train.unlearn``: the requester's local unlearning steps for the requests being served (``fed_opc.client_unlearn``).

What a client may train on is decided by the deletion requests the server has declared served
(``config["exclude"]``: request ids). The client resolves them from the scenario to index arrays, removes them from its
data and reads samples only through a ``GuardedDataset`` that refuses every forgotten index. The ids it has seen are
kept in ``context.state`` per ``world`` (each unlearning method is its own timeline of the same federation, so a
request served in one method's world is still pending in another's); a few strings, nothing large lives there. The
shared arrays are loaded once per process.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fed_opc.client_unlearn import LocalUnlearnSpec, local_unlearn
from fed_opc.data.forget import GuardedDataset, union_forget
from fed_opc.data.scenario_data import ScenarioData, prepare
from fed_opc.flower import partition_id, stamp_sender, state_from_arrays
from fed_opc.losses import cross_entropy, opc_loss
from fed_opc.models import FeatureModel, new_model
from fed_opc.rng import numpy_rng
from fed_opc.threads import torch_threads
from fed_opc.train import OptimConfig, make_optimizer, paired_batches, predict, supervised_batches, train_loop

STATE_KEY = "fed_opc"  # the small per-client record in context.state


def client_device(sc) -> torch.device:
    """The device a client actor trains on: its share of a GPU when the scenario asks for one and one is visible."""
    if sc.federation.client_resources.num_gpus > 0 and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def client_threads(sc) -> int:
    """Torch threads per client: its CPU share. In-process runs use the same number, so both engines compute alike."""
    return max(1, int(sc.federation.client_resources.num_cpus))


def excluded_requests(msg: Message, context: Context) -> list[str]:
    """Request ids whose forget data this client must no longer read: from the message, merged into its record."""
    cfg = msg.content.config_records.get("config", ConfigRecord())
    told = [str(r) for r in cfg.get("exclude", [])]
    world = str(cfg.get("world", "main"))
    record = context.state.config_records.get(STATE_KEY, ConfigRecord())
    known = [str(r) for r in record.get(f"exclude/{world}", [])]
    merged = sorted(set(known) | set(told))
    record[f"exclude/{world}"] = merged
    context.state[STATE_KEY] = record
    return merged


def client_view(sd: ScenarioData, pid: int, exclude: list[str]) -> tuple[GuardedDataset, np.ndarray]:
    """The guarded training view and this client's current indices (its partition minus forgotten samples)."""
    forgotten = union_forget([sd.request(r) for r in exclude])
    guarded = GuardedDataset(sd.data.train, forbidden=forgotten)
    current = np.setdiff1d(sd.partitions[pid], forgotten).astype(np.int64)
    return guarded, current


def _config(msg: Message) -> ConfigRecord:
    return msg.content.config_records.get("config", ConfigRecord())


def handle_whoami(sc, msg: Message, context: Context) -> Message:
    """``query.whoami``: reply with this client's partition id, so the server can map partition ids to node ids."""
    return Message(RecordDict({"whoami": MetricRecord({"partition-id": partition_id(context)})}), reply_to=msg)


@dataclasses.dataclass
class _Received:
    """What every handler starts from: the message's config, this client's data view and the received model."""

    cfg: ConfigRecord
    pid: int
    sd: ScenarioData
    guarded: GuardedDataset
    current: np.ndarray
    device: torch.device
    model: FeatureModel


def _receive(sc, msg: Message, context: Context) -> _Received:
    pid = partition_id(context)
    sd = prepare(sc)
    guarded, current = client_view(sd, pid, excluded_requests(msg, context))
    device = client_device(sc)
    model = new_model(sc, sd).to(device)
    model.load_state_dict(state_from_arrays(msg.content["arrays"]), strict=True)
    return _Received(_config(msg), pid, sd, guarded, current, device, model)


def handle_train(sc, msg: Message, context: Context) -> Message:
    """FedAvg local training: ``local_epochs`` of cross-entropy over the client's current data.

    Federated OPC's rounds (``opc.serving`` in the config, docs/federated.md) add this client's part of the global
    OPC objective: with forget data of the requests being served and ``opc.lambda`` > 0, its local loss is
    ``opc.ce_weight`` x CE on its remaining data + ``opc.lambda`` x the contraction of its forget data's
    representations (read through the guard's explicit forget view; they never leave the client). Otherwise the
    local training is exactly FedAvg's. ``opc.measure`` first reports the received model's feature norm (and forget
    accuracy) on this client's data, for the server's stopping rule. ``opc.batch_norm: frozen`` keeps batch norm on the
    received running statistics during those steps instead of this client's (skewed) batch statistics.
    """
    r = _receive(sc, msg, context)
    cfg, pid, guarded, current, device, model = r.cfg, r.pid, r.guarded, r.current, r.device, r.model
    rnd = int(cfg.get("server-round", 0))
    stage = str(cfg.get("stage", "train"))
    fed = sc.federation
    serving = [r.sd.request(str(q)) for q in cfg.get("opc.serving", [])]
    forget_idx = np.sort(
        np.concatenate([s.client_forget[pid] for s in serving if pid in s.client_forget] or [np.zeros(0, np.int64)])
    ).astype(np.int64)
    lam = float(cfg.get("opc.lambda", 0.0))
    values: dict = {}
    if bool(cfg.get("opc.measure", False)):
        values |= _measure(model, guarded, current, forget_idx, device)
    samples, loss = 0, float("nan")
    contract = lam > 0 and len(forget_idx) > 0
    if len(current) or contract:
        opt = make_optimizer(
            model.parameters(),
            OptimConfig(lr=float(cfg.get("lr", fed.lr)), momentum=fed.momentum, weight_decay=fed.weight_decay),
        )
        rng = numpy_rng(sc.seed, f"client_train/{stage}", rnd, pid)
        epochs = float(cfg.get("epochs", fed.local_epochs))
        if contract:
            batches = paired_batches(
                guarded,
                current,
                guarded.allow_forget(),
                forget_idx,
                batch_size=fed.batch_size,
                forget_batch_size=int(cfg.get("opc.forget_batch_size", fed.batch_size)),
                epochs=epochs,
                rng=rng,
                device=device,
            )
            objective = functools.partial(
                opc_loss,
                lambda_=lam,
                layer=str(cfg.get("opc.layer", "penultimate")),
                squared=bool(cfg.get("opc.squared", False)),
                ce_weight=float(cfg.get("opc.ce_weight", 1.0)),
            )
            frozen = str(cfg.get("opc.batch_norm", "batch")) == "frozen"
            stats = train_loop(model, objective, batches, opt, frozen_batch_norm=frozen)
        else:
            batches = supervised_batches(guarded, current, fed.batch_size, epochs, rng, device)
            stats = train_loop(model, cross_entropy, batches, opt)
        samples, loss = stats.samples, stats.mean_loss
    values |= {"num-examples": int(len(current)), "train_loss": float(loss), "samples": int(samples)}
    if serving:
        values["n_forget"] = int(len(forget_idx))
    if bool(cfg.get("report_norm", False)):
        # mean penultimate feature norm of the updated model on (up to 256 of) this client's retained data
        feats = predict(model, guarded, current[:256], device=device, what="features")
        values["feature_norm"] = float(feats.norm(dim=1).mean()) if len(feats) else 0.0
    metrics = MetricRecord(values)
    arrays = ArrayRecord({k: v.detach().cpu() for k, v in model.state_dict().items()})
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)


def _measure(model, guarded: GuardedDataset, current: np.ndarray, forget_idx: np.ndarray, device) -> dict:
    """The received model's mean feature norm on (up to 256 of) this client's remaining and forget data, and its
    accuracy on the forget data: what the server's stopping rule of federated OPC reads after aggregation.
    """
    out = {}
    feats = predict(model, guarded, current[:256], device=device, what="features")
    out["received_retain_norm"] = float(feats.norm(dim=1).mean()) if len(feats) else 0.0
    if len(forget_idx):
        view = guarded.allow_forget()
        ff = predict(model, view, forget_idx[:256], device=device, what="features")
        logits = model.head(ff.to(device)).cpu()
        y = torch.from_numpy(view.labels[forget_idx[:256]])
        out["received_forget_norm"] = float(ff.norm(dim=1).mean())
        out["received_forget_acc"] = float((logits.argmax(1) == y).float().mean())
    return out


def handle_evaluate(sc, msg: Message, context: Context) -> Message:
    """Loss and accuracy of the received model on the client's current data."""
    r = _receive(sc, msg, context)
    current = r.current
    if len(current):
        logits = predict(r.model, r.guarded, current, device=r.device)
        y = torch.from_numpy(r.sd.data.train.labels[current])
        loss = float(torch.nn.functional.cross_entropy(logits, y))
        acc = float((logits.argmax(1) == y).float().mean())
    else:
        loss, acc = 0.0, 0.0
    metrics = MetricRecord({"num-examples": int(len(current)), "eval_loss": loss, "eval_acc": acc})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


def handle_unlearn(sc, msg: Message, context: Context) -> Message:
    """The requester's local unlearning for the requests in ``config["serving"]``.

    Its forget data are its share of those requests' forget sets, read through the explicit ``allow_forget`` view;
    its remaining data are read through the guard, which also forbids the forget data being served.
    """
    r = _receive(sc, msg, context)
    cfg, pid, sd, guarded, device, model = r.cfg, r.pid, r.sd, r.guarded, r.device, r.model
    rnd = int(cfg.get("server-round", 0))
    world = str(cfg.get("world", "main"))
    splits = [sd.request(str(q)) for q in cfg.get("serving", [])]
    forget_idx = np.sort(
        np.concatenate([s.client_forget[pid] for s in splits if pid in s.client_forget] or [np.zeros(0, np.int64)])
    )
    guarded.forbid(forget_idx)
    own_retain = np.setdiff1d(r.current, forget_idx).astype(np.int64)
    delta_r = state_from_arrays(msg.content["retain_update"]) if "retain_update" in msg.content.array_records else None
    spec = LocalUnlearnSpec.from_config(cfg)
    if "ref_class_acc" in cfg and len(forget_idx):
        # The server's per-class accuracy of the current global model on its held-out data: forgetting should bring
        # this client's forget accuracy down to what the federation achieves on data it never trained on, not below.
        ref = np.asarray(list(cfg["ref_class_acc"]), dtype=np.float64)
        spec = dataclasses.replace(spec, stop_acc=float(ref[sd.data.train.labels[forget_idx]].mean()))
    rng = numpy_rng(sc.seed, f"client_unlearn/{world}", rnd, pid)
    res = local_unlearn(
        model,
        guarded,
        own_retain,
        guarded.allow_forget(),
        forget_idx,
        spec,
        delta_r=delta_r,
        num_classes=sd.data.train.num_classes,
        rng=rng,
        device=device,
    )
    metrics = MetricRecord(
        {
            "num-examples": int(len(forget_idx)),
            "n_retain": int(len(own_retain)),
            **res.metrics,
            "inner_products": [float(v) for v in res.inner_products],
        }
    )
    arrays = ArrayRecord({k: v for k, v in res.state.items()})
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)


class InjectedFault(RuntimeError):
    """A failure the scenario's ``faults`` asked for."""


def inject_faults(sc, msg: Message, context: Context) -> None:
    """Fail as ``faults`` says: ``crash`` raises (the reply becomes an error); ``die`` ends the client's process.

    ``die`` only ends a Ray actor process; on the in-process engine it raises like ``crash`` (ending the process would
    end the whole simulation).
    """
    if not (sc.faults.crash or sc.faults.die):
        return
    cfg = _config(msg)
    rnd, world, pid = int(cfg.get("server-round", -1)), str(cfg.get("world", "main")), partition_id(context)
    for kind in ("die", "crash"):
        for f in getattr(sc.faults, kind):
            if f.client == pid and f.round == rnd and f.world in (None, world):
                if kind == "die" and sc.federation.backend == "ray":
                    os._exit(17)
                raise InjectedFault(f"injected {kind} of client {pid} in round {rnd} ({world})")


def make_client_app(sc) -> ClientApp:
    """The ``ClientApp`` for scenario ``sc`` (closes over it: ``run_simulation`` leaves ``run_config`` empty)."""
    app = ClientApp()

    @app.query("whoami")
    def _whoami(msg: Message, context: Context) -> Message:
        return handle_whoami(sc, msg, context)

    # Each handler runs with the client's thread count and restores the caller's after it: in-process, the client
    # shares its process with the server's stages, whose numbers must not depend on whether a client ran first.
    @app.train()
    def _train(msg: Message, context: Context) -> Message:
        inject_faults(sc, msg, context)
        with torch_threads(client_threads(sc)):
            return stamp_sender(handle_train(sc, msg, context), context)

    @app.train("unlearn")
    def _unlearn(msg: Message, context: Context) -> Message:
        inject_faults(sc, msg, context)
        with torch_threads(client_threads(sc)):
            return stamp_sender(handle_unlearn(sc, msg, context), context)

    @app.evaluate()
    def _evaluate(msg: Message, context: Context) -> Message:
        with torch_threads(client_threads(sc)):
            return stamp_sender(handle_evaluate(sc, msg, context), context)

    return app
