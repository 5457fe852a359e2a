"""``simulate(scenario, out_dir)``: the stages of a run, their checkpoints and the run directory.

Stages, in order:

1. FL pretraining: FedAvg up to the first deletion request's round, reused from the pretraining cache when an
   identical one exists (with the client-update history FedEraser needs, when it is among the methods);
2. every federated method serves the requests in its own world (``strategies.federated``): requests that fire
   at the same round are served together; between request rounds, and after the last one up to
   ``federation.rounds``, the world continues FedAvg without the served data;
3. the centralized methods run on the pretrained global model with the union of all forget sets;
4. every resulting model is evaluated against ground truth (``fed_opc.metrics``), then attacked.

A ledger of the requests (``checkpoints/ledger.json``: pending -> unlearning -> done, per method) and every stage's
state are checkpointed atomically under ``<out>/checkpoints/``, so ``resume=True`` continues a killed run without
serving any request twice and reaches the same final numbers.

One job per module:

- ``run_dir``: the output folder's checks (``check_out_dir``), its lock (``RunLock``), clearing an old run;
- ``progress``: the file log, the progress bars, the stage lines and the timing line;
- ``ledger``: the deletion requests' ledger (``Ledger``);
- ``pretrain``: the FL pretraining stage and its cache entry;
- ``methods``: each federated method's stage (serving the request groups in its world) and its checkpoint;
- ``evaluate``: the centralized methods and every method's metrics;
- ``attacks``: the attack stage (the attacks' server view is built by ``strategies.attack_run``);
- ``driver``: ``simulate`` and the orchestration of the stages into ``results.json``.
"""

from strategies.run.driver import SCHEMA_VERSION, RunResult, simulate
from strategies.run.ledger import Ledger
from strategies.run.methods import request_groups
from strategies.run.pretrain import pretrain_rounds
from strategies.run.run_dir import LOCK_NAME, RunDirError, RunLock, check_out_dir, default_out_dir

__all__ = [
    "LOCK_NAME",
    "SCHEMA_VERSION",
    "Ledger",
    "RunDirError",
    "RunLock",
    "RunResult",
    "check_out_dir",
    "default_out_dir",
    "pretrain_rounds",
    "request_groups",
    "simulate",
]
