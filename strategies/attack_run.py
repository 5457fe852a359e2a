"""Run the scenario's attacks on every method's resulting global model (the ``attacks`` block of results.json).

For each method the harness builds the ``ServerView`` an honest-but-curious server (or model holder) has, and scores
what the attacks produce against ground truth:

- ``original`` / ``unlearned``: the pretrained global model and the method's result;
- ``calibration``: half of the server's held-out (test) data, unlabelled, of every class: it holds no forget sample
  (those are training samples), but held-out images of forgotten classes too, as a public dataset would; without
  them the head re-fit ``hr`` could never name a forgotten class. The other half is the attacker's own labelled pool
  for the k-shot attacks (held-out images of the forgotten classes, and of the others), so no scored forget sample is
  ever an attack input;
- ``gradients`` (inversion target ``global_model``): the gradient of the unlearned global model on single forget
  images, as a client holding them would send it in a later round;
- ``updates`` (target ``unlearning_update``, federated methods whose requester sent one): the update of the method's
  local unlearning procedure, replayed from the global model the requester received, on ``images`` of its forget
  images, in plain SGD steps of the method's learning rate (at most 5 steps; the recorded number when fewer). A whole
  client's real update covers hundreds of images and many steps, which no inversion recovers; this observation is the
  strongest case of the same protocol, a requester with few images;
- ``model_difference``: the unlearned minus the original global model, for every method.

Two reference rows of the ``global_model`` target, on the same forget images, are reported once per run under
``inversion_reference``: ``untrained_global_model`` (the seeded initial model: what the attack reaches before any
training) and ``original_global_model`` (the pretrained model every method starts from: the calibration row, marked
``informative`` when the attack beats the own-mean flat image there by ``INFORMATIVE_MARGIN_DB``).
:func:`read_inversion_against_original` then gives every method's inversion result that ``informative`` flag, and its
``global_model`` result the PSNR difference to the original model's (``vs_original_db``): where the original model
cannot be inverted, a low PSNR after unlearning says nothing (uninformative, never "resisted").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fed_opc.attacks import AttackerSamples, SampleSet, ServerView, run_inversion, run_recovery
from fed_opc.attacks.inversion import Config as InversionConfig
from fed_opc.attacks.inversion import ImageSpace, calibration, observe_gradient, observe_update, read_against
from fed_opc.attacks.recovery import calibration_features, forget_accuracy
from fed_opc.rng import numpy_rng
from fed_opc.threads import torch_threads

log = logging.getLogger("fed_opc")

_LOSS_OF_OBJECTIVE = {("opc", "penultimate"): "feature_norm", ("opc", "logits"): "logit_norm", ("ga", None): "ascent"}


def _loss_name(objective: str, layer: str | None, squared: bool = False) -> str:
    name = _LOSS_OF_OBJECTIVE.get((objective, layer if objective == "opc" else None), "ce")
    return f"{name}_sq" if squared and objective == "opc" else name


def _replay_lr(obs: dict[str, Any]) -> float:
    """The step size of the replayed update: an OPC requester's loss is ``lambda`` times the contraction term that the
    replay computes, so under plain SGD its step is ``lr * lambda`` on that term.
    """
    lr = float(obs["lr"])
    return lr * float(obs.get("lambda", 1.0)) if obs["objective"] == "opc" else lr


def _split_test(sc, sd) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The held-out data split in two seeded halves: calibration, and the attacker's labelled pool."""
    idx = numpy_rng(sc.seed, "attacks/test_split").permutation(sd.test_idx)
    half = len(idx) // 2
    return np.sort(idx[:half]), np.sort(idx[half:]), sd.data.test.labels


def build_view(
    sc, sd, original, unlearned, forget_idx, forgotten, *, updates=(), gradients=(), original_features=None
) -> ServerView:
    """The ``ServerView`` of one method's result (see the module docstring): calibration is one seeded half of the test
    data; the other half is the attacker's labelled pool, split into samples of the forget set's classes
    (``aux.forget_idx``) and samples of every class not in ``forgotten`` (``aux.retain_idx``).
    """
    calib, pool, labels = _split_test(sc, sd)
    forget_classes = np.unique(sd.data.train.labels[forget_idx])
    aux = AttackerSamples(
        sd.data.test, pool[np.isin(labels[pool], forget_classes)], pool[~np.isin(labels[pool], forgotten)]
    )
    return ServerView(
        original=original,
        unlearned=unlearned,
        calibration=SampleSet(sd.data.test, calib),
        forgotten_classes=forgotten,
        aux=aux,
        updates=tuple(updates),
        gradients=tuple(gradients),
        original_features=original_features,
    )


