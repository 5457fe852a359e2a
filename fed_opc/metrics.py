"""Unlearning metrics: pure functions over logits, features and labels, and :func:`evaluate_unlearning`, which computes a
method's whole ``metrics`` block (DESIGN.md sections 5 and 6; every definition is in docs/metrics.md).

Accuracies, shares and MIA efficacy are fractions in [0, 1]. A value that does not apply (no retrain reference, an
empty set, an undefined ratio) is left out of the block, never written as None or 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fed_opc.rng import numpy_rng

GAP_KEYS: tuple[str, ...] = ("UA", "RA", "TA", "MIA")
DEAD_UNIT_TOL = 1e-8
COLLAPSE_DEAD_SHARE = 0.5
COLLAPSE_RA_FRACTION = 0.5

# ---------------------------------------------------------------------------------------------------------------------
# pure functions


def accuracy_from_logits(logits: torch.Tensor, labels: torch.Tensor | np.ndarray) -> float:
    """Top-1 accuracy; nan for an empty set."""
    labels = torch.as_tensor(labels)
    if len(labels) == 0:
        return float("nan")
    return float((logits.argmax(1).cpu() == labels.cpu()).float().mean())


def predictive_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-sample entropy (nats) of ``softmax(logits)``."""
    logp = F.log_softmax(logits.double(), dim=1)
    return -(logp.exp() * logp).sum(1)


def mean_feature_norm(features: torch.Tensor) -> float:
    """Mean over samples of the L2 norm of each feature row; nan for no rows."""
    if len(features) == 0:
        return float("nan")
    return float(torch.linalg.vector_norm(features.double(), dim=1).mean())


