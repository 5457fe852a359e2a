"""``relearn``: a few fine-tuning steps on retain data plus ``k_shot`` forget-class samples, scored per step budget.

The relearning attack on unlearned models (Hu et al., "Jogging the memory of unlearned models through targeted
relearning attacks", 2024; Lynch et al., "Eight methods to evaluate robust unlearning in LLMs", 2024): knowledge that
was hidden rather than removed comes back after a handful of steps on a few samples, much faster than it could be
learned from them. It trains a copy of the unlearned model with the project's one training loop (``train_loop``).
"""

from __future__ import annotations

import copy
import itertools
import math

import torch

from fed_opc.attacks.recovery import Config, RecoveryOutput, eval_call, kshot_samples
from fed_opc.attacks.view import ServerView
from fed_opc.losses import cross_entropy
from fed_opc.rng import numpy_rng
from fed_opc.train import OptimConfig, make_optimizer, supervised_batches, train_loop


def relearn(view: ServerView, cfg: Config, device: torch.device | str = "cpu") -> RecoveryOutput:
    """SGD on the attacker's k-shot set (forget-like and retain samples) from the unlearned model; one predictor per
    cumulative budget in ``cfg.relearn_steps``.
    """
    shots = kshot_samples(view, cfg)
    budgets = sorted(set(cfg.relearn_steps))
    model = copy.deepcopy(view.unlearned).to(device)
    optimizer = make_optimizer(model.parameters(), OptimConfig(lr=cfg.relearn_lr, momentum=cfg.relearn_momentum))
    epochs = math.ceil(budgets[-1] * cfg.relearn_batch_size / len(shots)) + 1
    stream = supervised_batches(
        shots.data, shots.idx, cfg.relearn_batch_size, epochs, numpy_rng(cfg.seed, "attack_relearn"), device
    )
    stages = []
    done = 0
    for budget in budgets:
        # islice, not train.limit: limit reads one batch past its end, which would drop a batch between budgets.
        train_loop(model, cross_entropy, itertools.islice(stream, budget - done), optimizer)
        done = budget
        snapshot = copy.deepcopy(model).eval()
        stages.append((budget, eval_call(snapshot, snapshot)))
    return RecoveryOutput(predict=stages[-1][1], stages=tuple(stages))
