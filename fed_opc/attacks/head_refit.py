"""``hr``: training-free head re-fit on frozen unlearned features.

A multinomial logistic head is fitted on the unlearned model's calibration features (no forget sample), with the
original model's predicted labels as targets, and classifies forget samples; no network weight is trained. It is a
linear probe (Alain & Bengio, ICLR workshop 2017) supervised by the original model instead of by labels. A ridge fit to
the original logits would add nothing: with a linear original head it reproduces ``fm``'s predictions exactly.
The head can only output classes that the original model predicts on the calibration data, so that data should hold
(non-forget) samples of the forgotten classes, e.g. a public test split.
"""

from __future__ import annotations

import torch

from fed_opc.attacks.recovery import (
    Config,
    RecoveryOutput,
    calibration_features,
    eval_call,
    fit_logistic,
    frozen_readout,
    placed,
    scores_from_features,
)
from fed_opc.attacks.view import ServerView


def head_refit(view: ServerView, cfg: Config, device: torch.device | str = "cpu") -> RecoveryOutput:
    """Logistic head from unlearned calibration features to the original model's predictions."""
    original, unlearned = placed(view.original, device), placed(view.unlearned, device)
    # the original model's predictions: its head on its calibration features (shared with fm), chunk by chunk as
    # running the model on the images would compute them
    original_feats = calibration_features(view, "original", device)
    targets = scores_from_features(eval_call(original, original.head), original_feats, device).argmax(1).numpy()
    head = fit_logistic(calibration_features(view, "unlearned", device), targets, view.num_classes, cfg.logistic_c)
    return frozen_readout(unlearned, head, restrict_to=view.forgotten_classes)