def linear_cka(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> float:
    """Linear centred kernel alignment of two representations of the same samples (Kornblith et al., ICML 2019).

    ``CKA = ||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F)`` with column-centred ``X_c`` (n x d1) and ``Y_c``
    (n x d2). It is 1 for identical representations and invariant to orthogonal transforms and isotropic scaling of
    either. A representation that is constant over the samples shares nothing with the other: 0.
    """
    xc = torch.as_tensor(x, dtype=torch.float64)
    yc = torch.as_tensor(y, dtype=torch.float64)
    if xc.shape[0] != yc.shape[0]:
        raise ValueError(f"CKA needs the same samples: {xc.shape[0]} vs {yc.shape[0]} rows")
    xc = xc - xc.mean(0, keepdim=True)
    yc = yc - yc.mean(0, keepdim=True)
    # the n x n Gram form is cheaper when features are wider than the sample count, but both are exact
    cross = torch.linalg.matrix_norm(yc.T @ xc) ** 2
    denom = torch.linalg.matrix_norm(xc.T @ xc) * torch.linalg.matrix_norm(yc.T @ yc)
    if denom <= 0:
        return 0.0
    return float(min(1.0, max(0.0, float(cross / denom))))


def nullspace_share(features: torch.Tensor, weight: torch.Tensor, rtol: float = 1e-6) -> float:
    """Share of the features' energy outside the row space of the head weight ``weight`` (C x D).

    ``sum_i ||f_i - P f_i||^2 / sum_i ||f_i||^2`` with ``P`` the orthogonal projector onto the span of ``weight``'s rows
    (singular values below ``rtol`` times the largest count as zero). That part of a feature never reaches the logits:
    a model whose logits are contracted can keep it intact. nan when the features have no energy.
    """
    f = features.double()
    total = float((f**2).sum())
    if total <= 0.0:
        return float("nan")
    _, s, vh = torch.linalg.svd(weight.detach().double().cpu(), full_matrices=False)
    rank = int((s > rtol * s.max()).sum()) if len(s) and s.max() > 0 else 0
    basis = vh[:rank]  # (rank, D), orthonormal rows
    inside = float(((f @ basis.T) ** 2).sum())
    return float(min(1.0, max(0.0, 1.0 - inside / total)))


def dead_units_share(features: torch.Tensor, tol: float = DEAD_UNIT_TOL) -> float:
    """Share of feature units (columns) whose value is at most ``tol`` in absolute value on every sample."""
    if features.shape[1] == 0 or features.shape[0] == 0:
        return float("nan")
    return float((features.abs().amax(0) <= tol).double().mean())


def n_predicted_classes(logits: torch.Tensor) -> int:
    """Number of distinct argmax classes over the rows of ``logits``."""
    return int(torch.unique(logits.argmax(1)).numel())


def is_collapsed(
    n_predicted: int,
    dead_share: float,
    num_retained_classes: int,
    retain_acc: float | None = None,
    original_retain_acc: float | None = None,
) -> bool:
    """The collapse rule: True when any of the following holds.

    - fewer than ``min(3, num_retained_classes)`` distinct classes are predicted on the test data;
    - more than ``COLLAPSE_DEAD_SHARE`` (50%) of the penultimate units are dead on retain data;
    - (when both are given) the retain accuracy fell below ``COLLAPSE_RA_FRACTION`` (half) of the original model's.

    Each means the model no longer tells the retained classes apart: contraction turned into destruction, and the
    forget accuracy says nothing about forgetting.
    """
    few_classes = n_predicted < min(3, max(1, num_retained_classes))
    dead = not math.isnan(dead_share) and dead_share > COLLAPSE_DEAD_SHARE
    destroyed = (
        retain_acc is not None
        and original_retain_acc is not None
        and retain_acc < COLLAPSE_RA_FRACTION * original_retain_acc
    )
    return bool(few_classes or dead or destroyed)


def mia_features(logits: torch.Tensor, labels: torch.Tensor | np.ndarray) -> np.ndarray:
    """Per-sample (confidence in the true class, predictive entropy): the inputs of ``MIA_conf_entropy``."""
    labels = torch.as_tensor(labels, dtype=torch.int64)
    return np.concatenate([true_class_confidence(logits, labels), predictive_entropy(logits).numpy()[:, None]], axis=1)


def true_class_confidence(logits: torch.Tensor, labels: torch.Tensor | np.ndarray) -> np.ndarray:
    """Per-sample softmax probability of the true class, as an (n, 1) array: the single input of SalUn's MIA."""
    labels = torch.as_tensor(labels, dtype=torch.int64)
    p = F.softmax(logits.double(), dim=1)
    return p.gather(1, labels.view(-1, 1)).numpy()


def mia_efficacy(
    member: np.ndarray,
    nonmember: np.ndarray,
    target: np.ndarray,
    *,
    rng: np.random.Generator,
    max_per_class: int = 2000,
) -> float:
    """Membership-inference efficacy: the share of ``target`` samples an attack classifies as non-members.

    The procedure of SalUn's ``SVC_MIA`` (Fan et al., ICLR 2024; the same as l1-sparse, Jia et al., NeurIPS 2023): an
    RBF SVC (C=3, gamma="auto") is trained on per-sample features of members (label 1) against non-members (label 0),
    with as many samples of each (at most ``max_per_class``, drawn with ``rng``), then predicts ``target``; the
    efficacy is ``1 - mean(prediction)``. High efficacy means the target samples look like data the model never saw.

    Parameters
    ----------
    member, nonmember, target : (n, k) feature arrays, e.g. from :func:`true_class_confidence` (SalUn's ``MIA``)
        or :func:`mia_features` (``MIA_conf_entropy``).
    rng : draws the balanced training subsample.
    max_per_class : cap on training samples per side, to keep the SVC fast.

    """
    from sklearn.svm import SVC

    if len(target) == 0:
        return float("nan")
    n = min(len(member), len(nonmember), max_per_class)
    if n == 0:
        raise ValueError("MIA needs member and non-member samples")
    mem = member[rng.choice(len(member), size=n, replace=False)]
    non = nonmember[rng.choice(len(nonmember), size=n, replace=False)]
    x = np.concatenate([mem, non])
    y = np.concatenate([np.ones(n), np.zeros(n)])
    clf = SVC(C=3, gamma="auto", kernel="rbf")
    clf.fit(x, y)
    return float(1.0 - clf.predict(target).mean())


def avg_gap(metrics: Mapping[str, float], reference: Mapping[str, float], keys: Sequence[str] = GAP_KEYS) -> float:
    """Mean of ``|metrics[k] - reference[k]|`` over ``keys`` (UA, RA, TA, MIA): the distance to retraining."""
    return float(np.mean([abs(float(metrics[k]) - float(reference[k])) for k in keys]))


# ---------------------------------------------------------------------------------------------------------------------
# a model's outputs on the evaluation sets


@dataclass(frozen=True, eq=False)
class EvalSet:
    """Index arrays a method is evaluated on, drawn once so every method sees the same samples.

    Attributes
    ----------
    train, test : the unguarded datasets (metrics see ground truth, including forget samples).
    forget_idx : every forget index.
    retain_idx : a seeded subsample of the retain indices (at most ``max_retain`` of them) for RA, the retain feature
        norm, dead units and the MIA's member side.
    test_idx : test indices for TA and the MIA's non-member side.
    forgotten_classes : classes removed (class scope), else empty.
    seed : seeds the MIA's subsample.

    """

    train: Any
    test: Any
    forget_idx: np.ndarray
    retain_idx: np.ndarray
    test_idx: np.ndarray
    forgotten_classes: tuple[int, ...] = ()
    seed: int = 0

    @classmethod
    def make(
        cls,
        train,
        test,
        forget_idx: np.ndarray,
        retain_idx: np.ndarray,
        test_idx: np.ndarray | None = None,
        *,
        seed: int,
        forgotten_classes: Sequence[int] = (),
        max_retain: int = 5000,
    ) -> EvalSet:
        """Build an ``EvalSet``, subsampling the retain indices to at most ``max_retain`` with a seeded draw."""
        train = train.allow_forget() if hasattr(train, "allow_forget") else train
        retain_idx = np.asarray(retain_idx, dtype=np.int64)
        if len(retain_idx) > max_retain:
            pick = numpy_rng(seed, "metrics/retain_subsample").choice(len(retain_idx), size=max_retain, replace=False)
            retain_idx = np.sort(retain_idx[pick])
        test_idx = np.arange(len(test), dtype=np.int64) if test_idx is None else np.asarray(test_idx, dtype=np.int64)
        return cls(
            train=train,
            test=test,
            forget_idx=np.asarray(forget_idx, dtype=np.int64),
            retain_idx=retain_idx,
            test_idx=test_idx,
            forgotten_classes=tuple(int(c) for c in forgotten_classes),
            seed=int(seed),
        )

    @property
    def num_classes(self) -> int:
        """Number of classes of the training data."""
        return int(self.train.num_classes)


@dataclass(frozen=True, eq=False)
class Outputs:
    """Penultimate features and logits of one model on the forget, retain and test sets of an ``EvalSet``."""

    forget_features: torch.Tensor
    forget_logits: torch.Tensor
    retain_features: torch.Tensor
    retain_logits: torch.Tensor
    test_features: torch.Tensor
    test_logits: torch.Tensor


@torch.no_grad()
def _features_and_logits(
    model: nn.Module, data, idx: np.ndarray, device: torch.device | str, batch_size: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    feats, logits = [], []
    for start in range(0, len(idx), batch_size):
        x, _ = data.tensors(idx[start : start + batch_size], device)
        f = model.features(x)
        feats.append(f.float().cpu())
        logits.append(model.head(f).float().cpu())
    if not feats:
        return torch.zeros(0, model.feature_dim), torch.zeros(0, model.head.out_features)
    return torch.cat(feats), torch.cat(logits)


def model_outputs(model: nn.Module, ev: EvalSet, *, device: torch.device | str) -> Outputs:
    """One eval-mode pass of ``model`` over the forget, retain-subsample and test sets (the model's mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        ff, fl = _features_and_logits(model, ev.train, ev.forget_idx, device)
        rf, rl = _features_and_logits(model, ev.train, ev.retain_idx, device)
        tf, tl = _features_and_logits(model, ev.test, ev.test_idx, device)
    finally:
        model.train(was_training)
    return Outputs(ff, fl, rf, rl, tf, tl)


def evaluate_outputs(
    out: Outputs,
    ev: EvalSet,
    *,
    head_weight: torch.Tensor,
    original: Outputs | None = None,
    retrain: Outputs | None = None,
    retrain_metrics: Mapping[str, float] | None = None,
    mia_max_per_class: int = 2000,
) -> dict[str, float]:
    """The metrics block from precomputed :class:`Outputs` (see :func:`evaluate_unlearning`)."""
    y_f = torch.from_numpy(ev.train.labels[ev.forget_idx])
    y_r = torch.from_numpy(ev.train.labels[ev.retain_idx])
    y_t = torch.from_numpy(ev.test.labels[ev.test_idx])
    in_forgotten = np.isin(y_t.numpy(), ev.forgotten_classes)
    kept = torch.from_numpy(~in_forgotten)
    m: dict[str, float] = {
        "UA": 1.0 - accuracy_from_logits(out.forget_logits, y_f),
        "RA": accuracy_from_logits(out.retain_logits, y_r),
        # SalUn's TA: a class removed everywhere leaves the test set too (no-op outside class scope)
        "TA": accuracy_from_logits(out.test_logits[kept], y_t[kept]),
        "TA_all": accuracy_from_logits(out.test_logits, y_t),
    }
    if in_forgotten.any():
        sel = torch.from_numpy(in_forgotten)
        m["TA_forgotten_classes"] = accuracy_from_logits(out.test_logits[sel], y_t[sel])
    if len(ev.retain_idx) and bool(kept.any()):
        # SalUn: the true class's confidence alone; non-members = test samples of the retained classes
        m["MIA"] = mia_efficacy(
            true_class_confidence(out.retain_logits, y_r),
            true_class_confidence(out.test_logits[kept], y_t[kept]),
            true_class_confidence(out.forget_logits, y_f),
            rng=numpy_rng(ev.seed, "metrics/mia_salun"),
            max_per_class=mia_max_per_class,
        )
    if len(ev.retain_idx) and len(ev.test_idx):
        m["MIA_conf_entropy"] = mia_efficacy(
            mia_features(out.retain_logits, y_r),
            mia_features(out.test_logits, y_t),
            mia_features(out.forget_logits, y_f),
            rng=numpy_rng(ev.seed, "metrics/mia"),
            max_per_class=mia_max_per_class,
        )
    if retrain_metrics is not None and all(k in m and k in retrain_metrics for k in GAP_KEYS):
        m["avg_gap"] = avg_gap(m, retrain_metrics)
    m["forget_feature_norm"] = mean_feature_norm(out.forget_features)
    m["retain_feature_norm"] = mean_feature_norm(out.retain_features)
    if len(out.forget_logits):
        m["forget_entropy"] = float(predictive_entropy(out.forget_logits).mean())
    if original is not None:
        m["cka_vs_original"] = linear_cka(out.forget_features, original.forget_features)
    if retrain is not None:
        m["cka_vs_retrain"] = linear_cka(out.forget_features, retrain.forget_features)
    m["nullspace_share"] = nullspace_share(out.forget_features, head_weight)
    m["dead_units_share"] = dead_units_share(out.retain_features)
    if len(out.test_logits):
        m["n_predicted_classes"] = n_predicted_classes(out.test_logits)
        retained = ev.num_classes - len(ev.forgotten_classes)
        original_ra = accuracy_from_logits(original.retain_logits, y_r) if original is not None else None
        m["collapsed"] = int(
            is_collapsed(m["n_predicted_classes"], m["dead_units_share"], retained, m["RA"], original_ra)
        )
    return {k: v for k, v in m.items() if not (isinstance(v, float) and not math.isfinite(v))}


def evaluate_methods(
    outputs: Mapping[str, Outputs],
    head_weights: Mapping[str, torch.Tensor],
    ev: EvalSet,
    *,
    original: Outputs,
    reference: str | None = None,
    reference_outputs: Outputs | None = None,
) -> dict[str, dict[str, float]]:
    """Every method's metrics block, each measured against the same retrained reference (both settings use this).

    ``reference`` names the retrained model among ``outputs`` (``retrain`` centrally, ``fed_retrain`` in the
    federation): each block's ``avg_gap`` and ``cka_vs_retrain`` are measured against it, its own being 0 and 1.
    Without one, ``reference_outputs`` (the other setting's retrained model, if any) gives ``cka_vs_retrain`` only, and
    no block has an ``avg_gap``. ``head_weights`` holds each model's last layer, for ``nullspace_share``.
    """
    if reference is not None:
        ref_out = outputs[reference]
        ref_metrics = evaluate_outputs(ref_out, ev, head_weight=head_weights[reference], original=original)
    else:
        ref_out, ref_metrics = reference_outputs, None
    return {
        m: evaluate_outputs(
            out, ev, head_weight=head_weights[m], original=original, retrain=ref_out, retrain_metrics=ref_metrics
        )
        for m, out in outputs.items()
    }


def evaluate_unlearning(
    model: nn.Module,
    ev: EvalSet,
    *,
    device: torch.device | str,
    original: Outputs | None = None,
    retrain: Outputs | None = None,
    retrain_metrics: Mapping[str, float] | None = None,
    mia_max_per_class: int = 2000,
) -> dict[str, float]:
    """Compute a method's ``metrics`` block (all but ``RTE_s``, which the caller times).

    Parameters
    ----------
    model : the unlearned ``FeatureModel``.
    ev : the evaluation sets (see :class:`EvalSet`).
    device : where to run the model.
    original : outputs of the model before unlearning, for ``cka_vs_original``.
    retrain : outputs of the retrained reference, for ``cka_vs_retrain``.
    retrain_metrics : the retrained reference's metrics, for ``avg_gap``.
    mia_max_per_class : cap on the MIA classifier's training samples per side.

    Returns
    -------
    ``UA``, ``RA``, ``TA`` (on the retained classes in class scope, as SalUn), ``TA_all`` (the whole test set),
    ``TA_forgotten_classes`` (class scope), ``MIA`` (SalUn's efficacy), ``MIA_conf_entropy``, ``avg_gap`` (over UA, RA,
    TA, MIA), ``forget_feature_norm``,
    ``retain_feature_norm``, ``forget_entropy``, ``cka_vs_original``, ``cka_vs_retrain``, ``nullspace_share``,
    ``dead_units_share``, ``n_predicted_classes`` and ``collapsed`` (0 or 1); keys that do not apply are absent.

    """
    out = model_outputs(model, ev, device=device)
    return evaluate_outputs(
        out,
        ev,
        head_weight=model.head.weight,
        original=original,
        retrain=retrain,
        retrain_metrics=retrain_metrics,
        mia_max_per_class=mia_max_per_class,
    )


# ---------------------------------------------------------------------------------------------------------------------
# image reconstruction quality (gradient inversion)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image peak signal-to-noise ratio in dB of images ``x`` against references ``y`` (B, C, H, W), both in
    ``[0, data_range]``; inf for identical images.
    """
    mse = ((x.double() - y.double()) ** 2).flatten(1).mean(1)
    return 10.0 * torch.log10(data_range**2 / mse)


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image structural similarity (Wang et al., 2004; Gaussian window 11, sigma 1.5) of ``x`` against ``y``."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    return structural_similarity_index_measure(x.double(), y.double(), data_range=data_range, reduction="none").reshape(
        -1
    )
