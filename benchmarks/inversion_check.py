"""Quality check of gradient inversion on CIFAR-10: PSNR / SSIM of reconstructions against the flat-image baseline.

The setting of DESIGN.md section 4: a few CIFAR-10 test images, one per observation, the small GAP CNN at default
width, untrained unless ``--train-epochs`` is given. Targets: ``global_model`` (one gradient per image) or
``unlearning_update`` (``--local-steps`` SGD steps per image, inverted by replay, or as one gradient with
``--no-replay``). Not a test: it takes minutes on a CPU.

    .venv/bin/python benchmarks/inversion_check.py [--iterations 2000] [--restarts 2] [--images 4] [--out DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from fed_opc.attacks import SampleSet, ServerView, run_inversion
from fed_opc.attacks.inversion import Config, ImageSpace, observe_gradient, observe_update
from fed_opc.data.datasets import load_dataset
from fed_opc.losses import cross_entropy
from fed_opc.models import build_model
from fed_opc.rng import numpy_rng, torch_rng
from fed_opc.train import OptimConfig, make_optimizer, supervised_batches, train_loop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="/work/shared/data")
    ap.add_argument("--checksums", default="cifar10-offline-rebuild")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--first", type=int, default=0, help="index of the first test image")
    ap.add_argument("--iterations", type=int, default=Config.iterations)
    ap.add_argument("--restarts", type=int, default=Config.restarts)
    ap.add_argument("--tv", type=float, default=Config.tv)
    ap.add_argument("--target", choices=("global_model", "unlearning_update"), default="global_model")
    ap.add_argument("--local-steps", type=int, default=5)
    ap.add_argument("--local-lr", type=float, default=0.1)
    ap.add_argument("--no-replay", action="store_true")
    ap.add_argument("--train-epochs", type=float, default=0.0, help="train the model first on 10,000 training images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (one is fastest for these small ops)")
    ap.add_argument("--out", default="runs/inversion_check")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    pair = load_dataset("cifar10", args.root, checksums=args.checksums)
    space = ImageSpace.of(pair.test)
    model = build_model("small_cnn", 10, 3, generator=torch_rng(args.seed, "model_init"))
    if args.train_epochs > 0:
        t = time.time()
        stats = train_loop(
            model,
            cross_entropy,
            supervised_batches(pair.train, np.arange(10_000), 64, args.train_epochs, numpy_rng(args.seed, "pretrain")),
            make_optimizer(model.parameters(), OptimConfig(lr=0.05, momentum=0.9)),
        )
        print(
            f"trained {args.train_epochs} epoch(s) on 10,000 images: final loss {stats.losses[-1]:.3f} ({time.time() - t:.0f} s)"
        )

    idx = np.arange(args.first, args.first + args.images)
    x, y = pair.test.tensors(idx)
    if args.target == "global_model":
        obs = tuple(observe_gradient(model, x[i : i + 1], y[i : i + 1]) for i in range(len(idx)))
    else:
        obs = tuple(
            observe_update(model, x[i : i + 1], y[i : i + 1], steps=args.local_steps, lr=args.local_lr)
            for i in range(len(idx))
        )
    view = ServerView(
        original=model,
        unlearned=model,
        calibration=SampleSet(pair.test, np.arange(5000, 5100)),
        gradients=obs if args.target == "global_model" else (),
        updates=obs if args.target == "unlearning_update" else (),
    )
    cfg = Config(
        iterations=args.iterations,
        restarts=args.restarts,
        tv=args.tv,
        images=args.images,
        replay=not args.no_replay,
        seed=args.seed,
    )
    out = Path(args.out)
    t = time.time()
    res = run_inversion(
        view,
        args.target,
        cfg,
        [space.to01(x[i : i + 1]) for i in range(len(idx))],
        space,
        truth_labels=[y[i : i + 1] for i in range(len(idx))],
        grid_path=str(out / f"grid_{args.target}.png"),
    )
    wall = time.time() - t
    iters = args.images * args.iterations * args.restarts
    print(f"target {args.target}, {args.images} image(s) x {args.restarts} restart(s) x {args.iterations} iterations")
    for r in res["per_image"]:
        print(
            f"  image {args.first + r['observation']}: PSNR {r['psnr']:.2f} dB, SSIM {r['ssim']:.3f}, flat {r['baseline_psnr']:.2f} dB, label {r['label']}"
        )
    print(
        f"mean PSNR {res['psnr']:.2f} dB (flat baseline {res['baseline_psnr']:.2f} dB), SSIM {res['ssim']:.3f}, "
        f"labels right {res.get('label_acc', float('nan')):.2f}; {wall:.0f} s, {1000 * wall / iters:.1f} ms/iteration"
    )
    summary = {k: v for k, v in res.items() if k != "per_image"} | {
        "per_image": res["per_image"],
        "config": dataclasses.asdict(cfg),
        "target": args.target,
        "train_epochs": args.train_epochs,
        "wall_s": wall,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"result_{args.target}.json").write_text(json.dumps(summary, indent=1))
    print(f"grid and result in {out}/")


if __name__ == "__main__":
    main()
