"""Attacks on unlearned models: a registry of recovery attacks and of gradient-inversion targets.

Attacks see only a ``ServerView`` (what an honest-but-curious server or model holder has); ground truth is used by the
metrics alone. A recovery attack is ``fn(view, cfg: recovery.Config, device) -> RecoveryOutput``; an inversion target is
``fn(view, cfg: inversion.Config) -> list[ObservedUpdate]``. Adding one is one function and one line below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fed_opc.attacks.feature_mapping import feature_mapping
from fed_opc.attacks.head_refit import head_refit
from fed_opc.attacks.inversion import (
    global_model_target,
    model_difference_target,
    run_inversion,
    unlearning_update_target,
)
from fed_opc.attacks.kshot import forget_probe, probe, prototype
from fed_opc.attacks.recovery import NotApplicable, RecoveryOutput, run_recovery, score
from fed_opc.attacks.relearn import relearn
from fed_opc.attacks.view import AttackerSamples, ObservedUpdate, SampleSet, ServerView

RECOVERY: dict[str, Callable[..., Any]] = {
    "fm": feature_mapping,
    "hr": head_refit,
    "probe": probe,
    "forget_probe": forget_probe,
    "prototype": prototype,
    "relearn": relearn,
}
INVERSION_TARGETS: dict[str, Callable[..., Any]] = {
    "global_model": global_model_target,
    "unlearning_update": unlearning_update_target,
    "model_difference": model_difference_target,
}

__all__ = [
    "INVERSION_TARGETS",
    "RECOVERY",
    "AttackerSamples",
    "NotApplicable",
    "ObservedUpdate",
    "RecoveryOutput",
    "SampleSet",
    "ServerView",
    "run_inversion",
    "run_recovery",
    "score",
]
