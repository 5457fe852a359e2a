"""The attack's forward model: what an observation would hold for trial images (a gradient, or a replayed
update), one problem at a time or many at once with ``torch.func``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.func import grad as func_grad
from torch.func import vmap

from fed_opc.attacks.inversion.functional import (
    BN_MEAN,
    BN_VAR,
    _bn_names,
    _BNCapture,
    _chunk,
    _forward,
    _gradient,
    _loss,
    _parts,
)
from fed_opc.attacks.view import ObservedUpdate


class _Observer:
    """Computes, for candidate images, the quantity the observation holds: a gradient, or a replayed update."""

    def __init__(self, model: nn.Module, obs: ObservedUpdate, loss_name: str, replay: bool, device) -> None:
        import copy

        self.net = copy.deepcopy(model).to(device)
        self.net.load_state_dict({k: v.to(device) for k, v in obs.params_at.items()}, strict=True)
        self.net.train(obs.train_mode)
        self.names = _parts(self.net)
        missing = [n for n in self.names if n not in obs.target]
        if missing:
            raise KeyError(f"the observation has no entry for parameter(s) {missing[:3]}")
        self.obs, self.loss, self.device = obs, _loss(loss_name), device
        self.params0 = {k: p.detach().clone().requires_grad_(True) for k, p in self.net.named_parameters()}
        self.buffers0 = {k: b.detach().clone() for k, b in self.net.named_buffers()}
        self.replay = obs.kind == "update" and obs.local_steps > 1 and replay
        if self.replay and obs.lr is None:
            raise ValueError("replaying a multi-step update needs its learning rate (ObservedUpdate.lr)")
        self.bn_names = _bn_names(self.net)
        keys = [(n + BN_MEAN, n + BN_VAR) for n in self.bn_names]
        self.has_stats = bool(keys) and not self.replay and all(m in obs.target and v in obs.target for m, v in keys)
        self.stats_target = (
            [(obs.target[m].to(device, torch.float32), obs.target[v].to(device, torch.float32)) for m, v in keys]
            if self.has_stats
            else []
        )

    def statistics(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The batch-norm layers' batch statistics of trial images ``x`` in the observation's mode."""
        buffers = {k: b.clone() for k, b in self.buffers0.items()} if self.obs.train_mode else self.buffers0
        capture = _BNCapture(self.net)
        try:
            _forward(self.net, self.params0, buffers, x)
            return capture.take()
        finally:
            capture.close()

    def target(self) -> list[torch.Tensor]:
        """The observation as the quantity matched: a gradient, minus an update read as one gradient, or the update."""
        sign = 1.0 if self.obs.kind == "gradient" or self.replay else -1.0
        return [sign * self.obs.target[k].detach().to(self.device, torch.float32) for k in self.names]

    def __call__(self, x: torch.Tensor, y: torch.Tensor, create_graph: bool) -> list[torch.Tensor]:
        obs = self.obs
        # Batch norm in train mode updates running statistics in place; fresh copies keep every trial identical.
        buffers = {k: b.clone() for k, b in self.buffers0.items()} if obs.train_mode else self.buffers0
        if not self.replay:
            return _gradient(self.net, self.params0, buffers, self.loss, x, y, create_graph)
        params = dict(self.params0)
        for s in range(obs.local_steps):
            i = _chunk(s, obs.num_images, obs.batch_size, x.device)
            grads = _gradient(self.net, params, buffers, self.loss, x[i], y[i], create_graph=True)
            params = {k: p - obs.lr * g for (k, p), g in zip(params.items(), grads)}
        return [params[k] - self.params0[k] for k in self.names]


def trial_quantity(
    model: nn.Module,
    obs: ObservedUpdate,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    replay: bool = True,
    loss: str | None = None,
) -> list[torch.Tensor]:
    """What ``obs`` would hold (per parameter, in ``model.named_parameters()`` order) had it come from ``(x, y)``:
    the gradient, or for a multi-step update with ``replay`` the replayed update ``theta_after - theta_before``.
    A check of the attack's forward model: on the true samples it reproduces the observation.
    """
    observer = _Observer(model, obs, loss or obs.loss, replay, x.device)
    return [t.detach() for t in observer(x, y, create_graph=False)]


