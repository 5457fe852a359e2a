"""Image-quality metrics for gradient inversion: PSNR, SSIM, the flat-image baseline, matching and PNG grids.

PSNR and SSIM (Wang et al., "Image quality assessment: from error visibility to structural similarity", IEEE TIP 2004)
come from torchmetrics, on images in [0, 1]. A reconstruction is read against the PSNR of a flat image, which an attack
that recovers nothing of the picture scores for free: the image's own mean colour (:func:`own_mean_psnr`, the stronger
baseline: an attack that only recovers the average colour reaches it), and the dataset-mean colour
(:func:`dataset_mean_psnr`, about 0.7 dB weaker on CIFAR-10 test images). For a batch, reconstructions are
matched to originals by the assignment that maximises the total PSNR (the Hungarian method, Kuhn 1955), since the order
of a reconstructed batch is arbitrary.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


def _check(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"expected two (B, C, H, W) batches of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def psnr(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of ``images`` against ``reference`` (both (B, C, H, W) in [0, 1]); inf where equal."""
    _check(images, reference)
    return peak_signal_noise_ratio(
        images.double(), reference.double(), data_range=1.0, reduction="none", dim=(1, 2, 3)
    ).float()


def ssim(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM of ``images`` against ``reference`` (both (B, C, H, W) in [0, 1]); 1 where equal.

    The standard 11x11 Gaussian window (sigma 1.5), shrunk to the largest odd size that fits a smaller image.
    """
    _check(images, reference)
    side = min(images.shape[-2:])
    kernel = min(11, side if side % 2 else side - 1)
    out = structural_similarity_index_measure(
        images.double(), reference.double(), data_range=1.0, reduction="none", kernel_size=kernel
    )
    return out.float().reshape(-1)


def flat_image(mean: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    """Images of the constant colour ``mean`` (one value per channel), shaped like ``like``."""
    colour = torch.tensor(list(mean), dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
    return colour.expand_as(like).clone()


def dataset_mean_psnr(reference: torch.Tensor, mean: Sequence[float]) -> torch.Tensor:
    """Per-image PSNR of a flat image of the dataset-mean colour ``mean`` against ``reference`` (B, C, H, W)."""
    return psnr(flat_image(mean, reference), reference)


def own_mean_image(reference: torch.Tensor) -> torch.Tensor:
    """Each image of ``reference`` (B, C, H, W) replaced by a flat image of its own mean colour (per channel)."""
    _check(reference, reference)
    return reference.mean(dim=(2, 3), keepdim=True).expand_as(reference).clone()


def own_mean_psnr(reference: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR of a flat image of each image's own mean colour against it (the stronger flat baseline).

    Its squared error is the image's variance around its per-channel means, so it is never below
    :func:`dataset_mean_psnr` of the same image.
    """
    return psnr(own_mean_image(reference), reference)


def match(reconstructions: torch.Tensor, originals: torch.Tensor) -> np.ndarray:
    """For each reconstruction, the index of the original it is assigned to, maximising the total PSNR.

    ``originals`` may hold more images than ``reconstructions`` (a pool, e.g. every forget image behind a model
    difference); each original is used at most once. Uses scipy's Hungarian solver when scipy is present, else a greedy
    assignment (best pair first).
    """
    b, n = len(reconstructions), len(originals)
    if b > n:
        raise ValueError(f"cannot match {b} reconstructions to {n} originals")
    table = torch.stack([psnr(r.unsqueeze(0).expand_as(originals), originals) for r in reconstructions]).numpy()
    # inf (an exact copy) would break the solver's arithmetic; any finite value above every other one keeps the order.
    finite = np.isfinite(table)
    cap = (table[finite].max() if finite.any() else 0.0) + 1e3
    table = np.where(finite, table, cap)
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:  # scipy is optional; the greedy assignment is exact whenever the best pairs do not collide
        out = np.full(b, -1, dtype=np.int64)
        order = np.dstack(np.unravel_index(np.argsort(-table, axis=None), table.shape))[0]
        used: set[int] = set()
        for i, j in order:
            if out[i] < 0 and j not in used:
                out[i] = j
                used.add(int(j))
        return out
    rows, cols = linear_sum_assignment(table, maximize=True)
    out = np.empty(b, dtype=np.int64)
    out[rows] = cols
    return out


def save_grid(path: str | Path, originals: torch.Tensor, reconstructions: torch.Tensor, scale: int = 4) -> Path:
    """Write a PNG with the originals in the top row and their reconstructions below (images in [0, 1]).

    Pixels are upscaled ``scale`` times by repetition, so the grid shows exactly what was scored.
    """
    _check(originals, reconstructions)
    from PIL import Image

    def row(batch: torch.Tensor) -> np.ndarray:
        arr = (batch.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        if arr.shape[-1] == 1:
            arr = np.repeat(arr, 3, axis=-1)
        gap = np.full((arr.shape[1], 2, 3), 255, dtype=np.uint8)
        parts: list[np.ndarray] = []
        for img in arr:
            parts += [img, gap]
        return np.concatenate(parts[:-1], axis=1)

    top, bottom = row(originals), row(reconstructions)
    sep = np.full((2, top.shape[1], 3), 255, dtype=np.uint8)
    grid = np.concatenate([top, sep, bottom], axis=0).repeat(scale, axis=0).repeat(scale, axis=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
    return path
