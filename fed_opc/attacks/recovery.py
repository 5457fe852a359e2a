"""Performance-recovery attacks: their common output, scoring against ground truth, and ``run_recovery``.

A recovery attack asks whether the forgotten knowledge is still in the unlearned model, read out by an attacker that
holds a ``ServerView``. Each attack is one function ``attack(view, cfg, device) -> RecoveryOutput`` registered in
``fed_opc.attacks.RECOVERY``; the output is a predictor, and only :func:`score` compares it with the forget set.

The training-free read-outs (feature mapping and head re-fit) follow the linear-probe methodology of Alain & Bengio,
"Understanding intermediate layers using linear classifier probes" (ICLR workshop 2017), applied to unlearning as in
the One-Point-Contraction paper (arXiv 2507.07754); the k-shot attacks model an attacker with a few labelled examples,
as in the relearning attacks of Lynch et al., "Eight methods to evaluate robust unlearning in LLMs" (2024) and
Hu et al., "Jogging the memory of unlearned models through targeted relearning attacks" (2024). The constant-predictor
floor reads a model that maps every forget sample to one point correctly: no read-out of it can do better.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fed_opc.attacks.view import AttackerSamples, SampleSet, ServerView
from fed_opc.rng import numpy_rng
from fed_opc.train import predict

log = logging.getLogger(__name__)

# Inputs (normalised images, (B, C, H, W), on the attack's device) -> class scores (B, num_classes). A score of -inf
# marks a class the attacker rules out; the scores' softmax is read as the attacker's predictive distribution.
Predictor = Callable[[torch.Tensor], torch.Tensor]


class NotApplicable(Exception):
    """The attack does not apply to this view (e.g. a forget-only probe with fewer than two forgotten classes)."""


@dataclass(frozen=True)
class Config:
    """Settings shared by the recovery attacks.

    Attributes
    ----------
    k_shot : labelled samples per class the k-shot attacks take from the attacker's samples (forget and retain pools).
    relearn_steps : cumulative fine-tuning step budgets at which ``relearn`` is scored.
    relearn_lr, relearn_momentum, relearn_batch_size : SGD settings of ``relearn``.
    ridge : ``fm``'s ridge penalty relative to the mean eigenvalue of the unlearned calibration features' covariance,
        so the map is invariant to the features' scale (contracted features have norms of 0.005-0.2).
    logistic_c : inverse L2 strength of the logistic heads (``hr``, ``probe``, ``forget_probe``), on standardised
        features.
    seed : for the k-shot sample choice and relearning's batch order.

    """

    k_shot: int = 10
    relearn_steps: tuple[int, ...] = (1, 5, 20)
    relearn_lr: float = 0.01
    relearn_momentum: float = 0.9
    relearn_batch_size: int = 32
    ridge: float = 1e-4
    logistic_c: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.k_shot < 1:
            raise ValueError(f"k_shot must be >= 1, got {self.k_shot}")
        if not self.relearn_steps or min(self.relearn_steps) < 1:
            raise ValueError(f"relearn_steps must be positive step counts, got {self.relearn_steps}")
        if self.ridge <= 0 or self.logistic_c <= 0 or self.relearn_lr <= 0:
            raise ValueError("ridge, logistic_c and relearn_lr must be > 0")


@dataclass(frozen=True, eq=False)
class RecoveryOutput:
    """What a recovery attack produces: predictors, never scores.

    Attributes
    ----------
    predict : the attacker's classifier of forget inputs.
    restrict_to : classes for a second read-out with the argmax limited to them (``UA_restricted``); empty for none.
    among : set for a classifier that only chooses among these classes (``forget_probe``): scored as ``acc`` and
        ``chance`` on the forget samples of these classes instead of ``UA``.
    stages : ``(cumulative steps, predictor)`` per budget (``relearn``); ``predict`` is the last one.
    on_features : the same classifier as a function of the unlearned model's penultimate features (eval mode), for
        the read-outs of frozen features (``fm``, ``hr``, ``probe``, ``prototype``): :func:`run_recovery` then
        scores them all on one feature pass over the forget set instead of one pass each.

    """

    predict: Predictor
    restrict_to: tuple[int, ...] = ()
    among: tuple[int, ...] = ()
    stages: tuple[tuple[int, Predictor], ...] = ()
    on_features: Callable[[torch.Tensor], torch.Tensor] | None = None


def frozen_readout(unlearned: nn.Module, head: Callable[[torch.Tensor], torch.Tensor], **kw) -> RecoveryOutput:
    """The output of a read-out ``head`` of the unlearned model's frozen penultimate features."""
    return RecoveryOutput(predict=eval_call(unlearned, lambda x: head(unlearned.features(x))), on_features=head, **kw)


# ---------------------------------------------------------------------------------------------------------------------
# helpers shared by the attacks