def _jointly_invertible(observations: Sequence[ObservedUpdate], loss_name: str, replay: bool) -> bool:
    """Whether the observations can be optimised as one vectorised batch of independent problems: each is a gradient
    (or an update read as one), all at the same model state and mode, with the same loss and number of images.
    """
    first = observations[0]
    for o in observations:
        if o.kind == "update" and o.local_steps > 1 and replay:
            return False  # a replay: steps in sequence
        if o.num_images != first.num_images or o.loss != first.loss or o.train_mode != first.train_mode:
            return False
        if o is not first and (
            o.params_at.keys() != first.params_at.keys()
            or not all(torch.equal(o.params_at[k], first.params_at[k]) for k in first.params_at)
        ):
            return False
    return loss_name is not None


class _Problems:
    """``P`` independent inversion problems (each one observation and one random start) evaluated together.

    ``__call__(X, Y, create_graph)`` takes trial images ``X`` (P, n, C, H, W) and labels ``Y`` (P, n) and returns, per
    parameter, what each problem's observation would hold for its trial images, stacked (P, *shape), and, when
    ``stats``, each batch-norm layer's batch statistics ((P, C) means, (P, C) variances). Observations of single
    gradients at one model state are computed in one vectorised pass (``torch.func.vmap`` of per-problem gradients;
    in train mode batch norm then normalises each problem with its own images' statistics); any other observation (a
    replayed update) problem by problem.
    """

    def __init__(self, observers: list[_Observer], owner: list[int], vectorised: bool, stats: bool) -> None:
        import copy

        self.observers, self.owner, self.vectorised, self.stats = observers, owner, vectorised, stats
        targets = [o.target() for o in observers]
        self.targets = [torch.stack([targets[i][k] for i in owner]) for k in range(len(observers[0].names))]
        self.stats_targets = (
            [
                (
                    torch.stack([observers[i].stats_target[layer][0] for i in owner]),
                    torch.stack([observers[i].stats_target[layer][1] for i in owner]),
                )
                for layer in range(len(observers[0].stats_target))
            ]
            if stats
            else []
        )
        if vectorised:
            ob = observers[0]
            self.net, self.buffers = ob.net, ob.buffers0
            if ob.obs.train_mode:  # batch statistics without in-place running-statistics updates, as vmap needs
                self.net = copy.deepcopy(ob.net)
                torch.func.replace_all_batch_norm_modules_(self.net)
                self.buffers = {k: b.detach() for k, b in self.net.named_buffers()}

    def __call__(self, X: torch.Tensor, Y: torch.Tensor, create_graph: bool):
        if not self.vectorised:
            outs = [self.observers[i](X[p], Y[p], create_graph) for p, i in enumerate(self.owner)]
            quantities = [torch.stack([o[k] for o in outs]) for k in range(len(self.targets))]
            if not self.stats:
                return quantities, []
            per = [self.observers[i].statistics(X[p]) for p, i in enumerate(self.owner)]
            stats = [
                (torch.stack([q[layer][0] for q in per]), torch.stack([q[layer][1] for q in per]))
                for layer in range(len(per[0]))
            ]
            return quantities, stats
        ob = self.observers[0]
        params = {k: p.detach() for k, p in ob.params0.items()}
        capture = _BNCapture(self.net) if self.stats else None

        def one(x: torch.Tensor, y: torch.Tensor):
            def loss_of(ps: dict[str, torch.Tensor]):
                f, z = _forward(self.net, ps, self.buffers, x)
                return ob.loss(f, z, y), (capture.take() if capture is not None else [])

            return func_grad(loss_of, has_aux=True)(params)

        try:
            grads, stats = vmap(one)(X, Y)
        finally:
            if capture is not None:
                capture.close()
        return [grads[k] for k in ob.names], list(stats)
