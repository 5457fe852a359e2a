"""Sweep OPC's hyperparameters on a centrally pretrained model and print the trade-off table.

For each forget set (a list of classes) and each (layer, squared, lambda), OPC runs for ``--max-epochs`` epochs and is
evaluated after every epoch (epoch e continues from epoch e-1's model; the optimiser's momentum restarts between
epochs, which is the only difference from one run of e epochs). The pretrained model and one retrain reference per
forget set are trained with the retrain recipe and cached under ``--cache-dir``, so a rerun reuses them.

To fit a 2-core CPU budget, OPC trains on a seeded subsample of ``--retain-subsample`` retain samples (all forget
samples stay), so a sweep "epoch" is a pass over that subsample, and metrics are computed on seeded subsamples of the
forget, retain and test sets (``--eval-*``). The retrain reference uses the whole retain set.

Every row holds UA, RA, TA, TA on retained classes, MIA, the forget/retain feature-norm ratio, CKA vs the original and
vs retrain, the null-space share, collapse diagnostics and the wall time. A proxy, not the attacks: the recovery
attacks (feature mapping, probes) are the real test of whether forgotten classes can be read back.

Example::

    .venv/bin/python benchmarks/opc_sweep.py --dataset cifar10 --out runs/bench/opc_sweep_cifar10.json
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from fed_opc.data.datasets import DatasetPair, load_dataset
from fed_opc.metrics import EvalSet, Outputs, accuracy_from_logits, evaluate_outputs, is_collapsed, model_outputs
from fed_opc.models import FeatureModel, build_model
from fed_opc.rng import numpy_rng, torch_rng
from fed_opc.unlearning import opc, retrain
from fed_opc.unlearning.base import UnlearnData

DATA_ROOT = "/work/shared/data"


def load(name: str) -> DatasetPair:
    if name == "cifar10":
        return load_dataset("cifar10", DATA_ROOT, checksums="cifar10-offline-rebuild")
    if name == "mnist":
        return load_dataset("mnist", DATA_ROOT)
    if name == "synthetic":
        return load_dataset("synthetic", synthetic=(0, 2000, 500, 10, 16, 3, 0.25))
    raise ValueError(name)


def fresh_model(data: DatasetPair, norm: str, width: int, seed: int) -> FeatureModel:
    c = data.train.image_shape[0]
    return build_model(
        "small_cnn", data.train.num_classes, c, generator=torch_rng(seed, "bench/init"), norm=norm, width=width
    )


def cached_train(
    key: str,
    cache: Path,
    model: FeatureModel,
    data: DatasetPair,
    retain_idx: np.ndarray,
    cfg: retrain.Config,
    seed: int,
) -> tuple[FeatureModel, float]:
    """Train ``model``'s architecture from scratch on ``retain_idx`` (the retrain recipe), cached by ``key``."""
    path = cache / (hashlib.sha256(key.encode()).hexdigest()[:16] + ".pt")
    if path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=True)
        m = fresh_model_like(model)
        m.load_state_dict(state["model"], strict=True)
        return m, float(state["wall_s"])
    t0 = time.perf_counter()
    res = retrain.unlearn(
        model,
        UnlearnData(data.train, np.zeros(0, dtype=np.int64), retain_idx),
        cfg,
        generator=numpy_rng(seed, f"bench/{key}"),
        device="cpu",
    )
    wall = time.perf_counter() - t0
    cache.mkdir(parents=True, exist_ok=True)
    torch.save({"model": res.model.state_dict(), "wall_s": wall, "key": key}, path)
    return res.model, wall


