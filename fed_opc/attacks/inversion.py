"""Gradient inversion: reconstruct forget images from what the server observed.

The attack is Inverting Gradients (Geiping et al., "Inverting Gradients -- How easy is it to break privacy in federated
learning?", NeurIPS 2020): find images whose gradient has the highest cosine similarity with the observed one, summed
over all parameters, plus a total-variation prior; Adam on the sign of the image gradient, learning rate 0.1 decayed
x0.1 at 3/8, 5/8 and 7/8 of the iterations, images clamped to the valid range at every step, a start close to the mean
colour, several restarts keeping the best gradient match. Labels are given or inferred from the last-layer bias
gradient as in iDLG (Zhao et al., "iDLG: Improved deep leakage from gradients", 2020; extended to a batch by reading
every negative entry). A multi-step local update is inverted by replaying its SGD steps differentiably from the model
state it started at, as Geiping et al. do for FedAvg updates (Section 6); it can also be treated as one gradient.

Three targets (``INVERSION_TARGETS``), each read from a ``ServerView``:
``global_model`` (gradients of the final unlearned model on forget batches), ``unlearning_update`` (the update the
requester sent while unlearning) and ``model_difference`` (the global model after minus before unlearning, read as a
negative, scaled gradient; cosine matching ignores the scale). :func:`observe_gradient` and :func:`observe_update`
simulate the client that produces an observation (they hold the images, as that client does); :func:`invert` and
:func:`invert_many` (all observations and restarts optimised as one batch of independent problems) see only the
observations; :func:`run_inversion` scores reconstructions against the true images and both flat baselines (each
image's own mean colour, and the dataset-mean colour). :func:`calibration` marks the attack's result on the original
model ``informative`` when it beats the own-mean flat image by ``INFORMATIVE_MARGIN_DB``; :func:`read_against` reads a
method's result against it. Optional stronger threat models: the gradient computed in train mode, and the batch's
batch-norm statistics known to the attacker (``bn_stats``; Huang et al., NeurIPS 2021).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap
from torch.func import grad as func_grad

from fed_opc.attacks.images import dataset_mean_psnr, match, own_mean_psnr, psnr, save_grid, ssim
from fed_opc.attacks.view import ObservedUpdate, ServerView
from fed_opc.rng import torch_rng
from fed_opc.train import OptimConfig, make_optimizer, train_loop

# ---------------------------------------------------------------------------------------------------------------------
# losses a forget batch can enter an observation through: (features, logits, labels) -> scalar


def _norm_term(h: torch.Tensor, squared: bool) -> torch.Tensor:
    sq = h.pow(2).sum(1)
    return sq.mean() if squared else sq.clamp_min(1e-30).sqrt().mean()


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "ce": lambda f, z, y: F.cross_entropy(z, y),
    "ascent": lambda f, z, y: -F.cross_entropy(z, y),
    "feature_norm": lambda f, z, y: _norm_term(f, False),
    "feature_norm_sq": lambda f, z, y: _norm_term(f, True),
    "logit_norm": lambda f, z, y: _norm_term(z, False),
    "logit_norm_sq": lambda f, z, y: _norm_term(z, True),
}
# Losses that read labels; for the others (OPC's contraction terms) labels are neither needed nor inferable.
LABELLED = frozenset({"ce", "ascent"})


def _loss(name: str) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    if name not in LOSSES:
        raise KeyError(f"unknown inversion loss {name!r}; valid: {', '.join(sorted(LOSSES))}")
    return LOSSES[name]


# ---------------------------------------------------------------------------------------------------------------------
# settings


@dataclass(frozen=True)
class Config:
    """Inverting Gradients settings; the defaults are the ones measured to work (DESIGN.md section 4).

    Attributes
    ----------
    iterations, restarts : optimisation steps per restart, and restarts (the best gradient match is kept).
    lr : Adam's learning rate (decayed x0.1 at 3/8, 5/8, 7/8 of ``iterations`` when ``decay``).
    tv : weight of the total-variation prior (1e-2, measured best on a trained batch-norm CNN; 1e-3 and 3e-2 lose
        0.5-0.9 dB there; 1e-3 suits untrained models).
    images : how many forget images to attack (observations are taken in order until this many images).
    batch_size : images reconstructed jointly from one model difference.
    signed : step on the sign of the image gradient (1-3 dB better than the raw gradient).
    init_std : standard deviation of the start around the mean colour, in normalised space.
    replay : invert a multi-step update by replaying its local steps (else as one gradient; about 2 dB worse).
    labels : ``infer`` from the last-layer bias gradient, or ``given`` (the observation must carry them).
    loss : override the loss named by the observation (``model_difference`` defaults to ``ce``).
    joint : optimise all observations and restarts as one batch of independent problems (same result, faster).
    bn_stats : weight of the batch-norm statistics term (0: off), for observations that carry their batch's
        batch-norm statistics (``observe_gradient(..., bn_stats=True)``): the mean over layers of the relative L2
        errors of the trial's per-channel means and variances (Yin et al., "See through gradients", CVPR 2021, use
        the same prior with running statistics).
    seed : for the random starts.

    """

    iterations: int = 2000
    restarts: int = 2
    lr: float = 0.1
    tv: float = 1e-2
    images: int = 4
    batch_size: int = 1
    signed: bool = True
    decay: bool = True
    init_std: float = 0.1
    replay: bool = True
    labels: str = "infer"
    loss: str | None = None
    joint: bool = True
    bn_stats: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.iterations, self.restarts, self.images, self.batch_size) < 1:
            raise ValueError("iterations, restarts, images and batch_size must be >= 1")
        if self.lr <= 0 or self.tv < 0 or self.init_std < 0 or self.bn_stats < 0:
            raise ValueError("lr must be > 0, tv, init_std and bn_stats >= 0")
        if self.labels not in ("infer", "given"):
            raise ValueError(f"labels must be 'infer' or 'given', got {self.labels!r}")
        if self.loss is not None:
            _loss(self.loss)

    @classmethod
    def from_scenario(cls, inv: object, seed: int = 0) -> Config:
        """From a scenario's ``attacks.inversion`` block (``images``, ``iterations``, ``restarts``, ``lr``, ``tv``,
        ``bn_stats``; ``tv: null`` keeps the default).
        """
        tv = getattr(inv, "tv", None)
        return cls(
            iterations=inv.iterations,
            restarts=inv.restarts,
            lr=inv.lr,
            tv=cls.tv if tv is None else tv,
            images=inv.images,
            bn_stats=getattr(inv, "bn_stats", 0.0),
            seed=seed,
        )


@dataclass(frozen=True)
class ImageSpace:
    """Shape and normalisation of model inputs: public facts about the model the attacker inverts."""

    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def of(cls, data: object) -> ImageSpace:
        """From an ``ArrayDataset``."""
        return cls(tuple(data.image_shape), tuple(data.mean), tuple(data.std))

    def _stats(self, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        m = torch.tensor(self.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        s = torch.tensor(self.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        return m, s

    def to01(self, x: torch.Tensor) -> torch.Tensor:
        """Map normalised model inputs (B, C, H, W) back to images in [0, 1] (not clamped)."""
        m, s = self._stats(x.device)
        return x * s + m

    def bounds(self, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """The valid range [0, 1] per channel in normalised space."""
        m, s = self._stats(device)
        return -m / s, (1 - m) / s


# ---------------------------------------------------------------------------------------------------------------------
# the functional model


def _parts(model: nn.Module) -> list[str]:
    names = [n for n, _ in model.named_parameters()]
    odd = [n for n in names if not n.startswith(("body.", "head."))]
    if odd:
        raise ValueError(f"inversion needs a FeatureModel (parameters under body. and head.), found {odd[:3]}")
    return names


def _forward(
    model: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, logits) of a FeatureModel with the given parameters (and buffers, for batch norm in train mode)."""

    def sub(prefix: str, d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in d.items() if k.startswith(prefix)}

    f = functional_call(model.body, sub("body.", params) | sub("body.", buffers), (x,))
    return f, functional_call(model.head, sub("head.", params), (f,))


