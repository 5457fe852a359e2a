"""Running an inversion target and scoring its reconstructions against the true images and both flat baselines;
the calibration on the original model and reading a method's result against it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fed_opc.attacks.images import dataset_mean_psnr, match, own_mean_psnr, psnr, save_grid, ssim
from fed_opc.attacks.inversion.functional import LABELLED
from fed_opc.attacks.inversion.reconstruct import invert_many
from fed_opc.attacks.inversion.settings import Config, ImageSpace
from fed_opc.attacks.view import ServerView
from fed_opc.rng import torch_rng


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
