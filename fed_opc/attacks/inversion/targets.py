"""Inversion targets: what each one takes from a ``ServerView`` as the observations to invert."""

from __future__ import annotations

from collections.abc import Sequence

from fed_opc.attacks.inversion.functional import _parts, _state
from fed_opc.attacks.inversion.settings import Config
from fed_opc.attacks.view import ObservedUpdate, ServerView

# ---------------------------------------------------------------------------------------------------------------------
# targets: ServerView -> observations to invert


def _first(observations: Sequence[ObservedUpdate], images: int, what: str) -> list[ObservedUpdate]:
    if not observations:
        raise ValueError(f"the ServerView holds no {what} to invert")
    out, total = [], 0
    for o in observations:
        if out and total + o.num_images > images:
            break
        out.append(o)
        total += o.num_images
    return out


def global_model_target(view: ServerView, cfg: Config) -> list[ObservedUpdate]:
    """Gradients of the final unlearned model on forget batches (``view.gradients``), up to ``cfg.images`` images."""
    return _first(view.gradients, cfg.images, "gradients of the unlearned model (ServerView.gradients)")


def unlearning_update_target(view: ServerView, cfg: Config) -> list[ObservedUpdate]:
    """The requester's unlearning update(s) (``view.updates``), up to ``cfg.images`` images."""
    return _first(view.updates, cfg.images, "unlearning updates (ServerView.updates)")


def model_difference_target(view: ServerView, cfg: Config) -> list[ObservedUpdate]:
    """The unlearned minus the original global model, read as one update of ``cfg.batch_size`` images at the
    original model (loss ``cfg.loss`` or ``ce``).
    """
    before = _state(view.original)
    after = dict(view.unlearned.named_parameters())
    names = _parts(view.original)
    return [
        ObservedUpdate(
            params_at=before,
            target={n: (after[n].detach() - before[n]).clone() for n in names},
            kind="update",
            num_images=cfg.batch_size,
            loss=cfg.loss or "ce",
        )
    ]
