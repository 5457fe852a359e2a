"""OPC variants judged by the recovery attacks, on a run's pretrained model.

Loads a finished (or pretrained) run's ``checkpoints/pretrain.ckpt`` and its scenario, takes the scenario's first
request as the forget set, and for each OPC variant runs centralized OPC from the pretrained model, then the recovery
attacks of the run (``fm``, ``hr``, ``probe``, ``prototype`` by default) exactly as the run's attack stage does
(``strategies.attack_run.build_view``: the same calibration half of the test set and the same attacker pool). Prints
normalised recovery per attack, TA on the retained classes, the forget/retain feature-norm ratio and the collapse flag.

A variant is ``lambda:epochs[:key=value,...]`` with keys ``contraction`` (``absolute``: OPC's ``lambda * mean
||h_f||``; ``relative``: the same term divided by the batch's mean retain norm, so scaling every feature earns
nothing), ``bn`` (``batch``: retain and forget in one train-mode pass, the default; ``frozen``: batch-norm layers in
eval mode, so the model trained is the model evaluated), ``layer``, ``squared``, ``lr`` (SGD step, default OPC's
0.01), ``head`` (``frozen``: the linear head keeps the original weights, so the head cannot grow to make up for
features shrunk everywhere) and ``stop`` (end once the forget / retain feature-norm ratio, measured in eval mode on 256 + 256 samples every 25
steps, is at most this) and ``spread`` (adds this times the forget features' mean distance to their batch mean,
divided by their mean norm: the forget batch's relative spread, which a shrinking norm alone leaves intact).

Example (the paper protocol's run directory after pretraining)::

    .venv/bin/python benchmarks/opc_depth.py runs/paper --variants 0.3:1 1:1:contraction=relative
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from opc_front import metric_columns

from fed_opc.attacks import SampleSet, run_recovery
from fed_opc.checkpoint import load_checkpoint
from fed_opc.config import load_scenario
from fed_opc.data.scenario_data import prepare
from fed_opc.losses import opc_forget_term, representation
from fed_opc.metrics import EvalSet, evaluate_outputs, model_outputs
from fed_opc.models import new_model
from fed_opc.rng import numpy_rng
from fed_opc.threads import torch_threads
from fed_opc.train import freeze_batch_norm, train_loop
from fed_opc.unlearning import get_method, opc
from fed_opc.unlearning.base import UnlearnData, optimizer_for, paired_stream, working_copy
from strategies.attack_run import build_view


@dataclasses.dataclass(frozen=True)
class Variant:
    lambda_: float
    epochs: float
    contraction: str = "absolute"
    bn: str = "batch"
    layer: str = "penultimate"
    squared: bool = False
    stop: float = 0.0
    lr: float = 0.01
    head: str = "trained"
    spread: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Variant:
        lam, ep, *rest = text.split(":")
        kw: dict[str, object] = {}
        for item in ",".join(rest).split(",") if rest else []:
            k, v = item.split("=")
            kw[k] = v == "true" if k == "squared" else float(v) if k in ("stop", "lr", "spread") else v
        return cls(float(lam), float(ep), **kw)

    def label(self) -> str:
        return (
            f"lambda {self.lambda_:g}, {self.epochs:g} ep, {self.contraction}, bn {self.bn}, {self.layer}"
            + (", squared" if self.squared else "")
            + (f", stop at ratio {self.stop:g}" if self.stop else "")
            + (f", lr {self.lr:g}" if self.lr != 0.01 else "")
            + (", head frozen" if self.head == "frozen" else "")
            + (f", spread {self.spread:g}" if self.spread else "")
        )


def variant_loss(v: Variant):
    def loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        n_r = batch["x"].shape[0]
        h, logits = representation(model, torch.cat([batch["x"], batch["x_forget"]]), v.layer)
        term = opc_forget_term(h[n_r:], v.squared)
        if v.contraction == "relative":
            ref = h[:n_r].norm(dim=1).mean()
            term = term / (ref**2 if v.squared else ref).clamp_min(1e-6)
        if v.spread:
            # the forget features' spread around their batch mean, relative to their size: what is left of their
            # geometry once they are small, and what an affine read-out (fm, hr) could rescale
            hf = h[n_r:]
            spread = (hf - hf.mean(0, keepdim=True)).norm(dim=1).mean() / hf.norm(dim=1).mean().clamp_min(1e-3)
            term = term + v.spread * spread
        return F.cross_entropy(logits[:n_r], batch["y"]) + v.lambda_ * term

    return loss


def per_class_accuracy(logits: torch.Tensor, labels: np.ndarray) -> list[float]:
    pred = logits.argmax(1).numpy()
    return [round(float((pred[labels == c] == c).mean()), 3) for c in np.unique(labels)]


def probe_images(ds, idx: np.ndarray) -> torch.Tensor:
    return ds.tensors(np.sort(idx))[0]


def run_variant(pre, data: UnlearnData, v: Variant, seed: int):
    cfg = opc.Config()
    student = working_copy(pre, "cpu")
    batches = paired_stream(
        data,
        batch_size=cfg.batch_size,
        forget_batch_size=cfg.forget_batch_size,
        epochs=v.epochs,
        generator=numpy_rng(seed, "unlearn/opc"),
        device="cpu",
    )
    frozen = v.bn == "frozen"  # batch norm on its running statistics during the steps
    if v.head == "frozen":
        student.head.requires_grad_(False)
    opt = optimizer_for(student, v.lr, cfg.momentum, cfg.weight_decay)
    probe = numpy_rng(seed, "bench/probe")
    xf = probe_images(data.forget_source, probe.choice(data.forget_idx, 256, replace=False))
    xr = probe_images(data.train, probe.choice(data.retain_idx, 256, replace=False))
    ratios: list[tuple[int, float]] = []

    def should_stop(stats) -> bool:
        if not v.stop or stats.steps % 25:
            return False
        student.eval()
        with torch.no_grad():
            r = float(student.features(xf).norm(dim=1).mean() / student.features(xr).norm(dim=1).mean().clamp_min(1e-9))
        student.train()
        if frozen:
            freeze_batch_norm(student)
        ratios.append((stats.steps, r))
        return r <= v.stop

    stats = train_loop(student, variant_loss(v), batches, opt, should_stop=should_stop, frozen_batch_norm=frozen)
    print(f"  steps {stats.steps} ratios {[(n, round(r, 3)) for n, r in ratios]}", flush=True)
    student.head.requires_grad_(True)
    return student.eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a run directory holding scenario.yaml and checkpoints/pretrain.ckpt")
    p.add_argument("--variants", nargs="+", default=["0.3:1"])
    p.add_argument("--methods", nargs="*", default=[], help="centralized methods to run as references first")
    p.add_argument("--attacks", nargs="+", default=["fm", "hr", "probe", "prototype"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    sc = load_scenario(args.run / "scenario.yaml")
    sd = prepare(sc)
    pre = new_model(sc, sd)
    pre.load_state_dict(load_checkpoint(args.run / "checkpoints" / "pretrain.ckpt")["state"])
    pre.eval()
    split = sd.requests[0]
    forgotten = tuple(split.classes)
    data = UnlearnData(sd.data.train, split.forget, split.retain)
    ev = EvalSet.make(
        sd.data.train, sd.data.test, split.forget, split.retain, sd.test_idx, seed=sc.seed, forgotten_classes=forgotten
    )
    forget = SampleSet(sd.data.train, split.forget)
    orig_out = model_outputs(pre, ev, device="cpu")
    orig_met = evaluate_outputs(orig_out, ev, head_weight=pre.head.weight.detach())
    rows = [
        {
            "variant": "original",
            "TA": orig_met["TA"],
            "UA": orig_met["UA"],
            "forget_norm": orig_met["forget_feature_norm"],
            "retain_norm": orig_met["retain_feature_norm"],
            "TA_per_class": per_class_accuracy(orig_out.test_logits, sd.data.test.labels[ev.test_idx]),
        }
    ]
    print(json.dumps(rows[0]), flush=True)
    jobs: list[str | Variant] = list(args.methods) + [Variant.parse(t) for t in args.variants]
    for v in jobs:
        t0 = time.perf_counter()
        with torch_threads(args.threads):
            if isinstance(v, str):
                spec = get_method(v)
                cfg = sc.unlearning.params.get(v) or spec.config()
                model = spec.fn(pre, data, cfg, generator=numpy_rng(sc.seed, f"unlearn/{v}"), device="cpu").model
                model.eval()
            else:
                model = run_variant(pre, data, v, sc.seed)
        wall = time.perf_counter() - t0
        outs = model_outputs(model, ev, device="cpu")
        met = evaluate_outputs(outs, ev, head_weight=model.head.weight.detach(), original=orig_out)
        with torch_threads(1):
            rec = run_recovery(
                build_view(sc, sd, pre, model, split.forget, forgotten),
                args.attacks,
                forget,
                k_shot=sc.attacks.k_shot,
                seed=sc.seed,
            )
        row = {
            "variant": v if isinstance(v, str) else v.label(),
            "wall_s": round(wall, 1),
            **metric_columns(met),
            **{f"{a}_rec": rec[a].get("recovery") for a in args.attacks if a in rec},
            "acc_original": rec["acc_original"],
            "TA_per_class": per_class_accuracy(outs.test_logits, sd.data.test.labels[ev.test_idx]),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
