"""``fm``: training-free feature mapping from the unlearned to the original penultimate features.

Ridge-regress an affine map ``A`` (with bias) from unlearned to original features on calibration data that holds no
forget sample, then classify forget samples with the original head on ``A f_u(x)``. If unlearning only re-encoded the
features (any invertible affine change), this recovers the original model's predictions exactly; if it contracted the
forget features to a point, every forget sample gets one prediction and the UA sits at the constant-predictor floor.
The linear-probe reading follows Alain & Bengio (ICLR workshop 2017); the attack is the one used to test
One-Point Contraction (arXiv 2507.07754), where feature mapping is contrasted with representation-level forgetting.
"""

from __future__ import annotations

import torch

from fed_opc.attacks.recovery import Config, RecoveryOutput, calibration_features, frozen_readout, placed
from fed_opc.attacks.view import ServerView


def ridge_map(source: torch.Tensor, target: torch.Tensor, ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, b)`` minimising ``||source A + b - target||^2 + lam ||A||^2`` in float64, the bias unpenalised.

    ``lam = ridge * trace(Cov(source)) / dim``, so the map does not depend on the source features' scale; constant
    source features (a collapsed model) give ``A = 0`` and ``b`` = the target mean.
    """
    x, y = source.double(), target.double()
    mu_x, mu_y = x.mean(0), y.mean(0)
    xc, yc = x - mu_x, y - mu_y
    n, d = xc.shape
    cov = xc.T @ xc / n
    scale = float(torch.trace(cov)) / d
    lam = ridge * scale if scale > 0 else 1.0
    a = torch.linalg.solve(cov + lam * torch.eye(d, dtype=cov.dtype), xc.T @ yc / n)
    return a, mu_y - mu_x @ a


def feature_mapping(view: ServerView, cfg: Config, device: torch.device | str = "cpu") -> RecoveryOutput:
    """Original head on ridge-mapped unlearned features; ``restrict_to`` the forgotten classes (if two or more)."""
    original, unlearned = placed(view.original, device), placed(view.unlearned, device)
    a, b = ridge_map(
        calibration_features(view, "unlearned", device), calibration_features(view, "original", device), cfg.ridge
    )
    a, b = a.to(device), b.to(device)
    head = original.head

    def read(feats: torch.Tensor) -> torch.Tensor:
        mapped = feats.double() @ a + b
        return head(mapped.to(head.weight.dtype))

    return frozen_readout(unlearned, read, restrict_to=view.forgotten_classes)
