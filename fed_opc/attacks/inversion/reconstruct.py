"""The reconstruction: Inverting Gradients' objective (cosine gradient match, total variation, batch-norm
statistics) and its optimisation over restarts, all observations optimised as one batch of independent problems.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from fed_opc.attacks.images import match
from fed_opc.attacks.inversion.labels import _labels
from fed_opc.attacks.inversion.settings import Config, ImageSpace
from fed_opc.attacks.inversion.trial import _jointly_invertible, _Observer, _Problems
from fed_opc.attacks.view import ObservedUpdate
from fed_opc.rng import torch_rng


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
    """The attack's output: reconstructed images in [0, 1] (n, C, H, W) on CPU (``Config.combine`` of the restarts),
    the labels used, each restart's final gradient match (``1 - cosine``), and every restart's images (R, n, C, H, W),
    in the order of the best restart's (the one with the lowest match).
    """

    images: torch.Tensor
    labels: torch.Tensor
    costs: tuple[float, ...]
    restarts: torch.Tensor


def combine_restarts(restarts: torch.Tensor, costs: Sequence[float], how: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(the attack's images, the restarts aligned) from every restart's images in [0, 1] (R, n, C, H, W): each
    restart's images put in the order of the best restart's (lowest cost) by the assignment maximising PSNR, then
    ``mean`` (their pixel mean) or ``best`` (the best restart's images).
    """
    best = min(range(len(costs)), key=lambda r: costs[r])
    ref = restarts[best]
    aligned = torch.stack([r if len(r) == 1 else r[_order_like(r, ref)] for r in restarts])
    return (aligned.mean(0) if how == "mean" else ref), aligned


def _order_like(images: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """The permutation of ``images`` that puts, in each of ``ref``'s positions, the image assigned to it."""
    assign = match(ref, images)  # ref[i] <- images[assign[i]]
    return torch.as_tensor(assign, dtype=torch.long)


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
    cfg : attack settings (``cfg.restarts`` random starts per observation, combined as ``cfg.combine``).
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
        costs = tuple(c for c, _ in finals[i])
        each = torch.stack([space.to01(x).clamp(0, 1).cpu() for _, x in finals[i]])
        images, aligned = combine_restarts(each, costs, cfg.combine)
        out.append(Inversion(images=images, labels=labels[i], costs=costs, restarts=aligned))
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
