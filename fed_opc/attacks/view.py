"""What an attacker sees: the ``ServerView`` of an honest-but-curious server or model holder.

The threat model follows the folder layout of breaching (Geiping et al., "Inverting Gradients -- How easy is it to break
privacy in federated learning?", NeurIPS 2020, and its successor library): the attacker holds the models it served,
the messages it received, and data it owns itself, never the requester's forget set. Every attack in this package
takes a ``ServerView`` and nothing else that is secret; the forget set and its labels reach only the scoring functions.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True, eq=False)
class SampleSet:
    """Samples of a dataset by index: ``data`` is an ``ArrayDataset`` (or a guarded view of one), ``idx`` an index array.

    The labels are ``data.labels[idx]``; whether the holder may read them is a matter of who holds the set (the
    attacker's own samples are labelled, the scored forget set is ground truth).
    """

    data: object
    idx: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "idx", np.asarray(self.idx, dtype=np.int64).reshape(-1))

    def __len__(self) -> int:
        return len(self.idx)

    @property
    def labels(self) -> np.ndarray:
        """The samples' labels, ``data.labels[idx]``."""
        return np.asarray(self.data.labels)[self.idx]

    def tensors(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images (N, C, H, W) and labels of every sample, on ``device``."""
        return self.data.tensors(self.idx, device)


@dataclass(frozen=True, eq=False)
class AttackerSamples:
    """Labelled samples the attacker holds itself, for the k-shot attacks (``probe``, ``prototype``, ``relearn``).

    They model an attacker who owns a few labelled examples of what was forgotten (for a class deletion: of each
    forgotten class; otherwise: samples from the requester's distribution) plus ordinary retain-like data. They must
    not be the scored forget samples themselves: held-out samples (e.g. test images of the forgotten classes) serve.

    Attributes
    ----------
    data : the dataset the indices refer to.
    forget_idx : labelled samples like the forgotten data; an attack takes up to ``k_shot`` of each class.
    retain_idx : labelled retain-like samples; an attack takes up to ``k_shot`` of each class.

    """

    data: object
    forget_idx: np.ndarray
    retain_idx: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "forget_idx", np.asarray(self.forget_idx, dtype=np.int64).reshape(-1))
        object.__setattr__(self, "retain_idx", np.asarray(self.retain_idx, dtype=np.int64).reshape(-1))


@dataclass(frozen=True, eq=False)
class ObservedUpdate:
    """A gradient or a parameter update the server received, with the public facts needed to invert it.

    Attributes
    ----------
    params_at : the model's state dict at which it was computed (the global model the server sent).
    target : per parameter name, the gradient (``kind == "gradient"``) or ``theta_after - theta_before``
        (``kind == "update"``). Only parameters are matched; buffers may be absent.
    kind : ``"gradient"`` or ``"update"``.
    num_images : how many samples went into it (the attacker is assumed to know the batch size, as in Geiping et al.).
    local_steps, lr, batch_size : how an update was computed (plain SGD steps over consecutive chunks of the samples),
        so that it can be replayed; ``lr`` may be None for an update treated as a single (scaled) gradient.
    loss : name in ``fed_opc.attacks.inversion.LOSSES`` of the loss the samples were used in (``ce`` for ordinary
        training; ``ascent`` for gradient ascent; ``feature_norm`` / ``logit_norm`` for OPC's contraction term).
    labels : the samples' labels when they are public (e.g. the classes named by a class-deletion request), else None.
    train_mode : whether the model ran in train mode (matters only for batch norm).

    """

    params_at: Mapping[str, torch.Tensor]
    target: Mapping[str, torch.Tensor]
    kind: str
    num_images: int
    local_steps: int = 1
    lr: float | None = None
    batch_size: int | None = None
    loss: str = "ce"
    labels: torch.Tensor | None = None
    train_mode: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("gradient", "update"):
            raise ValueError(f"ObservedUpdate.kind must be 'gradient' or 'update', got {self.kind!r}")
        if self.num_images < 1 or self.local_steps < 1:
            raise ValueError(
                f"ObservedUpdate needs num_images >= 1 and local_steps >= 1, got {self.num_images}, {self.local_steps}"
            )
        if self.kind == "gradient" and self.local_steps != 1:
            raise ValueError("a gradient has local_steps == 1; a multi-step observation is an update")


@dataclass(frozen=True, eq=False)
class ServerView:
    """Everything an honest-but-curious server (or model holder) has after an unlearning request was served.

    Attributes
    ----------
    original : the global model before unlearning (a ``FeatureModel``: ``features`` and a linear ``head``).
    unlearned : the global model after unlearning.
    calibration : data the server may hold that contains no forget sample, ideally public data of every class (e.g.
        a test split); the training-free attacks (``fm``, ``hr``) fit on it, unlabelled. ``hr`` can only predict the
        classes the original model predicts on it.
    forgotten_classes : the classes named by a class-deletion request (public: the request names them); empty for a
        client or sample deletion.
    aux : labelled samples the attacker owns, for the k-shot attacks; None when it holds none.
    updates : the requester's unlearning update(s) as received (inversion target ``unlearning_update``).
    gradients : gradients of the unlearned global model on forget batches, as a client would send them in a later
        round (inversion target ``global_model``); the attacker gets the gradients, not the images.
    original_features : the original model's penultimate features of ``calibration`` (N, D), when the server has
        computed them already (they are the same for every method's view); None: computed on first use.

    The models' features of ``calibration`` are computed once per view and shared by the attacks that read them
    (:meth:`calibration_features`).

    """

    original: nn.Module
    unlearned: nn.Module
    calibration: SampleSet
    forgotten_classes: tuple[int, ...] = ()
    aux: AttackerSamples | None = None
    updates: tuple[ObservedUpdate, ...] = field(default=())
    gradients: tuple[ObservedUpdate, ...] = field(default=())
    original_features: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        memo: dict[str, torch.Tensor] = {}
        if self.original_features is not None:
            if len(self.original_features) != len(self.calibration):
                raise ValueError(
                    f"ServerView.original_features has {len(self.original_features)} rows for "
                    f"{len(self.calibration)} calibration samples"
                )
            memo["original"] = self.original_features
        object.__setattr__(self, "_features", memo)
        object.__setattr__(self, "_lock", threading.Lock())
        object.__setattr__(self, "forgotten_classes", tuple(int(c) for c in self.forgotten_classes))
        object.__setattr__(self, "updates", tuple(self.updates))
        object.__setattr__(self, "gradients", tuple(self.gradients))
        if len(set(self.forgotten_classes)) != len(self.forgotten_classes):
            raise ValueError(f"ServerView.forgotten_classes has a duplicate: {self.forgotten_classes}")
        if len(self.calibration) == 0:
            raise ValueError("ServerView.calibration is empty")

    @property
    def num_classes(self) -> int:
        """Number of classes: the output size of the original model's head."""
        return int(self.original.head.out_features)

    def calibration_features(self, which: str, compute: Callable[[nn.Module, SampleSet], torch.Tensor]) -> torch.Tensor:
        """The ``original`` or ``unlearned`` model's penultimate features of ``calibration``: ``compute(model,
        calibration)`` on first use, then the same tensor (treat it as read-only).
        """
        if which not in ("original", "unlearned"):
            raise ValueError(f"which must be 'original' or 'unlearned', got {which!r}")
        with self._lock:
            if which not in self._features:
                self._features[which] = compute(getattr(self, which), self.calibration)
            return self._features[which]