def subsample(idx: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return idx if len(idx) <= n else np.sort(rng.choice(idx, size=n, replace=False))


def fresh_model_like(model: FeatureModel) -> FeatureModel:
    import copy

    return copy.deepcopy(model)


def row_metrics(
    model: FeatureModel, ev: EvalSet, original: Outputs, ref: Outputs, ref_metrics: dict, classes: tuple[int, ...]
) -> dict:
    out = model_outputs(model, ev, device="cpu")
    m = evaluate_outputs(
        out, ev, head_weight=model.head.weight, original=original, retrain=ref, retrain_metrics=ref_metrics
    )
    y_t = ev.test.labels[ev.test_idx]
    keep = torch.from_numpy(~np.isin(y_t, classes))
    m["TA_retained_classes"] = accuracy_from_logits(out.test_logits[keep], torch.from_numpy(y_t)[keep])
    m["norm_ratio"] = (
        m["forget_feature_norm"] / m["retain_feature_norm"] if m["retain_feature_norm"] > 0 else float("inf")
    )
    return m


COLUMNS = [
    ("UA", "UA"),
    ("RA", "RA"),
    ("TA", "TA"),
    ("TA_retained_classes", "TA_ret"),
    ("MIA", "MIA"),
    ("norm_ratio", "f/r norm"),
    ("retain_feature_norm", "r norm"),
    ("cka_vs_original", "CKA orig"),
    ("cka_vs_retrain", "CKA retr"),
    ("nullspace_share", "null"),
    ("dead_units_share", "dead"),
    ("n_predicted_classes", "#pred"),
    ("collapsed", "coll"),
    ("RTE_s", "RTE_s"),
]


def fmt_row(prefix: str, m: dict) -> str:
    cells = []
    for key, _ in COLUMNS:
        v = m.get(key)
        cells.append("-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v)))
    return prefix + " | " + " | ".join(cells)


def markdown(rows: list[dict]) -> str:
    """The rows of one or more sweep JSON files as one markdown table."""
    keys = ["UA", "RA", "TA_retained_classes", "MIA", "norm_ratio", "cka_vs_original", "cka_vs_retrain"]
    keys += ["nullspace_share", "dead_units_share", "n_predicted_classes", "collapsed"]
    head = ["norm", "forget", "method", "layer", "sq", "lambda", "ep"] + keys
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    # the collapse flag is recomputed with the current rule, so files written under an older rule read the same
    original_ra = {(r["norm"], r["forget"]): r["RA"] for r in rows if r["method"] == "original"}
    for r in rows:
        if "n_predicted_classes" in r:
            retained = 10 - len(r["forget"].split(","))
            ra0 = original_ra.get((r["norm"], r["forget"]))
            r = r | {
                "collapsed": int(is_collapsed(r["n_predicted_classes"], r["dead_units_share"], retained, r["RA"], ra0))
            }
        cells = [str(r.get(k, "")) for k in ("norm", "forget", "method", "layer", "squared", "lambda", "epochs")]
        for k in keys:
            v = r.get(k)
            cells.append("-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v)))
        if r.get("diverged"):
            cells[len(head) - len(keys)] = "diverged (nan loss)"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="cifar10", choices=["cifar10", "mnist", "synthetic"])
    p.add_argument("--norm", default="none", choices=["none", "batch", "group"])
    p.add_argument("--width", type=int, default=0)
    p.add_argument("--pretrain-epochs", type=float, default=5.0)
    p.add_argument("--forget", nargs="+", default=["0", "0,1,2"], help="forget sets, comma-separated classes")
    p.add_argument("--lambdas", nargs="+", type=float, default=[0.1, 0.3, 1.0, 3.0])
    p.add_argument("--layers", nargs="+", default=["penultimate", "logits"])
    p.add_argument("--squared", nargs="+", default=["off", "on"], choices=["off", "on"])
    p.add_argument("--max-epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--forget-batch-size", type=int, default=64)
    p.add_argument(
        "--retain-subsample",
        type=int,
        default=20000,
        help="OPC trains on a seeded subsample of this many retain samples (0: all); an epoch is a pass over it",
    )
    p.add_argument("--eval-forget", type=int, default=3000, help="forget samples evaluated (seeded subsample)")
    p.add_argument("--eval-retain", type=int, default=3000, help="retain samples evaluated (seeded subsample)")
    p.add_argument("--eval-test", type=int, default=5000, help="test samples evaluated (seeded subsample)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "fed_opc" / "bench"))
    p.add_argument("--out", default=None, help="JSON file for all rows")
    p.add_argument("--render", nargs="+", default=None, help="only print these sweep JSON files as a markdown table")
    args = p.parse_args()
    if args.render:
        print(markdown([r for f in args.render for r in json.loads(Path(f).read_text())["rows"]]))
        return
    torch.set_num_threads(args.threads)
    cache = Path(args.cache_dir)

    data = load(args.dataset)
    template = fresh_model(data, args.norm, args.width, args.seed)
    recipe = retrain.Config(epochs=args.pretrain_epochs)
    arch_key = f"{args.dataset}|small_cnn|{args.norm}|{args.width}|{dataclasses.astuple(recipe)}|{args.seed}"
    all_idx = np.arange(len(data.train), dtype=np.int64)
    pre, pre_wall = cached_train(f"pretrain|{arch_key}", cache, template, data, all_idx, recipe, args.seed)
    ev_all = EvalSet.make(data.train, data.test, all_idx[:0], all_idx, None, seed=args.seed)
    pre_out = model_outputs(pre, ev_all, device="cpu")
    pre_ta = accuracy_from_logits(pre_out.test_logits, data.test.labels)
    print(
        f"pretrained {args.dataset} small_cnn norm={args.norm}: TA={pre_ta:.3f} (trained in {pre_wall:.0f} s)",
        flush=True,
    )

    rows: list[dict] = []
    header = "forget | layer | sq | lambda | ep | " + " | ".join(h for _, h in COLUMNS)
    for spec in args.forget:
        classes = tuple(int(c) for c in spec.split(","))
        is_f = np.isin(data.train.labels, classes)
        forget_idx, retain_idx = np.flatnonzero(is_f), np.flatnonzero(~is_f)
        sub = numpy_rng(args.seed, f"bench/subsample/{spec}")
        ev_forget = subsample(forget_idx, args.eval_forget, sub)
        ev_test = subsample(np.arange(len(data.test)), args.eval_test, sub)
        ev = EvalSet.make(
            data.train,
            data.test,
            ev_forget,
            retain_idx,
            ev_test,
            seed=args.seed,
            forgotten_classes=classes,
            max_retain=args.eval_retain,
        )
        ref, ref_wall = cached_train(f"retrain|{spec}|{arch_key}", cache, template, data, retain_idx, recipe, args.seed)
        original = model_outputs(pre, ev, device="cpu")
        ref_out = model_outputs(ref, ev, device="cpu")
        ref_m = evaluate_outputs(ref_out, ev, head_weight=ref.head.weight, original=original, retrain=ref_out)
        base = {"dataset": args.dataset, "norm": args.norm, "forget": spec}
        orig_m = row_metrics(pre, ev, original, ref_out, ref_m, classes)
        ref_row = row_metrics(ref, ev, original, ref_out, ref_m, classes) | {"RTE_s": ref_wall}
        rows += [base | {"method": "original"} | orig_m, base | {"method": "retrain"} | ref_row]
        print(header)
        print(fmt_row(f"{spec} | original |  |  | ", orig_m))
        print(fmt_row(f"{spec} | retrain |  |  | ", ref_row))
        train_retain = subsample(retain_idx, args.retain_subsample, sub) if args.retain_subsample else retain_idx
        udata = UnlearnData(data.train, forget_idx, train_retain)
        for layer in args.layers:
            for sq in args.squared:
                for lam in args.lambdas:
                    cfg = opc.Config(
                        lambda_=lam,
                        layer=layer,
                        squared=sq == "on",
                        epochs=1.0,
                        lr=args.lr,
                        batch_size=args.batch_size,
                        forget_batch_size=args.forget_batch_size,
                    )
                    gen = numpy_rng(args.seed, f"bench/opc/{spec}/{layer}/{sq}/{lam}")
                    model, wall = pre, 0.0
                    for ep in range(1, args.max_epochs + 1):
                        t0 = time.perf_counter()
                        try:
                            model = opc.unlearn(model, udata, cfg, generator=gen, device="cpu").model
                        except FloatingPointError as e:  # a diverged run is a result of the sweep, not a crash
                            print(f"{spec} | {layer} | {sq} | {lam} | {ep} | diverged: {e}")
                            rows.append(
                                base
                                | {
                                    "method": "opc",
                                    "layer": layer,
                                    "squared": sq,
                                    "lambda": lam,
                                    "epochs": ep,
                                    "diverged": True,
                                }
                            )
                            break
                        wall += time.perf_counter() - t0
                        m = row_metrics(model, ev, original, ref_out, ref_m, classes) | {"RTE_s": wall}
                        row = base | {"method": "opc", "layer": layer, "squared": sq, "lambda": lam, "epochs": ep} | m
                        rows.append(row)
                        print(fmt_row(f"{spec} | {layer} | {sq} | {lam} | {ep}", m), flush=True)
                        if args.out:
                            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                            Path(args.out).write_text(json.dumps({"pretrained_TA": pre_ta, "rows": rows}, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"pretrained_TA": pre_ta, "rows": rows}, indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
