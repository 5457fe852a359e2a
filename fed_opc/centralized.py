"""Run centralized unlearning methods from one pretrained model and measure each against the same ground truth.

Every method starts from the same pretrained weights, with its own generator derived from ``(seed, "unlearn/<name>")``,
so adding or removing a method never changes another's result. Retrain, when listed, runs first: its outputs are the
reference for every method's ``avg_gap`` and ``cka_vs_retrain``. Unlearning reads the training data through a
:class:`~fed_opc.data.forget.GuardedDataset` that forbids the forget indices, so a method that should not see them
(retrain, finetune, l1-sparse) fails loudly if it tries; methods that use forget samples read them through the guard's
explicit ``allow_forget`` view.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fed_opc.data.datasets import DatasetPair
from fed_opc.data.forget import GuardedDataset
from fed_opc.metrics import EvalSet, evaluate_methods, model_outputs
from fed_opc.models import FeatureModel
from fed_opc.rng import numpy_rng
from fed_opc.unlearning import CENTRALIZED, get_method
from fed_opc.unlearning.base import UnlearnData


@dataclass
class MethodRun:
    """One method's outcome: the results-contract fields plus the model and the method's own diagnostics."""

    name: str
    metrics: dict[str, float]
    cost: dict[str, int]
    model: FeatureModel
    diagnostics: dict[str, Any] = field(default_factory=dict)
    setting: str = "centralized"

    def to_json(self) -> dict[str, Any]:
        """The entry for ``results.json``'s ``methods`` block: setting, metrics, cost."""
        return {"setting": self.setting, "metrics": dict(self.metrics), "cost": dict(self.cost)}


def _timed(fn: Callable[[], Any], device: torch.device | str) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)  # kernels run asynchronously; the wall time must include them
    return out, time.perf_counter() - start


def run_centralized(
    pretrained: FeatureModel,
    data: DatasetPair,
    forget_idx: np.ndarray,
    retain_idx: np.ndarray,
    test_idx: np.ndarray | None,
    methods: Sequence[str],
    params: Mapping[str, Any] | None = None,
    *,
    seed: int,
    device: torch.device | str,
    forgotten_classes: Sequence[int] = (),
    max_eval_retain: int = 5000,
    log: Callable[[str], None] | None = None,
) -> dict[str, MethodRun]:
    """Unlearn with each of ``methods`` from ``pretrained`` and evaluate the results.

    Parameters
    ----------
    pretrained : the model to unlearn from (not modified).
    data : training and test arrays.
    forget_idx, retain_idx : indices into ``data.train``.
    test_idx : indices into ``data.test`` for TA and the MIA; ``None`` means all.
    methods : names registered in ``fed_opc.unlearning.CENTRALIZED``, run in this order except that ``retrain`` runs
        first.
    params : method name -> its ``Config``; a method without an entry uses its defaults.
    seed : the run's seed; method ``m`` draws from ``numpy_rng(seed, "unlearn/m")``.
    device : where to train and evaluate.
    forgotten_classes : the classes removed everywhere (class scope): TA and the MIA's non-members leave them out,
        as SalUn does, and ``TA_forgotten_classes`` measures them.
    max_eval_retain : retain samples evaluated (a seeded subsample).
    log : called with one line per finished method.

    Returns
    -------
    method name -> :class:`MethodRun`, in run order. ``metrics["RTE_s"]`` is the wall time of the unlearning call.

    """
    params = dict(params or {})
    for name in methods:
        spec = get_method(name)
        if name not in CENTRALIZED:
            raise KeyError(f"{name!r} is a {spec.setting} method; centralized: {', '.join(sorted(CENTRALIZED))}")
    unknown = sorted(set(params) - set(methods))
    if unknown:
        raise KeyError(f"params given for methods not run: {', '.join(unknown)}")
    order = (["retrain"] if "retrain" in methods else []) + [m for m in methods if m != "retrain"]

    forget_idx = np.asarray(forget_idx, dtype=np.int64)
    guarded = GuardedDataset(data.train, forbidden=forget_idx)
    udata = UnlearnData(guarded, forget_idx, np.asarray(retain_idx, dtype=np.int64))
    ev = EvalSet.make(
        data.train,
        data.test,
        forget_idx,
        retain_idx,
        test_idx,
        seed=seed,
        forgotten_classes=forgotten_classes,
        max_retain=max_eval_retain,
    )
    original = model_outputs(pretrained, ev, device=device)

    results, walls = {}, {}
    for name in order:
        spec = CENTRALIZED[name]
        cfg = params.get(name) or spec.config()
        if not isinstance(cfg, spec.config):
            raise TypeError(f"params[{name!r}] must be a {spec.config.__module__}.Config, got {type(cfg).__name__}")
        gen = numpy_rng(seed, f"unlearn/{name}")
        results[name], walls[name] = _timed(
            lambda: spec.fn(pretrained, udata, cfg, generator=gen, device=device),  # noqa: B023
            device,
        )
    metrics_of = evaluate_methods(
        {name: model_outputs(res.model, ev, device=device) for name, res in results.items()},
        {name: res.model.head.weight for name, res in results.items()},
        ev,
        original=original,
        reference="retrain" if "retrain" in results else None,
    )
    runs: dict[str, MethodRun] = {}
    for name, res in results.items():
        metrics = {"RTE_s": walls[name]} | metrics_of[name]
        runs[name] = MethodRun(
            name=name,
            metrics=metrics,
            cost={"rounds": 0, "client_samples": int(res.samples)},
            model=res.model,
            diagnostics=dict(res.diagnostics),
        )
        if log is not None:
            log(f"{name}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in metrics.items()))
    return runs


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
