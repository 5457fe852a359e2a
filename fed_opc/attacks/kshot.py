"""k-shot read-outs of frozen unlearned features: ``probe``, ``forget_probe`` and ``prototype``.

These attacks are not tautological for a method that contracts forget features to a point (One-Point Contraction,
arXiv 2507.07754): they model an attacker who holds a few labelled examples of the forgotten data (``ServerView.aux``)
and asks whether the unlearned features still separate them. ``probe`` is a linear probe (Alain & Bengio, ICLR workshop
2017); ``prototype`` is the nearest-class-mean classifier of prototypical networks (Snell et al., NeurIPS 2017);
``forget_probe`` is a probe among the forgotten classes only, which can show that they are still told apart when the
floor-bounded attacks cannot.
"""

from __future__ import annotations

import numpy as np
import torch

from fed_opc.attacks.recovery import (
    Config,
    NotApplicable,
    RecoveryOutput,
    eval_call,
    features_of,
    fit_logistic,
    frozen_readout,
    kshot_samples,
    per_class,
    placed,
    require_aux,
)
from fed_opc.attacks.view import SampleSet, ServerView
from fed_opc.rng import numpy_rng


def probe(view: ServerView, cfg: Config, device: torch.device | str = "cpu") -> RecoveryOutput:
    """Logistic probe on frozen unlearned features of ``k_shot`` labelled samples per class (forget and retain pools)."""
    unlearned = placed(view.unlearned, device)
    shots = kshot_samples(view, cfg)
    head = fit_logistic(features_of(unlearned, shots, device), shots.labels, view.num_classes, cfg.logistic_c)
    return frozen_readout(unlearned, head)


def forget_probe(view: ServerView, cfg: Config, device: torch.device | str = "cpu") -> RecoveryOutput:
    """Logistic probe on ``k_shot`` labelled samples of each forgotten class only, choosing among those classes.

    Raises ``NotApplicable`` unless the view names two or more forgotten classes: with one class the read-out is always
    right, and without a class deletion there is no set of forgotten classes to choose among.
    """
    classes = view.forgotten_classes
    if len(classes) < 2:
        raise NotApplicable(f"needs a class deletion of two or more classes, got forgotten classes {classes}")
    aux = require_aux(view)
    idx = per_class(aux.data, aux.forget_idx, cfg.k_shot, numpy_rng(cfg.seed, "attack_forget_probe"), classes)
    shots = SampleSet(aux.data, idx)
    missing = sorted(set(classes) - set(shots.labels.tolist()))
    if missing:
        raise ValueError(f"forget_probe: the attacker's samples hold no sample of forgotten class(es) {missing}")
    unlearned = placed(view.unlearned, device)
    head = fit_logistic(features_of(unlearned, shots, device), shots.labels, view.num_classes, cfg.logistic_c)
    return RecoveryOutput(predict=eval_call(unlearned, lambda x: head(unlearned.features(x))), among=classes)


def class_means(feats: torch.Tensor, labels: np.ndarray, num_classes: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Per-class mean features (num_classes, D), a mask of the classes seen, and the pooled within-class variance per
    dimension (the isotropic variance of a shared-covariance Gaussian model).
    """
    f = feats.double()
    y = torch.as_tensor(labels, dtype=torch.long)
    means = torch.zeros(num_classes, f.shape[1], dtype=f.dtype)
    seen = torch.zeros(num_classes, dtype=torch.bool)
    resid = []
    for c in y.unique().tolist():
        rows = f[y == c]
        means[c], seen[c] = rows.mean(0), True
        resid.append(rows - means[c])
    var = float(torch.cat(resid).pow(2).mean())
    return means, seen, var


def prototype(view: ServerView, cfg: Config, device: torch.device | str = "cpu") -> RecoveryOutput:
    """Nearest class mean in unlearned feature space, means from ``k_shot`` labelled samples per class.

    Scores are ``-||f - mu_c||^2 / (2 s^2)`` with ``s^2`` the pooled within-class variance: the posterior of a Gaussian
    model with one isotropic covariance, so the reported entropy does not depend on the features' scale. Classes with
    no sample score -inf.
    """
    unlearned = placed(view.unlearned, device)
    shots = kshot_samples(view, cfg)
    means, seen, var = class_means(features_of(unlearned, shots, device), shots.labels, view.num_classes)
    means = means.to(device)
    # A zero variance (identical features within every class) would divide by zero; any tiny positive value keeps the
    # nearest-mean decision and makes the posterior as sharp as the data say.
    two_var = 2.0 * max(var, 1e-30)

    def read(feats: torch.Tensor) -> torch.Tensor:
        d2 = torch.cdist(feats.double(), means).pow(2)
        s = -d2 / two_var
        s[:, ~seen.to(device)] = -torch.inf
        return s.float()

    return frozen_readout(unlearned, read)