def placed(model: nn.Module, device: torch.device | str) -> nn.Module:
    """``model`` itself when it lives on ``device``, else a copy moved there (the view's models are never changed)."""
    p = next(model.parameters(), None)
    if p is not None and p.device == torch.device(device):
        return model
    return copy.deepcopy(model).to(device)


def features_of(model: nn.Module, samples: SampleSet, device: torch.device | str) -> torch.Tensor:
    """Penultimate features (N, D) of ``samples`` on CPU, in eval mode."""
    return predict(model, samples.data, samples.idx, device=device, what="features")


def calibration_features(view: ServerView, which: str, device: torch.device | str) -> torch.Tensor:
    """The ``original`` or ``unlearned`` model's penultimate features of ``view.calibration``, computed once per view
    (:meth:`ServerView.calibration_features`) and shared by the attacks that read them.
    """
    return view.calibration_features(which, lambda model, samples: features_of(placed(model, device), samples, device))


def eval_call(model: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]) -> Predictor:
    """A predictor that runs ``fn`` with ``model`` in eval mode and without gradients, restoring the mode after."""

    def run(x: torch.Tensor) -> torch.Tensor:
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                return fn(x)
        finally:
            model.train(was)

    return run


def per_class(data: object, idx: np.ndarray, k: int, rng: np.random.Generator, classes: Sequence[int] | None = None):
    """Up to ``k`` indices of each class (of ``classes``, default all present), chosen at random; sorted by class."""
    idx = np.asarray(idx, dtype=np.int64)
    idx = idx[rng.permutation(len(idx))]
    labels = np.asarray(data.labels)[idx]
    wanted = sorted(set(labels.tolist())) if classes is None else list(classes)
    return np.concatenate([idx[labels == c][:k] for c in wanted] + [np.zeros(0, dtype=np.int64)])


def kshot_samples(view: ServerView, cfg: Config) -> SampleSet:
    """The attacker's labelled k-shot set: ``k_shot`` per class from its forget-like pool plus as many from its retain
    pool (so a class present in both pools gets up to ``2 k_shot``).
    """
    aux = require_aux(view)
    rng = numpy_rng(cfg.seed, "attack_kshot")
    idx = np.concatenate(
        [per_class(aux.data, aux.forget_idx, cfg.k_shot, rng), per_class(aux.data, aux.retain_idx, cfg.k_shot, rng)]
    )
    if len(idx) == 0:
        raise ValueError("the attacker's labelled samples (ServerView.aux) are empty")
    return SampleSet(aux.data, idx)


def require_aux(view: ServerView) -> AttackerSamples:
    """The attacker's labelled samples of ``view``; ``ValueError`` when it holds none (the k-shot attacks need them)."""
    if view.aux is None:
        raise ValueError("this attack needs the attacker's labelled samples (ServerView.aux), and the view has none")
    return view.aux


