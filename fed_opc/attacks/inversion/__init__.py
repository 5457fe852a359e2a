"""Gradient inversion: reconstruct forget images from what the server observed.

The attack is Inverting Gradients (Geiping et al., "Inverting Gradients -- How easy is it to break privacy in federated
learning?", NeurIPS 2020): find images whose gradient has the highest cosine similarity with the observed one, summed
over all parameters, plus a total-variation prior; Adam on the sign of the image gradient, learning rate 0.1 decayed
x0.1 at 3/8, 5/8 and 7/8 of the iterations, images clamped to the valid range at every step, a start close to the mean
colour, several restarts whose images are averaged (``Config.combine``: the fusion of Yin et al., "See through
gradients", CVPR 2021; or the best gradient match alone, as Geiping et al. keep). Labels are given or inferred from
the last-layer bias gradient as in iDLG (Zhao et al., "iDLG: Improved deep leakage from gradients", 2020; extended to
a batch by reading every negative entry). A multi-step local update is inverted by replaying its SGD steps
differentiably from the model state it started at, as Geiping et al. do for FedAvg updates (Section 6); it can also be
treated as one gradient.

Three targets (``INVERSION_TARGETS``), each read from a ``ServerView``:
``global_model`` (gradients of the final unlearned model on forget batches), ``unlearning_update`` (the update the
requester sent while unlearning) and ``model_difference`` (the global model after minus before unlearning, read as a
negative, scaled gradient; cosine matching ignores the scale). :func:`observe_gradient` and :func:`observe_update`
simulate the client that produces an observation (they hold the images, as that client does); :func:`invert` and
:func:`invert_many` (all observations and restarts optimised as one batch of independent problems) see only the
observations; :func:`run_inversion` scores reconstructions against the true images and both flat baselines (each
image's own mean colour, and the dataset-mean colour). :func:`calibration` marks the attack's result on the original
model ``informative`` when it beats the own-mean flat image by ``INFORMATIVE_MARGIN_DB``; :func:`read_against` reads a
method's result against it. Optional stronger threat models: the gradient computed in train mode, and the batch's
batch-norm statistics known to the attacker (``bn_stats``; Huang et al., NeurIPS 2021).
"""

from fed_opc.attacks.inversion.functional import BN_MEAN, BN_VAR, LABELLED, LOSSES
from fed_opc.attacks.inversion.labels import infer_labels
from fed_opc.attacks.inversion.observe import observe_gradient, observe_update
from fed_opc.attacks.inversion.reconstruct import (
    Inversion,
    bn_costs,
    combine_restarts,
    cosine_cost,
    cosine_costs,
    invert,
    invert_many,
    total_variation,
    total_variations,
)
from fed_opc.attacks.inversion.score import INFORMATIVE_MARGIN_DB, calibration, read_against, run_inversion
from fed_opc.attacks.inversion.settings import Config, ImageSpace
from fed_opc.attacks.inversion.targets import global_model_target, model_difference_target, unlearning_update_target
from fed_opc.attacks.inversion.trial import trial_quantity

__all__ = [
    "BN_MEAN",
    "BN_VAR",
    "INFORMATIVE_MARGIN_DB",
    "LABELLED",
    "LOSSES",
    "Config",
    "ImageSpace",
    "Inversion",
    "bn_costs",
    "calibration",
    "combine_restarts",
    "cosine_cost",
    "cosine_costs",
    "global_model_target",
    "infer_labels",
    "invert",
    "invert_many",
    "model_difference_target",
    "observe_gradient",
    "observe_update",
    "read_against",
    "run_inversion",
    "total_variation",
    "total_variations",
    "trial_quantity",
    "unlearning_update_target",
]
