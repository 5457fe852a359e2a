"""The server side of the federated unlearning methods: each a serve function driving its own rounds on the grid.

A method is ``serve_<name>(ctx, requests, cfg, start_state) -> MethodOutcome``, registered with its config class in
``registry.METHODS``. It runs in its own *world*: its own timeline of the same federation, in which the requests it
serves become excluded data (clients are told the world's served request ids and refuse to read those samples again).
All methods of a run start from the same pretrained global model and serve the same forget sets; costs count what
each one actually sent and computed.

Why round loops over the Grid and not Flower ``Strategy`` subclasses: a Strategy's round is one configure / aggregate
pair of a single message kind, but an unlearning round has two phases (the retain clients' ``train`` updates, then
the requester's local steps, which need that round's retain update, as a ``train.unlearn`` message to the requester
only), and the stopping rules are read between rounds from what the clients reported. So these functions call
``grid.send_and_receive`` themselves (``exchange.exchange``). Pretraining, and every plain FedAvg round of a world
(``fedavg_based.fedavg_world``), is a real Flower strategy: ``strategies.fedavg.SeededFedAvg``.

Modules: ``context`` (``FedContext``, ``MethodOutcome``, shared request rules), ``exchange`` (messages and state
arithmetic), ``fedavg_based`` (``fed_retrain``, ``fed_finetune``), ``rounds`` (``fed_opc`` two_phase, ``fed_ga``,
``fed_rl``, ``pga``), ``opc_fedavg`` (``fed_opc``'s ``fedavg`` protocol), ``eraser`` (FedEraser), ``registry``.
"""
