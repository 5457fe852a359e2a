"""A requesting client's local unlearning steps (the ``train.unlearn`` message), with the constraint modes.

The client holds its forget data (which never leaves it) and possibly remaining data of its own. It receives the
global model and, from the server, the aggregated retain update ``delta_r`` of other clients, then runs local steps of
one objective through the one training loop:

- ``opc``: OPC's loss, cross-entropy on its remaining data + ``lambda`` x mean ||h(x)|| on forget data (arXiv
  2507.07754);
- ``ga``: gradient ascent on the forget data; ``rl``: cross-entropy towards random other labels on the forget data
  (with CE on its remaining data).

Constraint modes against ``delta_r``:

- ``none`` (the server's ``sum``): plain steps;
- ``project``: at every step with gradient ``g`` (step ``theta <- theta - lr g``), if ``<g, delta_r> > 0`` the step
  would raise the retain loss to first order (``delta_r`` approximates a multiple of ``-grad L_retain``), so
  ``g <- g - (<g, delta_r> / ||delta_r||^2) delta_r``; otherwise ``g`` is kept;
- ``ball``: after every step the parameters are projected onto the L2 ball of radius ``epsilon`` around the retain
  reference ``theta + delta_r`` (as projected gradient ascent does, Halimi et al. 2022).
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, Literal, get_args, get_origin, get_type_hints

import numpy as np
import torch
from torch import nn

from fed_opc.losses import forget_cross_entropy, opc_loss, random_label_loss, random_other_labels
from fed_opc.train import Batch, OptimConfig, make_optimizer, paired_batches, predict, train_loop

Objective = Literal["opc", "ga", "rl"]
Constraint = Literal["none", "project", "ball"]
Start = Literal["global", "reference"]
Layer = Literal["penultimate", "logits"]


class SpecError(ValueError):
    """A ``train.unlearn`` message whose ``unlearn.*`` settings do not describe a valid ``LocalUnlearnSpec``."""


@dataclass(frozen=True)
class LocalUnlearnSpec:
    """What the server asks the requester to do; travels in the message's ConfigRecord as ``unlearn.<field>``.

    The step settings (``objective`` .. ``forget_batch_size``) have no defaults: the server's method config is the one
    place they come from (``strategies.federated.rounds.local_spec``). The remaining fields default to "off"; OPC's
    ``lambda_`` and ``layer`` are required when ``objective`` is ``opc``.
    """

    objective: Objective
    constraint: Constraint
    lr: float
    momentum: float
    epochs: float
    batch_size: int
    forget_batch_size: int
    lambda_: float | None = None  # opc only
    layer: Layer | None = None  # opc only
    squared: bool = False
    epsilon: float = 0.0  # ball only: the radius
    start: Start = "global"  # global | reference (theta + delta_r)
    stop_acc: float = -1.0  # no steps / stop once the forget accuracy is <= this (negative: never); see local_unlearn
    max_steps: int = 0  # 0: no cap
    use_retain: bool = True  # add cross-entropy on the requester's own remaining data

    def __post_init__(self) -> None:
        for name, allowed in _CHOICES.items():
            value = getattr(self, name)
            if value not in allowed and not (name == "layer" and value is None):
                raise SpecError(f"unlearn.{name}: expected one of {', '.join(allowed)}, got {value!r}")
        if self.objective == "opc" and (self.lambda_ is None or self.layer is None):
            raise SpecError("unlearn.lambda_ and unlearn.layer are required for objective opc")
        if self.constraint == "ball" and self.epsilon <= 0:
            raise SpecError(f"unlearn.epsilon: expected > 0 for constraint ball, got {self.epsilon}")

    def to_config(self) -> dict[str, Any]:
        """The ``unlearn.*`` entries of a ConfigRecord (a field left at None is not sent)."""
        return {f"unlearn.{k}": v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_config(cls, cfg: Any) -> LocalUnlearnSpec:
        """Parse what ``to_config`` wrote: an unknown ``unlearn.*`` key, a missing required one or a value of the
        wrong type is a ``SpecError`` naming the key (never a silent default or cast).
        """
        names = {f.name for f in fields(cls)}
        extra = sorted(k for k in cfg if str(k).startswith("unlearn.") and k[len("unlearn.") :] not in names)
        if extra:
            raise SpecError(f"{extra[0]}: unknown setting")
        kw = {}
        for f in fields(cls):
            key = f"unlearn.{f.name}"
            if key not in cfg:
                if f.default is MISSING:
                    raise SpecError(f"{key}: missing")
                continue
            kw[f.name] = _typed(key, cfg[key], _HINTS[f.name])
        return cls(**kw)


_HINTS = get_type_hints(LocalUnlearnSpec)


_CHOICES = {"objective": get_args(Objective), "constraint": get_args(Constraint), "start": get_args(Start),
            "layer": get_args(Layer)}  # fmt: skip


def _base_types(hint: Any) -> set[type]:
    """The plain types a field annotation admits (``Literal["a"]`` -> str; ``float | None`` -> float)."""
    if get_origin(hint) is Literal:
        return {type(a) for a in get_args(hint)}
    args = [a for a in get_args(hint) if a is not type(None)]
    return set().union(*(_base_types(a) for a in args)) if args else {hint}


def _typed(key: str, value: Any, hint: Any) -> Any:
    """``value`` as the field type ``hint`` wants it: ints are accepted for floats, nothing else is converted."""
    base = _base_types(hint)
    if bool in base:
        ok = isinstance(value, bool)
    elif float in base:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif int in base:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise SpecError(f"{key}: expected {'/'.join(sorted(t.__name__ for t in base))}, got {value!r}")
    return value


@dataclass
class LocalUnlearnResult:
    """What :func:`local_unlearn` returns: the requester's model state (CPU tensors), the metrics it reports to the
    server, and per step the inner product of its gradient with ``delta_r`` (after the projection under the
    ``project`` constraint; empty without ``delta_r``).
    """

    state: dict[str, torch.Tensor]
    metrics: dict[str, float | int]
    inner_products: list[float]


def _param_deltas(model: nn.Module, delta: dict[str, torch.Tensor], device) -> list[tuple[nn.Parameter, torch.Tensor]]:
    return [(p, delta[name].to(device=device, dtype=p.dtype)) for name, p in model.named_parameters() if name in delta]


def local_unlearn(
    model: nn.Module,
    retain_data,
    retain_idx: np.ndarray,
    forget_data,
    forget_idx: np.ndarray,
    spec: LocalUnlearnSpec,
    *,
    delta_r: dict[str, torch.Tensor] | None,
    num_classes: int,
    rng: np.random.Generator,
    device: torch.device | str = "cpu",
) -> LocalUnlearnResult:
    """Run the requester's local unlearning steps on ``model`` (modified in place) and report what happened.

    ``retain_data`` should be a ``GuardedDataset`` that forbids the forget indices; ``forget_data`` is the explicit
    view that may read them. ``delta_r`` (parameter name -> tensor) is required by ``project``, ``ball`` and
    ``start: reference``.
    """
    if spec.objective not in ("opc", "ga", "rl"):
        raise ValueError(f"unknown local objective {spec.objective!r}; valid: opc, ga, rl")
    if spec.constraint not in ("none", "project", "ball"):
        raise ValueError(f"unknown constraint {spec.constraint!r}; valid: none, project, ball")
    needs_delta = spec.constraint in ("project", "ball") or spec.start == "reference"
    if needs_delta and delta_r is None:
        raise ValueError(f"constraint {spec.constraint} / start {spec.start} needs the retain update")
    model.to(device)
    if spec.start == "reference":
        with torch.no_grad():
            for name, t in model.state_dict().items():
                if name in delta_r and t.is_floating_point():
                    t.add_(delta_r[name].to(device=device, dtype=t.dtype))
    pairs = _param_deltas(model, delta_r, device) if delta_r is not None else []
    dr_sq = float(sum((d * d).sum() for _, d in pairs)) if pairs else 0.0
    center: list[torch.Tensor] = []  # the retain reference theta + delta_r, for "ball"
    if spec.constraint == "ball":
        with torch.no_grad():
            # with start "reference" the parameters already sit at theta + delta_r
            center = [p.detach().clone() if spec.start == "reference" else p.detach() + d for p, d in pairs]

    inner: list[float] = []
    conflicts = [0]

    def project(m: nn.Module) -> None:
        dot = sum(float((p.grad * d).sum()) for p, d in pairs if p.grad is not None)
        if dot > 0 and dr_sq > 0:
            coef = dot / dr_sq
            for p, d in pairs:
                if p.grad is not None:
                    p.grad.sub_(coef * d)
            conflicts[0] += 1
            dot = sum(float((p.grad * d).sum()) for p, d in pairs if p.grad is not None)
        inner.append(dot)

    def record(m: nn.Module) -> None:
        inner.append(sum(float((p.grad * d).sum()) for p, d in pairs if p.grad is not None))

    def ball(m: nn.Module) -> None:
        dist = float(torch.sqrt(sum(((p - c) ** 2).sum() for (p, _), c in zip(pairs, center))))
        if dist > spec.epsilon:
            scale = spec.epsilon / dist
            for (p, _), c in zip(pairs, center):
                p.copy_(c + (p - c) * scale)

    forget_idx = np.asarray(forget_idx, dtype=np.int64)
    acc_before = None
    if spec.stop_acc >= 0:
        # already at or below the target: nothing to unlearn this round
        logits0 = predict(model, forget_data, forget_idx[:512], device=device)
        acc_before = float((logits0.argmax(1) == torch.from_numpy(forget_data.labels[forget_idx[:512]])).float().mean())
    last_acc = [1.0 if acc_before is None else acc_before]
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(rng.integers(0, 2**63 - 1)))

    def loss_fn(m: nn.Module, batch: Batch) -> torch.Tensor:
        if spec.objective == "opc":
            loss = opc_loss(m, batch, lambda_=spec.lambda_, layer=spec.layer, squared=spec.squared)
        elif spec.objective == "ga":
            loss = -forget_cross_entropy(m, batch)
            if "x" in batch:
                loss = loss + torch.nn.functional.cross_entropy(m(batch["x"]), batch["y"])
        else:
            batch = dict(batch)
            batch["y_random"] = random_other_labels(batch["y_forget"].cpu(), num_classes, gen).to(
                batch["y_forget"].device
            )
            loss = random_label_loss(m, batch)
        if spec.stop_acc >= 0:
            with torch.no_grad():
                acc = float((m(batch["x_forget"]).argmax(1) == batch["y_forget"]).float().mean())
            # a moving average of batch accuracies: one small batch is too noisy to stop on
            last_acc[0] = 0.7 * last_acc[0] + 0.3 * acc
        return loss

    keep_retain = spec.objective != "ga" and spec.use_retain
    retain_idx = np.asarray(retain_idx, dtype=np.int64) if keep_retain else np.zeros(0, dtype=np.int64)
    batches = paired_batches(
        retain_data,
        retain_idx,
        forget_data,
        forget_idx,
        batch_size=spec.batch_size,
        forget_batch_size=spec.forget_batch_size,
        epochs=spec.epochs,
        rng=rng,
        device=device,
    )
    opt = make_optimizer(model.parameters(), OptimConfig(lr=spec.lr, momentum=spec.momentum))

    def stop(stats) -> bool:
        return (spec.stop_acc >= 0 and last_acc[0] <= spec.stop_acc) or (0 < spec.max_steps <= stats.steps)

    if acc_before is not None and acc_before <= spec.stop_acc:
        batches = iter(())
    stats = train_loop(
        model,
        loss_fn,
        batches,
        opt,
        grad_transform=project if spec.constraint == "project" else (record if pairs else None),
        after_step=ball if spec.constraint == "ball" else None,
        should_stop=stop,
    )
    feats = predict(model, forget_data, forget_idx[:512], device=device, what="features")
    logits = model.head(feats.to(device)).cpu() if len(feats) else torch.zeros(0)
    forget_y = torch.from_numpy(forget_data.labels[forget_idx[:512]])
    metrics: dict[str, float | int] = {
        "samples": int(stats.samples),
        "steps": int(stats.steps),
        "forget_norm": float(feats.norm(dim=1).mean()) if len(feats) else 0.0,
        "forget_acc": float((logits.argmax(1) == forget_y).float().mean()) if len(feats) else 0.0,
        "conflicts": int(conflicts[0]),
        "max_inner": float(max(inner)) if inner else 0.0,
        "loss": float(stats.mean_loss) if stats.steps else 0.0,
        "forget_acc_before": float(acc_before) if acc_before is not None else -1.0,
        "stop_acc": float(spec.stop_acc),
    }
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return LocalUnlearnResult(state, metrics, inner)