def _images(sd, idx: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(sd.data.train.images[idx]).permute(0, 3, 1, 2).float() / 255.0
    return x


def inversion_picks(sc, sd, forget_idx: np.ndarray, n: int) -> np.ndarray:
    """The forget images the inversion attacks target: ``n`` of ``forget_idx`` (all of them if fewer), drawn with the
    scenario's seed, so the same for every method; sorted.
    """
    return np.sort(
        numpy_rng(sc.seed, "attacks/inversion_images").choice(forget_idx, size=min(n, len(forget_idx)), replace=False)
    )


def attack_method(
    sc,
    sd,
    method: str,
    original,
    unlearned,
    forget_idx: np.ndarray,
    forgotten: tuple[int, ...],
    observed: dict[str, Any] | None,
    new_model,
    plots_dir: Path,
    device: torch.device | str = "cpu",
    readings: OriginalReadings | None = None,
) -> dict[str, Any]:
    """The ``attacks`` block for one method (run on one torch thread: the attacks' many small steps gain nothing from
    more, and lose a lot when another process competes for the cores). ``readings``: the original model's, when
    computed once for every method (:func:`original_readings`).
    """
    with torch_threads(1):
        return _attack_method(
            sc, sd, method, original, unlearned, forget_idx, forgotten, observed, new_model, plots_dir, device, readings
        )


@dataclass(frozen=True, eq=False)
class OriginalReadings:
    """What every method's recovery attacks read from the original model, the same for all of them: its penultimate
    features of the calibration data (``ServerView.original_features``) and its forget accuracy (``acc_original``).
    """

    calibration_features: torch.Tensor
    forget_accuracy: float


def original_readings(sc, sd, original, forget_idx: np.ndarray, device="cpu") -> OriginalReadings:
    """The original model's :class:`OriginalReadings` on ``sc``'s calibration data and forget set."""
    view = build_view(sc, sd, original, original, forget_idx, ())
    return OriginalReadings(
        calibration_features(view, "original", device),
        forget_accuracy(original, SampleSet(sd.data.train, forget_idx), device),
    )


def _attack_method(
    sc, sd, method, original, unlearned, forget_idx, forgotten, observed, new_model, plots_dir, device, readings
):
    att = sc.attacks
    out: dict[str, Any] = {}
    train = sd.data.train
    forget = SampleSet(train, forget_idx)
    if att.recovery:
        view = build_view(
            sc, sd, original, unlearned, forget_idx, forgotten,
            original_features=readings.calibration_features if readings else None,
        )  # fmt: skip
        out["recovery"] = run_recovery(
            view,
            list(att.recovery),
            forget,
            k_shot=att.k_shot,
            relearn_steps=att.relearn_steps,
            seed=sc.seed,
            device=device,
            acc_original=readings.forget_accuracy if readings else None,
        )
    targets = list(att.inversion.targets)
    if not targets or (att.inversion.methods and method not in att.inversion.methods):
        return out
    cfg = InversionConfig.from_scenario(att.inversion, seed=sc.seed)
    space = ImageSpace.of(train)
    picks = inversion_picks(sc, sd, forget_idx, cfg.images)
    x, y = train.tensors(picks, device)
    truth01 = _images(sd, picks)
    inv: dict[str, Any] = {}
    for target in targets:
        grid = plots_dir / f"inversion_{method}_{target}.png"
        if target == "global_model":
            grads = [
                observe_gradient(unlearned, x[i : i + 1], y[i : i + 1], bn_stats=cfg.bn_stats > 0)
                for i in range(len(picks))
            ]
            view = build_view(sc, sd, original, unlearned, forget_idx, forgotten, gradients=grads)
            truth = [truth01[i : i + 1] for i in range(len(picks))]
            labels = [y[i : i + 1].cpu() for i in range(len(picks))]
        elif target == "unlearning_update":
            obs = _requester_observation(observed)
            if obs is None:
                continue  # the requester sent no update in this method (it left, or the method is centralized)
            start = new_model()
            start.load_state_dict(obs["start"], strict=True)
            steps = max(1, min(5, int(obs["steps"])))
            upd = observe_update(
                start,
                x,
                y,
                steps=steps,
                lr=_replay_lr(obs),
                batch_size=len(picks),
                loss=_loss_name(str(obs["objective"]), obs.get("layer"), bool(obs.get("squared", False))),
                train_mode=obs.get("batch_norm", "batch") != "frozen",
            )
            view = build_view(sc, sd, original, unlearned, forget_idx, forgotten, updates=[upd])
            truth, labels = [truth01], [y.cpu()]
        elif target == "model_difference":
            view = build_view(sc, sd, original, unlearned, forget_idx, forgotten)
            pool = forget_idx[:512]
            truth, labels = [_images(sd, pool)], [torch.from_numpy(train.labels[pool])]
        else:
            continue
        res = run_inversion(view, target, cfg, truth, space, truth_labels=labels, device=device, grid_path=str(grid))
        res.pop("per_image", None)
        inv[target] = res
        log.info(
            "inversion %s/%s: PSNR %.2f dB (flat own-mean image %.2f dB)",
            method,
            target,
            res["psnr"],
            res["baseline_psnr"],
        )
    if inv:
        out["inversion"] = inv
    return out


def _requester_observation(observed: dict[str, Any] | None) -> dict[str, Any] | None:
    """The first recorded requester update (observations are keyed by request id)."""
    if not observed:
        return None
    for _, obs in sorted(observed.items()):
        if isinstance(obs, dict) and "start" in obs:
            return obs
    return None


def inversion_reference(
    sc, sd, init_model, original, forget_idx: np.ndarray, plots_dir: Path, device="cpu"
) -> dict[str, Any]:
    """The ``inversion_reference`` block: the ``global_model`` target on the untrained initial model
    (``untrained_global_model``) and on the original pretrained model (``original_global_model``, the calibration
    row with ``margin_db`` and ``informative``), on the forget images the methods are attacked on.
    """
    with torch_threads(1):
        untrained = global_model_inversion(
            sc, sd, init_model, forget_idx, plots_dir / "inversion_reference_untrained.png", device
        )
        orig = global_model_inversion(
            sc, sd, original, forget_idx, plots_dir / "inversion_reference_original.png", device
        )
    return {"untrained_global_model": untrained, "original_global_model": calibration(orig)}


def global_model_inversion(sc, sd, model, forget_idx, grid: Path, device, per_image: bool = False) -> dict[str, Any]:
    """The ``global_model`` target on ``model``'s single-image gradients of the forget images the methods are attacked
    on (``inversion_picks``); ``per_image`` keeps each image's row.
    """
    cfg = InversionConfig.from_scenario(sc.attacks.inversion, seed=sc.seed)
    picks = inversion_picks(sc, sd, forget_idx, cfg.images)
    x, y = sd.data.train.tensors(picks, device)
    grads = [observe_gradient(model, x[i : i + 1], y[i : i + 1], bn_stats=cfg.bn_stats > 0) for i in range(len(picks))]
    view = build_view(sc, sd, model, model, forget_idx, (), gradients=grads)
    truth01 = _images(sd, picks)
    res = run_inversion(
        view,
        "global_model",
        cfg,
        [truth01[i : i + 1] for i in range(len(picks))],
        ImageSpace.of(sd.data.train),
        truth_labels=[y[i : i + 1].cpu() for i in range(len(picks))],
        device=device,
        grid_path=str(grid),
    )
    if not per_image:
        res.pop("per_image", None)
    log.info(
        "inversion of the %s: PSNR %.2f dB (flat own-mean image %.2f dB)", grid.stem, res["psnr"], res["baseline_psnr"]
    )
    return res


def read_inversion_against_original(results: dict[str, Any]) -> None:
    """Give every method's inversion results (in ``results["methods"]``, in place) the calibration's ``informative``
    flag and, for ``global_model``, ``vs_original_db`` (see ``fed_opc.attacks.inversion.read_against``); nothing
    changes when ``results`` holds no ``inversion_reference.original_global_model``.
    """
    original = (results.get("inversion_reference") or {}).get("original_global_model")
    if original is None:
        return
    for block in results.get("methods", {}).values():
        inv = (block.get("attacks") or {}).get("inversion")
        for target, res in (inv or {}).items():
            inv[target] = read_against(res, original, target)