def _chunk(step: int, n: int, batch_size: int | None, device: torch.device | str) -> torch.Tensor:
    """Positions used by local step ``step``: consecutive chunks of ``batch_size``, cycling over the ``n`` samples."""
    bs = n if batch_size is None else min(batch_size, n)
    return (step * bs + torch.arange(bs, device=device)) % n


def _gradient(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    loss: Callable,
    x: torch.Tensor,
    y: torch.Tensor,
    create_graph: bool,
) -> list[torch.Tensor]:
    f, z = _forward(model, params, buffers, x)
    grads = torch.autograd.grad(loss(f, z, y), list(params.values()), create_graph=create_graph, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params.values())]


# ---------------------------------------------------------------------------------------------------------------------
# what the server observes (simulates the client holding the images)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


BN_MEAN, BN_VAR = ".batch_mean", ".batch_var"
"""Suffixes of the observation entries holding a batch-norm layer's batch statistics (``<module name>`` + suffix)."""


def _bn_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class _BNCapture:
    """Collects, during a forward pass, the per-channel mean and (biased) variance of every batch-norm layer's input
    over the batch and the spatial positions, in forward order.
    """

    def __init__(self, model: nn.Module) -> None:
        self.stats: list[tuple[torch.Tensor, torch.Tensor]] = []
        mods = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.hooks = [m.register_forward_pre_hook(self._hook) for m in mods]

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        h = inputs[0]
        dims = [0] + list(range(2, h.ndim))
        self.stats.append((h.mean(dim=dims), h.var(dim=dims, unbiased=False)))

    def take(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out, self.stats = self.stats, []
        return out

    def close(self) -> None:
        for h in self.hooks:
            h.remove()


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


# ---------------------------------------------------------------------------------------------------------------------
# the attack


def infer_labels(bias_gradient: torch.Tensor, n: int) -> torch.Tensor:
    """Labels of ``n`` samples from the cross-entropy gradient of the last-layer bias (iDLG, extended to a batch).

    For cross-entropy, ``dL/db_c = mean_i (p_ic - [y_i = c])``: negative for the classes in the batch as long as their
    predicted mass is below their count. Every negative entry is a label (the ``n`` most negative if there are more);
    with fewer than ``n``, the remaining labels go one at a time to the class whose share of the negative mass is
    furthest above its count so far (a class's share estimates its count when predictions are spread thin).
    """
    g = bias_gradient.detach().double().cpu()
    neg = torch.nonzero(g < 0).flatten()
    if len(neg) == 0:
        neg = g.argmin().view(1)
    neg = neg[torch.argsort(g[neg])]  # most negative first
    if len(neg) >= n:
        return neg[:n].clone()
    mass = -g[neg].clamp_max(0)
    ideal = n * mass / mass.sum() if mass.sum() > 0 else torch.full((len(neg),), n / len(neg), dtype=torch.float64)
    counts = torch.ones(len(neg), dtype=torch.float64)
    for _ in range(n - len(neg)):
        counts[int(torch.argmax(ideal - counts))] += 1
    return torch.repeat_interleave(neg, counts.long())


def _bias_name(model: nn.Module) -> str:
    for n, p in model.named_parameters():
        if p is model.head.bias:
            return n
    raise ValueError("the model's head has no bias; iDLG label inference needs one")


def _ce_bias_gradient(obs: ObservedUpdate, name: str, loss: str) -> torch.Tensor:
    """The direction of the cross-entropy gradient of the head bias carried by an observation."""
    g = obs.target[name] if obs.kind == "gradient" else -obs.target[name]  # an SGD update is minus lr times gradients
    return -g if loss == "ascent" else g


def cosine_cost(trial: Sequence[torch.Tensor], target: Sequence[torch.Tensor]) -> torch.Tensor:
    """``1 - cos(trial, target)`` with both read as one vector over all parameters (0 best, 2 worst)."""
    dot = sum((a * b).sum() for a, b in zip(trial, target))
    na = sum(a.pow(2).sum() for a in trial)
    nb = sum(b.pow(2).sum() for b in target)
    # The tiny offsets keep a zero gradient (a model whose forget features are gone) finite instead of 0/0.
    return 1 - dot / ((na + 1e-30).sqrt() * (nb + 1e-30).sqrt())


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of horizontal plus vertical neighbours (Inverting Gradients' TV)."""
    return (x[..., :, 1:] - x[..., :, :-1]).abs().mean() + (x[..., 1:, :] - x[..., :-1, :]).abs().mean()


@dataclass(frozen=True, eq=False)
class Inversion:
    """Reconstructed images in [0, 1] (n, C, H, W) on CPU, the labels used, and each restart's final gradient match
    (``1 - cosine``; the kept restart has the lowest).
    """

    images: torch.Tensor
    labels: torch.Tensor
    costs: tuple[float, ...]


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


def _labels(obs: ObservedUpdate, net: nn.Module, cfg: Config, loss_name: str) -> torch.Tensor:
    """The labels the attack uses for ``obs``: none needed, given (public), or inferred from the head-bias gradient."""
    n = obs.num_images
    if loss_name not in LABELLED:
        return torch.zeros(n, dtype=torch.long)
    if cfg.labels == "given":
        if obs.labels is None:
            raise ValueError("labels='given' but the observation carries no labels")
        return obs.labels.detach().cpu().long()
    return infer_labels(_ce_bias_gradient(obs, _bias_name(net), loss_name), n)


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


def bn_costs(trial: Sequence[tuple[torch.Tensor, torch.Tensor]], target: Sequence[tuple[torch.Tensor, torch.Tensor]]):
    """Per problem, the mean over batch-norm layers of the relative L2 errors of the per-channel means plus those of
    the variances, for statistics stacked over problems ((P, C) each): shape (P,).
    """

    def rel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a - b).norm(dim=1) / (b.norm(dim=1) + 1e-12)

    return sum(rel(m, tm) + rel(v, tv) for (m, v), (tm, tv) in zip(trial, target)) / max(1, len(target))


def cosine_costs(trial: Sequence[torch.Tensor], target: Sequence[torch.Tensor]) -> torch.Tensor:
    """:func:`cosine_cost` of each problem, for per-parameter tensors stacked over problems (P, ...): shape (P,)."""
    dot = sum((a * b).flatten(1).sum(1) for a, b in zip(trial, target))
    na = sum(a.pow(2).flatten(1).sum(1) for a in trial)
    nb = sum(b.pow(2).flatten(1).sum(1) for b in target)
    return 1 - dot / ((na + 1e-30).sqrt() * (nb + 1e-30).sqrt())


def total_variations(x: torch.Tensor) -> torch.Tensor:
    """:func:`total_variation` of each problem's images, for images stacked over problems (P, n, C, H, W): (P,)."""
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
    return dx + dy


def invert(
    obs: ObservedUpdate,
    model: nn.Module,
    cfg: Config,
    space: ImageSpace,
    *,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> Inversion:
    """Reconstruct the images behind one observation.

    Parameters
    ----------
    obs : the observed gradient or update (with the model state it was computed at).
    model : a model of the observed architecture (a FeatureModel); its weights are replaced by ``obs.params_at`` in a
        copy.
    cfg : attack settings.
    space : image shape and normalisation.
    device : where to run.
    generator : for the random starts (on ``device``); default from ``cfg.seed``.

    """
    gen = generator if generator is not None else torch_rng(cfg.seed, "inversion", device=device)
    return invert_many([obs], model, cfg, space, device=device, generators=[gen])[0]


def invert_many(
    observations: Sequence[ObservedUpdate],
    model: nn.Module,
    cfg: Config,
    space: ImageSpace,
    *,
    device: torch.device | str = "cpu",
    generators: Sequence[torch.Generator],
) -> list[Inversion]:
    """Reconstruct the images behind each observation, optimising all of them and all their restarts as one batch of
    independent problems.

    The problems share nothing but the optimiser's loop: the objective is the sum of each problem's objective, and
    Adam on the sign of the gradient acts element by element, so each problem follows the path it would follow alone
    (up to floating-point rounding). One batched step is much cheaper than one step per problem, above all for
    gradients in eval mode at one model state, which are computed in one vectorised pass.

    Parameters
    ----------
    observations : the observed gradients or updates.
    model : a model of the observed architecture (a FeatureModel); its weights are replaced in copies.
    cfg : attack settings (``cfg.restarts`` random starts per observation; the best gradient match is kept).
    space : image shape and normalisation.
    device : where to run.
    generators : one per observation (on ``device``), for its random starts, drawn in restart order.

    Returns
    -------
    One :class:`Inversion` per observation, in order.

    """
    if len(generators) != len(observations):
        raise ValueError(f"{len(observations)} observation(s) but {len(generators)} generator(s)")
    if not observations:
        return []
    names = [cfg.loss or o.loss for o in observations]
    observers = [_Observer(model, o, ln, cfg.replay, device) for o, ln in zip(observations, names)]
    labels = [_labels(o, ob.net, cfg, ln) for o, ob, ln in zip(observations, observers, names)]
    vectorised = cfg.joint and len(set(names)) == 1 and _jointly_invertible(observations, names[0], cfg.replay)
    if cfg.joint and len({o.num_images for o in observations}) == 1:
        groups = [[i for i in range(len(observations)) for _ in range(cfg.restarts)]]
    else:  # one batch per observation (its restarts together); images of different counts cannot be stacked
        groups = [[i] * cfg.restarts for i in range(len(observations))]
    lo, hi = space.bounds(device)
    finals: dict[int, list[tuple[float, torch.Tensor]]] = {i: [] for i in range(len(observations))}
    starts = {
        i: [
            (cfg.init_std * torch.randn((o.num_images, *space.shape), generator=g, device=device)).clamp(lo, hi)
            for _ in range(cfg.restarts)
        ]
        for i, (o, g) in enumerate(zip(observations, generators))
    }
    for group in groups:
        stats = cfg.bn_stats > 0 and all(observers[i].has_stats for i in group)
        problems = _Problems(observers, group, vectorised, stats)
        taken = {i: 0 for i in set(group)}
        xs = []
        for i in group:
            xs.append(starts[i][taken[i]])
            taken[i] += 1
        x = torch.stack(xs).requires_grad_(True)
        y = torch.stack([labels[i] for i in group]).to(device)
        _optimise(problems, x, y, cfg, lo, hi)
        # Restarts are ranked by the gradient match alone, as in Inverting Gradients (the prior is not evidence).
        costs = cosine_costs([t.detach() for t in problems(x.detach(), y, False)[0]], problems.targets)
        for p, i in enumerate(group):
            finals[i].append((float(costs[p]), x[p].detach()))
    out = []
    for i in range(len(observations)):
        best = min(range(len(finals[i])), key=lambda r: finals[i][r][0])
        out.append(
            Inversion(
                images=space.to01(finals[i][best][1]).clamp(0, 1).cpu(),
                labels=labels[i],
                costs=tuple(c for c, _ in finals[i]),
            )
        )
    return out


def _optimise(problems: _Problems, x: torch.Tensor, y: torch.Tensor, cfg: Config, lo, hi) -> None:
    """Inverting Gradients' loop on the stacked trial images ``x`` (P, n, C, H, W), in place."""
    its = cfg.iterations
    opt = torch.optim.Adam([x], lr=cfg.lr)
    milestones = [int(its * 3 / 8), int(its * 5 / 8), int(its * 7 / 8)] if cfg.decay else []
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
    for it in range(its):
        quantities, stats = problems(x, y, True)
        objective = cosine_costs(quantities, problems.targets).sum()
        if problems.stats:
            objective = objective + cfg.bn_stats * bn_costs(stats, problems.stats_targets).sum()
        if cfg.tv > 0:
            objective = objective + cfg.tv * total_variations(x).sum()
        if not torch.isfinite(objective):
            raise FloatingPointError(f"non-finite inversion objective at iteration {it}")
        (gx,) = torch.autograd.grad(objective, x)
        x.grad = gx.sign() if cfg.signed else gx
        opt.step()
        sched.step()
        with torch.no_grad():
            x.copy_(torch.maximum(torch.minimum(x, hi), lo))


# ---------------------------------------------------------------------------------------------------------------------
# targets: ServerView -> observations to invert


def _first(observations: Sequence[ObservedUpdate], images: int, what: str) -> list[ObservedUpdate]:
    if not observations:
        raise ValueError(f"the ServerView holds no {what} to invert")
    out, total = [], 0
    for o in observations:
        if out and total + o.num_images > images:
            break
        out.append(o)
        total += o.num_images
    return out


def global_model_target(view: ServerView, cfg: Config) -> list[ObservedUpdate]:
    """Gradients of the final unlearned model on forget batches (``view.gradients``), up to ``cfg.images`` images."""
    return _first(view.gradients, cfg.images, "gradients of the unlearned model (ServerView.gradients)")


def unlearning_update_target(view: ServerView, cfg: Config) -> list[ObservedUpdate]:
    """The requester's unlearning update(s) (``view.updates``), up to ``cfg.images`` images."""
    return _first(view.updates, cfg.images, "unlearning updates (ServerView.updates)")


def model_difference_target(view: ServerView, cfg: Config) -> list[ObservedUpdate]:
    """The unlearned minus the original global model, read as one update of ``cfg.batch_size`` images at the
    original model (loss ``cfg.loss`` or ``ce``).
    """
    before = _state(view.original)
    after = dict(view.unlearned.named_parameters())
    names = _parts(view.original)
    return [
        ObservedUpdate(
            params_at=before,
            target={n: (after[n].detach() - before[n]).clone() for n in names},
            kind="update",
            num_images=cfg.batch_size,
            loss=cfg.loss or "ce",
        )
    ]


def run_inversion(
    view: ServerView,
    target: str,
    cfg: Config,
    truth: Sequence[torch.Tensor],
    space: ImageSpace,
    *,
    truth_labels: Sequence[torch.Tensor] | None = None,
    device: torch.device | str = "cpu",
    grid_path: str | None = None,
) -> dict[str, object]:
    """Invert the observations of ``target`` in ``view`` and score them against the true images.

    Parameters
    ----------
    view : what the server holds.
    target : a key of ``fed_opc.attacks.INVERSION_TARGETS``.
    cfg : attack settings.
    truth : ground truth for scoring, one tensor per observation inverted, images in [0, 1] (n_i, C, H, W): the images
        behind it (for ``model_difference``: every forget image, a pool the reconstructions are matched into).
    space : image shape and normalisation.
    truth_labels : the true labels (aligned with ``truth``), to score inferred labels.
    device : where to run.
    grid_path : where to save a PNG of the matched originals (top) and reconstructions (bottom).

    Returns
    -------
    ``{"psnr", "ssim", "baseline_psnr", "baseline_psnr_dataset_mean", "margin_db", "per_image": [{"observation",
    "truth_index", "psnr", "ssim", "baseline_psnr", "baseline_psnr_dataset_mean", "label", "cost"}, ...]}`` (means
    over reconstructed images; PSNR in dB; ``baseline_psnr`` is a flat image of each true image's own mean colour,
    ``baseline_psnr_dataset_mean`` one of the dataset-mean colour, ``margin_db = psnr - baseline_psnr``), plus
    ``"label_acc"`` when labels were inferred and ``truth_labels`` given.

    """
    from fed_opc.attacks import INVERSION_TARGETS

    if target not in INVERSION_TARGETS:
        raise KeyError(f"unknown inversion target {target!r}; valid: {', '.join(sorted(INVERSION_TARGETS))}")
    observations = INVERSION_TARGETS[target](view, cfg)
    if len(truth) < len(observations):
        raise ValueError(f"{len(observations)} observation(s) to invert but ground truth for {len(truth)}")
    rows: list[dict[str, object]] = []
    shown_truth, shown_rec, label_hits = [], [], []
    inversions = invert_many(
        observations,
        view.unlearned,
        cfg,
        space,
        device=device,
        generators=[
            torch_rng(cfg.seed, f"inversion_{target}", client=i, device=device) for i in range(len(observations))
        ],
    )
    for i, (obs, inv) in enumerate(zip(observations, inversions)):
        pool = truth[i].detach().float().cpu()
        assign = match(inv.images, pool)
        orig = pool[assign]
        p, s = psnr(inv.images, orig), ssim(inv.images, orig)
        own, data_mean = own_mean_psnr(orig), dataset_mean_psnr(orig, space.mean)
        for j in range(len(assign)):
            rows.append(
                {
                    "observation": i,
                    "truth_index": int(assign[j]),
                    "psnr": float(p[j]),
                    "ssim": float(s[j]),
                    "baseline_psnr": float(own[j]),
                    "baseline_psnr_dataset_mean": float(data_mean[j]),
                    "label": int(inv.labels[j]),
                    "cost": min(inv.costs),
                }
            )
        if truth_labels is not None and cfg.labels == "infer" and (cfg.loss or obs.loss) in LABELLED:
            label_hits += (inv.labels == truth_labels[i].cpu()[assign]).tolist()
        shown_truth.append(orig)
        shown_rec.append(inv.images)
    out: dict[str, object] = {
        "psnr": float(np.mean([r["psnr"] for r in rows])),
        "ssim": float(np.mean([r["ssim"] for r in rows])),
        "baseline_psnr": float(np.mean([r["baseline_psnr"] for r in rows])),
        "baseline_psnr_dataset_mean": float(np.mean([r["baseline_psnr_dataset_mean"] for r in rows])),
        "per_image": rows,
    }
    out["margin_db"] = out["psnr"] - out["baseline_psnr"]
    if label_hits:
        out["label_acc"] = float(np.mean(label_hits))
    if grid_path is not None:
        save_grid(grid_path, torch.cat(shown_truth), torch.cat(shown_rec))
    return out


# ---------------------------------------------------------------------------------------------------------------------
# calibration: can the attack invert the original model at all?

INFORMATIVE_MARGIN_DB = 2.0
"""How far (mean PSNR, dB) the attack must beat the own-mean flat baseline on the original model for a comparison of
unlearned models to say anything."""


def calibration(original: dict[str, object], margin_db: float = INFORMATIVE_MARGIN_DB) -> dict[str, object]:
    """Mark the attack's result on the original (pretrained) model as ``informative`` or not.

    The attack on the original model is the best case for every target: it observes the same forget images at the
    model the unlearning started from. If it does not beat the flat own-mean-colour image there by ``margin_db``, a
    low PSNR after unlearning shows nothing about unlearning: the comparison is uninformative, never "resisted".

    Parameters
    ----------
    original : a :func:`run_inversion` result (``psnr``, ``baseline_psnr``) on the original model.
    margin_db : the margin the mean PSNR must reach over the mean own-mean baseline.

    Returns
    -------
    ``original`` with ``margin_db`` (``psnr - baseline_psnr``) and ``informative`` (``margin_db >= margin``) set.

    """
    margin = float(original["psnr"]) - float(original["baseline_psnr"])
    return dict(original) | {"margin_db": margin, "informative": bool(margin >= margin_db)}


def read_against(result: dict[str, object], original: dict[str, object] | None, target: str) -> dict[str, object]:
    """A method's inversion result read against the calibration row (a :func:`calibration` output) of its run.

    Adds ``informative`` (the calibration's; absent when there is no calibration) and, for the ``global_model``
    target (the same attack on the same images as the calibration, only the model differs), ``vs_original_db`` =
    the method's mean PSNR minus the original model's (negative: less leaks than before unlearning).
    """
    out = dict(result)
    if original is None or "informative" not in original:
        return out
    out["informative"] = bool(original["informative"])
    if target == "global_model":
        out["vs_original_db"] = float(result["psnr"]) - float(original["psnr"])
    return out
