"""What the server observes: the gradient or update a client holding the images would send (simulated here, with
the images, as that client does).
"""

from __future__ import annotations

import torch
from torch import nn

from fed_opc.attacks.inversion.functional import (
    BN_MEAN,
    BN_VAR,
    _bn_names,
    _BNCapture,
    _chunk,
    _gradient,
    _loss,
    _parts,
    _state,
)
from fed_opc.attacks.view import ObservedUpdate
from fed_opc.train import OptimConfig, make_optimizer, train_loop


def observe_gradient(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss: str = "ce",
    labels_public: bool = False,
    train_mode: bool = False,
    bn_stats: bool = False,
) -> ObservedUpdate:
    """The gradient a client holding ``(x, y)`` would send for ``model``, as an observation.

    Parameters
    ----------
    model : the model the client received; not changed.
    x, y : the client's samples.
    loss : the loss the samples enter (a key of ``LOSSES``).
    labels_public : attach the labels (an attacker who knows them).
    train_mode : compute the gradient in train mode (batch norm normalises with the batch's own statistics, as in
        training) instead of eval mode (running statistics).
    bn_stats : also record each batch-norm layer's batch statistics (entries ``<layer>.batch_mean`` and
        ``<layer>.batch_var`` of ``target``): what a client's updated running statistics reveal to the server, since
        ``running' = (1 - momentum) running + momentum * batch statistic``.

    """
    import copy

    names = _parts(model)
    work = copy.deepcopy(model).train(train_mode)
    params = {n: p.detach().clone().requires_grad_(True) for n, p in work.named_parameters()}
    buffers = {n: b.detach().clone() for n, b in work.named_buffers()}
    capture = _BNCapture(work)
    try:
        grads = _gradient(work, params, buffers, _loss(loss), x, y, create_graph=False)
    finally:
        capture.close()
    target = {n: g.detach() for n, g in zip(names, grads)}
    if bn_stats:
        for name, (mean, var) in zip(_bn_names(work), capture.take()):
            target[name + BN_MEAN], target[name + BN_VAR] = mean.detach(), var.detach()
    return ObservedUpdate(
        params_at=_state(model),
        target=target,
        kind="gradient",
        num_images=len(x),
        loss=loss,
        labels=y.detach().clone() if labels_public else None,
        train_mode=train_mode,
    )


def observe_update(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int,
    lr: float,
    batch_size: int | None = None,
    loss: str = "ce",
    labels_public: bool = False,
    train_mode: bool = True,
) -> ObservedUpdate:
    """The update ``theta_after - theta_before`` of ``steps`` plain SGD steps on ``(x, y)`` from ``model``'s state.

    Runs the project's training loop on a copy (train mode; ``train_mode=False`` keeps batch norm on the running
    statistics, as a client with frozen batch norm trains); step ``s`` uses consecutive chunk ``s`` of
    ``batch_size`` samples, cycling. ``model`` is not changed.
    """
    import copy

    names = _parts(model)
    loss_fn = _loss(loss)
    work = copy.deepcopy(model)
    before = _state(work)
    batches = [{"x": x[i], "y": y[i]} for i in (_chunk(s, len(x), batch_size, x.device) for s in range(steps))]

    def objective(m: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        f = m.features(batch["x"])
        return loss_fn(f, m.head(f), batch["y"])

    opt = make_optimizer(work.parameters(), OptimConfig(lr=lr))
    train_loop(work, objective, batches, opt, frozen_batch_norm=not train_mode)
    after = dict(work.named_parameters())
    return ObservedUpdate(
        params_at=before,
        target={n: (after[n].detach() - before[n]).clone() for n in names},
        kind="update",
        num_images=len(x),
        local_steps=steps,
        lr=lr,
        batch_size=batch_size,
        loss=loss,
        labels=y.detach().clone() if labels_public else None,
        train_mode=train_mode,
    )
