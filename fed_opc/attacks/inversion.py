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
simulate the client that produces an observation (they hold the images, as that client does); :func:`invert` sees only
the observation; :func:`run_inversion` scores reconstructions against the true images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from fed_opc.attacks.images import baseline_psnr, match, psnr, save_grid, ssim
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
    tv : weight of the total-variation prior (1e-3; 1e-2 suits trained models).
    images : how many forget images to attack (observations are taken in order until this many images).
    batch_size : images reconstructed jointly from one model difference.
    signed : step on the sign of the image gradient (1-3 dB better than the raw gradient).
    init_std : standard deviation of the start around the mean colour, in normalised space.
    replay : invert a multi-step update by replaying its local steps (else as one gradient; about 2 dB worse).
    labels : ``infer`` from the last-layer bias gradient, or ``given`` (the observation must carry them).
    loss : override the loss named by the observation (``model_difference`` defaults to ``ce``).
    seed : for the random starts.

    """

    iterations: int = 2000
    restarts: int = 2
    lr: float = 0.1
    tv: float = 1e-3
    images: int = 4
    batch_size: int = 1
    signed: bool = True
    decay: bool = True
    init_std: float = 0.1
    replay: bool = True
    labels: str = "infer"
    loss: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.iterations, self.restarts, self.images, self.batch_size) < 1:
            raise ValueError("iterations, restarts, images and batch_size must be >= 1")
        if self.lr <= 0 or self.tv < 0 or self.init_std < 0:
            raise ValueError("lr must be > 0, tv and init_std >= 0")
        if self.labels not in ("infer", "given"):
            raise ValueError(f"labels must be 'infer' or 'given', got {self.labels!r}")
        if self.loss is not None:
            _loss(self.loss)

    @classmethod
    def from_scenario(cls, inv: object, seed: int = 0) -> Config:
        """From a scenario's ``attacks.inversion`` block (``images``, ``iterations``, ``restarts``, ``lr``, ``tv``;
        ``tv: null`` keeps the default).
        """
        tv = getattr(inv, "tv", None)
        return cls(
            iterations=inv.iterations,
            restarts=inv.restarts,
            lr=inv.lr,
            tv=cls.tv if tv is None else tv,
            images=inv.images,
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


def observe_gradient(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, loss: str = "ce", labels_public: bool = False
) -> ObservedUpdate:
    """The gradient a client holding ``(x, y)`` would send for ``model`` (eval mode), as an observation."""
    names = _parts(model)
    params = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
    buffers = {n: b for n, b in model.named_buffers()}
    was = model.training
    model.eval()
    try:
        grads = _gradient(model, params, buffers, _loss(loss), x, y, create_graph=False)
    finally:
        model.train(was)
    return ObservedUpdate(
        params_at=_state(model),
        target={n: g.detach() for n, g in zip(names, grads)},
        kind="gradient",
        num_images=len(x),
        loss=loss,
        labels=y.detach().clone() if labels_public else None,
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
) -> ObservedUpdate:
    """The update ``theta_after - theta_before`` of ``steps`` plain SGD steps on ``(x, y)`` from ``model``'s state.

    Runs the project's training loop on a copy (train mode); step ``s`` uses consecutive chunk ``s`` of
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

    train_loop(work, objective, batches, make_optimizer(work.parameters(), OptimConfig(lr=lr)))
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
        train_mode=True,
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
    loss_name = cfg.loss or obs.loss
    observer = _Observer(model, obs, loss_name, cfg.replay, device)
    target = observer.target()
    n = obs.num_images
    if loss_name not in LABELLED:
        labels = torch.zeros(n, dtype=torch.long)
    elif cfg.labels == "given":
        if obs.labels is None:
            raise ValueError("labels='given' but the observation carries no labels")
        labels = obs.labels.detach().cpu().long()
    else:
        labels = infer_labels(_ce_bias_gradient(obs, _bias_name(observer.net), loss_name), n)
    y = labels.to(device)

    lo, hi = space.bounds(device)
    gen = generator if generator is not None else torch_rng(cfg.seed, "inversion", device=device)
    its = cfg.iterations
    best, best_cost, costs = None, float("inf"), []
    for _ in range(cfg.restarts):
        x = (cfg.init_std * torch.randn((n, *space.shape), generator=gen, device=device)).clamp(lo, hi)
        x.requires_grad_(True)
        opt = torch.optim.Adam([x], lr=cfg.lr)
        milestones = [int(its * 3 / 8), int(its * 5 / 8), int(its * 7 / 8)] if cfg.decay else []
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
        for it in range(its):
            objective = cosine_cost(observer(x, y, True), target)
            if cfg.tv > 0:
                objective = objective + cfg.tv * total_variation(x)
            if not torch.isfinite(objective):
                raise FloatingPointError(f"non-finite inversion objective at iteration {it}")
            (gx,) = torch.autograd.grad(objective, x)
            x.grad = gx.sign() if cfg.signed else gx
            opt.step()
            sched.step()
            with torch.no_grad():
                x.copy_(torch.maximum(torch.minimum(x, hi), lo))
        # Restarts are ranked by the gradient match alone, as in Inverting Gradients (the prior is not evidence).
        cost = float(cosine_cost([t.detach() for t in observer(x.detach(), y, False)], target))
        costs.append(cost)
        if best is None or cost < best_cost:
            best, best_cost = x.detach().clone(), cost
    return Inversion(images=space.to01(best).clamp(0, 1).cpu(), labels=labels, costs=tuple(costs))


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
    ``{"psnr", "ssim", "baseline_psnr", "per_image": [{"observation", "truth_index", "psnr", "ssim", "baseline_psnr",
    "label", "cost"}, ...]}`` (means over reconstructed images; PSNR in dB; the baseline is a flat dataset-mean-colour
    image against the same true images), plus ``"label_acc"`` when labels were inferred and ``truth_labels`` given.

    """
    from fed_opc.attacks import INVERSION_TARGETS

    if target not in INVERSION_TARGETS:
        raise KeyError(f"unknown inversion target {target!r}; valid: {', '.join(sorted(INVERSION_TARGETS))}")
    observations = INVERSION_TARGETS[target](view, cfg)
    if len(truth) < len(observations):
        raise ValueError(f"{len(observations)} observation(s) to invert but ground truth for {len(truth)}")
    rows: list[dict[str, object]] = []
    shown_truth, shown_rec, label_hits = [], [], []
    for i, obs in enumerate(observations):
        inv = invert(
            obs,
            view.unlearned,
            cfg,
            space,
            device=device,
            generator=torch_rng(cfg.seed, f"inversion_{target}", client=i, device=device),
        )
        pool = truth[i].detach().float().cpu()
        assign = match(inv.images, pool)
        orig = pool[assign]
        p, s, b = psnr(inv.images, orig), ssim(inv.images, orig), baseline_psnr(orig, space.mean)
        for j in range(len(assign)):
            rows.append(
                {
                    "observation": i,
                    "truth_index": int(assign[j]),
                    "psnr": float(p[j]),
                    "ssim": float(s[j]),
                    "baseline_psnr": float(b[j]),
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
        "per_image": rows,
    }
    if label_hits:
        out["label_acc"] = float(np.mean(label_hits))
    if grid_path is not None:
        save_grid(grid_path, torch.cat(shown_truth), torch.cat(shown_rec))
    return out
