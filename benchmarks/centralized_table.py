"""All ten centralized methods from one pretrained model (class 0 forgotten by default), as one table.

Uses the pretrained small CNN cached by ``benchmarks/opc_sweep.py`` (the same recipe and cache key, so the two scripts
share it; it is trained here if missing). Retrain runs inside :func:`fed_opc.centralized.run_centralized` with the
pretraining recipe, so its RTE is the true cost of exact unlearning. Prints UA/RA/TA/MIA/avg_gap/RTE, the forget/retain
feature-norm ratio, CKA, the null-space share and the collapse diagnostics, and writes them (with each method's
diagnostics, e.g. GA's stopping rule) as JSON.

Example::

    .venv/bin/python benchmarks/centralized_table.py --out runs/bench/centralized_table.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from opc_sweep import cached_train, fresh_model, load  # noqa: E402

from fed_opc.centralized import run_centralized  # noqa: E402
from fed_opc.unlearning import CENTRALIZED  # noqa: E402
from fed_opc.unlearning import retrain as retrain_mod  # noqa: E402

COLUMNS = [
    ("UA", "UA"),
    ("RA", "RA"),
    ("TA", "TA"),
    ("TA_forgotten_classes", "TA_fgt"),
    ("MIA", "MIA"),
    ("avg_gap", "gap"),
    ("RTE_s", "RTE_s"),
    ("norm_ratio", "f/r norm"),
    ("cka_vs_original", "CKA orig"),
    ("cka_vs_retrain", "CKA retr"),
    ("nullspace_share", "null"),
    ("dead_units_share", "dead"),
    ("n_predicted_classes", "#pred"),
    ("collapsed", "coll"),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="cifar10", choices=["cifar10", "mnist", "synthetic"])
    p.add_argument("--norm", default="none", choices=["none", "batch", "group"])
    p.add_argument("--width", type=int, default=0)
    p.add_argument("--pretrain-epochs", type=float, default=5.0)
    p.add_argument("--classes", default="0", help="forgotten classes, comma-separated")
    p.add_argument("--methods", nargs="+", default=list(CENTRALIZED))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "fed_opc" / "bench"))
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    data = load(args.dataset)
    template = fresh_model(data, args.norm, args.width, args.seed)
    recipe = retrain_mod.Config(epochs=args.pretrain_epochs)
    arch_key = f"{args.dataset}|small_cnn|{args.norm}|{args.width}|{dataclasses.astuple(recipe)}|{args.seed}"
    all_idx = np.arange(len(data.train), dtype=np.int64)
    pre, _ = cached_train(f"pretrain|{arch_key}", Path(args.cache_dir), template, data, all_idx, recipe, args.seed)

    classes = tuple(int(c) for c in args.classes.split(","))
    is_f = np.isin(data.train.labels, classes)
    forget_idx, retain_idx = np.flatnonzero(is_f), np.flatnonzero(~is_f)
    params = {"retrain": recipe} if "retrain" in args.methods else {}
    runs = run_centralized(
        pre,
        data,
        forget_idx,
        retain_idx,
        None,
        args.methods,
        params,
        seed=args.seed,
        device="cpu",
        forgotten_classes=classes,
        log=lambda line: print(line, flush=True),
    )

    print("\nmethod | " + " | ".join(h for _, h in COLUMNS))
    table = {}
    for name, run in runs.items():
        m = dict(run.metrics)
        m["norm_ratio"] = m["forget_feature_norm"] / m["retain_feature_norm"]
        cells = [(f"{m[k]:.3f}" if isinstance(m.get(k), float) else str(m.get(k, "-"))) for k, _ in COLUMNS]
        print(f"{name} | " + " | ".join(cells))
        table[name] = run.to_json() | {"diagnostics": run.diagnostics}
    print("\ndiagnostics:")
    for name, run in runs.items():
        print(f"  {name}: {run.diagnostics}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(
            json.dumps({"dataset": args.dataset, "norm": args.norm, "classes": classes, "methods": table}, indent=1)
        )
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