def fit_logistic(
    feats: torch.Tensor, targets: np.ndarray, num_classes: int, c: float
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Fit a multinomial logistic regression on standardised features; return features -> log-probabilities.

    Classes absent from ``targets`` get -inf. With a single target class the fit is the constant predictor of it.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    targets = np.asarray(targets, dtype=np.int64)
    present = np.unique(targets)
    if len(present) == 1:
        only = int(present[0])

        def constant(f: torch.Tensor) -> torch.Tensor:
            out = torch.full((f.shape[0], num_classes), -torch.inf)
            out[:, only] = 0.0
            return out

        return constant
    x = feats.double().cpu().numpy()
    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(C=c, max_iter=2000).fit(scaler.transform(x), targets)
    cols = torch.as_tensor(clf.classes_, dtype=torch.long)

    def run(f: torch.Tensor) -> torch.Tensor:
        logp = clf.predict_log_proba(scaler.transform(f.double().cpu().numpy()))
        out = torch.full((f.shape[0], num_classes), -torch.inf, dtype=torch.float64)
        out[:, cols] = torch.from_numpy(logp)
        return out.float()

    return run


# ---------------------------------------------------------------------------------------------------------------------
# scoring (ground truth enters here only)


def floor_ua(labels: np.ndarray) -> float:
    """The constant-predictor floor: 1 - the largest class share among ``labels`` (no map of all samples to one point
    scores a lower UA).
    """
    labels = np.asarray(labels)
    if len(labels) == 0:
        raise ValueError("floor_ua of an empty forget set")
    return float(1.0 - np.bincount(labels).max() / len(labels))


MEASURABLE_MIN_RANGE = 0.15


def normalised_recovery(ua_attack: float, floor_ua_: float, acc_original: float) -> float:
    """``(acc_attack - acc_floor) / (acc_original - acc_floor)`` with ``acc_attack = 1 - ua_attack`` and
    ``acc_floor = 1 - floor_ua_``: 0 when the attack reads no more than a constant predictor (deep forgetting), 1 when
    it reads back everything the original model knew (shallow). Not clipped: below 0 the attack does worse than the
    constant predictor, above 1 better than the original model. Raises ``ValueError`` when the range is not positive.
    """
    span = float(acc_original) - (1.0 - float(floor_ua_))
    if span <= 0.0:
        raise ValueError(f"no range between the floor and the original model ({span:+.4f}): depth is not measurable")
    return ((1.0 - float(ua_attack)) - (1.0 - float(floor_ua_))) / span


def is_measurable(floor_ua_: float, acc_original: float, min_range: float = MEASURABLE_MIN_RANGE) -> bool:
    """Whether the original model's forget accuracy is at least ``min_range`` above the constant-predictor floor's
    accuracy; below it a normalised recovery divides by noise (e.g. one forgotten class: the floor is 100% accuracy).
    """
    return float(acc_original) - (1.0 - float(floor_ua_)) >= min_range


def add_normalised_recovery(block: dict[str, object], acc_original: float) -> dict[str, object]:
    """Add depth to a ``run_recovery`` block, in place: ``acc_original``, ``measurable`` and, when measurable, per
    UA attack ``recovery`` (and ``recovery_steps`` beside ``UA_steps``). Returns the block.
    """
    floor = float(block["floor_UA"])
    block["acc_original"] = float(acc_original)
    block["measurable"] = is_measurable(floor, acc_original)
    if not block["measurable"]:
        return block
    for entry in block.values():
        if isinstance(entry, dict) and "UA" in entry:
            entry["recovery"] = normalised_recovery(entry["UA"], floor, acc_original)
            if "UA_steps" in entry:
                entry["recovery_steps"] = [normalised_recovery(u, floor, acc_original) for u in entry["UA_steps"]]
    return block


SCORE_BATCH = 512  # forget samples per forward pass when scoring (also the chunk of ``features_of``)


def scores_on(
    predictor: Predictor, forget: SampleSet, device: torch.device | str, batch_size: int = SCORE_BATCH
) -> torch.Tensor:
    """The predictor's scores (N, num_classes) on every forget sample, on CPU."""
    out = []
    for start in range(0, len(forget), batch_size):
        x, _ = forget.data.tensors(forget.idx[start : start + batch_size], device)
        out.append(predictor(x).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def scores_from_features(head: Callable[[torch.Tensor], torch.Tensor], feats: torch.Tensor, device) -> torch.Tensor:
    """A read-out's scores from precomputed features, chunk by chunk as :func:`scores_on` feeds images: the same
    numbers as running the model on the images (the features of ``features_of`` come in the same chunks).
    """
    out = [head(feats[i : i + SCORE_BATCH].to(device)).float().cpu() for i in range(0, len(feats), SCORE_BATCH)]
    return torch.cat(out)


def mean_entropy(scores: torch.Tensor) -> float:
    """Mean Shannon entropy (nats) of softmax(scores) per row; -inf scores have probability 0."""
    p = torch.softmax(scores.double(), dim=1)
    return float(torch.special.entr(p).sum(1).mean())


def _ua(scores: torch.Tensor, labels: torch.Tensor, classes: Sequence[int] | None = None) -> float:
    if classes is not None:
        keep = torch.full_like(scores, -torch.inf)
        cols = torch.as_tensor(list(classes), dtype=torch.long)
        keep[:, cols] = scores[:, cols]
        scores = keep
    return float((scores.argmax(1) != labels).double().mean())


def score(
    output: RecoveryOutput,
    forget: SampleSet,
    *,
    device: torch.device | str = "cpu",
    features: Callable[[], torch.Tensor] | None = None,
) -> dict[str, object]:
    """Score an attack's output on the forget set (ground truth).

    ``features``: gives the unlearned model's penultimate features of ``forget`` (computed once, shared by the
    read-outs that have ``on_features``); without it every read-out runs the model on the forget images.

    Returns
    -------
    For a UA attack: ``{"UA", "floor_UA", "entropy"}``, plus ``"UA_restricted"`` when ``output.restrict_to`` names
    two or more classes, plus ``"steps"`` and ``"UA_steps"`` (one UA per budget) for a staged attack. For an
    ``among`` attack: ``{"acc", "chance", "entropy"}``, on the forget samples of those classes. Fractions in [0, 1];
    entropy in nats.

    """
    labels = torch.from_numpy(forget.labels)
    if output.among:
        among = list(output.among)
        keep = np.isin(forget.labels, among)
        if not keep.any():
            raise NotApplicable("no forget sample belongs to the probed classes")
        sub = SampleSet(forget.data, forget.idx[keep])
        s = scores_on(output.predict, sub, device)
        return {
            "acc": 1.0 - _ua(s, torch.from_numpy(sub.labels), among),
            "chance": 1.0 / len(among),
            "entropy": mean_entropy(s),
        }
    if output.on_features is not None and features is not None:
        s = scores_from_features(output.on_features, features(), device)
    else:
        s = scores_on(output.predict, forget, device)
    out: dict[str, object] = {"UA": _ua(s, labels), "floor_UA": floor_ua(forget.labels), "entropy": mean_entropy(s)}
    if len(output.restrict_to) >= 2:
        out["UA_restricted"] = _ua(s, labels, output.restrict_to)
    if output.stages:
        out["steps"] = [int(n) for n, _ in output.stages]
        # the last stage is ``predict`` itself, already scored above
        out["UA_steps"] = [
            _ua(s if p is output.predict else scores_on(p, forget, device), labels) for _, p in output.stages
        ]
    return out


def _overlap(a: SampleSet | AttackerSamples, idx: np.ndarray, forget: SampleSet) -> bool:
    return a.data is forget.data and bool(np.intersect1d(idx, forget.idx).size)


def run_recovery(
    view: ServerView,
    names: Sequence[str],
    forget: SampleSet,
    *,
    k_shot: int = 10,
    relearn_steps: Sequence[int] = (1, 5, 20),
    seed: int = 0,
    device: torch.device | str = "cpu",
    settings: Config | None = None,
    acc_original: float | None = None,
) -> dict[str, object]:
    """Run the named recovery attacks on ``view`` and score them on the forget set.

    Parameters
    ----------
    view : what the attacker holds.
    names : keys of ``fed_opc.attacks.RECOVERY``.
    forget : the forget samples with their true labels (ground truth; used for scoring only).
    k_shot, relearn_steps, seed : override the same fields of ``settings``.
    settings : the other knobs (ridge, logistic strength, relearning's SGD); defaults when None.
    acc_original : the original model's forget accuracy (:func:`forget_accuracy`) when already computed (it is the
        same for every method's view); None: computed here.

    Returns
    -------
    The ``attacks.recovery`` block of ``results.json``: ``{"floor_UA": f, "fm": {"UA", "UA_restricted", "entropy"},
    "hr": {...}, "probe": {"UA", "entropy"}, "prototype": {"UA", "entropy"}, "forget_probe": {"acc", "chance",
    "entropy"}, "relearn": {"UA", "steps", "UA_steps", "entropy"}}`` for the attacks named. An attack that does not
    apply to the view (``NotApplicable``) is absent, and so is ``UA_restricted`` with fewer than two forgotten classes.
    The block also holds the original model's forget accuracy ``acc_original`` and ``measurable``, and every UA
    attack its normalised ``recovery`` when measurable (:func:`add_normalised_recovery`).

    """
    from fed_opc.attacks import RECOVERY

    unknown = [n for n in names if n not in RECOVERY]
    if unknown:
        raise KeyError(f"unknown recovery attack(s) {unknown}; valid: {', '.join(sorted(RECOVERY))}")
    if len(forget) == 0:
        raise ValueError("run_recovery needs a non-empty forget set")
    # The attacks' premises, checked here because only this side knows the forget set.
    if _overlap(view.calibration, view.calibration.idx, forget):
        raise ValueError("ServerView.calibration contains forget samples; the training-free attacks must not see them")
    if view.aux is not None and _overlap(view.aux, view.aux.forget_idx, forget):
        raise ValueError("the attacker's labelled samples include scored forget samples; use held-out samples")
    cfg = dataclasses.replace(
        settings or Config(), k_shot=int(k_shot), relearn_steps=tuple(int(s) for s in relearn_steps), seed=int(seed)
    )
    result: dict[str, object] = {"floor_UA": floor_ua(forget.labels)}
    # one pass of the unlearned model over the forget set, on first use, for every read-out of frozen features
    forget_features = functools.cache(lambda: features_of(placed(view.unlearned, device), forget, device))

    for name in names:
        try:
            entry = score(RECOVERY[name](view, cfg, device), forget, device=device, features=forget_features)
        except NotApplicable as e:
            log.info("recovery attack %s does not apply: %s", name, e)
            continue
        entry.pop("floor_UA", None)  # one floor for the whole block: it depends on the forget labels only
        result[name] = entry
    if acc_original is None:
        acc_original = forget_accuracy(view.original, forget, device)
    return add_normalised_recovery(result, acc_original)


def forget_accuracy(model: nn.Module, forget: SampleSet, device: torch.device | str = "cpu") -> float:
    """``model``'s accuracy on the forget set (for the original model: ``acc_original`` of normalised recovery)."""
    model = placed(model, device)
    return 1.0 - _ua(scores_on(eval_call(model, model), forget, device), torch.from_numpy(forget.labels))
