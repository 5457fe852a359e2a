"""The attack's settings (``Config``) and the image space it reconstructs in (``ImageSpace``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fed_opc.attacks.inversion.functional import _loss

# ---------------------------------------------------------------------------------------------------------------------
# settings


@dataclass(frozen=True)
class Config:
    """Inverting Gradients settings; the defaults are the ones measured to work (DESIGN.md section 4).

    Attributes
    ----------
    iterations, restarts : optimisation steps per restart, and restarts (independent random starts).
    combine : what the attack outputs from its restarts: ``mean``, the pixel mean of all restarts' images (each
        restart's images first put in the order of the best restart's; the fusion of Yin et al., "See through
        gradients", CVPR 2021, without their image registration: each restart's own noise averages out, the image
        they agree on stays; 0.6-1.4 dB more than ``best`` on the main scenario's pretrained models), or ``best``, the
        restart with the lowest gradient match (Inverting Gradients).
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
    combine: str = "mean"
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.iterations, self.restarts, self.images, self.batch_size) < 1:
            raise ValueError("iterations, restarts, images and batch_size must be >= 1")
        if self.lr <= 0 or self.tv < 0 or self.init_std < 0 or self.bn_stats < 0:
            raise ValueError("lr must be > 0, tv, init_std and bn_stats >= 0")
        if self.combine not in ("mean", "best"):
            raise ValueError(f"combine must be 'mean' or 'best', got {self.combine!r}")
        if self.labels not in ("infer", "given"):
            raise ValueError(f"labels must be 'infer' or 'given', got {self.labels!r}")
        if self.loss is not None:
            _loss(self.loss)

    @classmethod
    def from_scenario(cls, inv: object, seed: int = 0) -> Config:
        """From a scenario's ``attacks.inversion`` block (``images``, ``iterations``, ``restarts``, ``lr``, ``tv``,
        ``bn_stats``, ``combine``; ``tv: null`` keeps the default).
        """
        tv = getattr(inv, "tv", None)
        return cls(
            iterations=inv.iterations,
            restarts=inv.restarts,
            lr=inv.lr,
            tv=cls.tv if tv is None else tv,
            images=inv.images,
            bn_stats=getattr(inv, "bn_stats", 0.0),
            combine=getattr(inv, "combine", cls.combine),
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
