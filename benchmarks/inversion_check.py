"""Quality check of gradient inversion on CIFAR-10: PSNR / SSIM of reconstructions against both flat baselines.

A few CIFAR-10 test images, one per observation, through a model of the kind a scenario names (``--scenario``: its
``model`` block; default the small CNN at default width without normalisation), untrained, trained here
(``--train-epochs`` centrally on ``--train-images`` training images), or loaded (``--state``: a fed-opc checkpoint
holding a ``state``, e.g. a pretraining cache entry or ``checkpoints/method.<m>.ckpt``, or a plain state dict).
Targets: ``global_model`` (one gradient per image, the model in eval mode) or ``unlearning_update``
(``--local-steps`` SGD steps per image, inverted by replay, or as one gradient with ``--no-replay``). The result is
read as the calibration row of a run: ``informative`` when the mean PSNR beats the own-mean flat baseline by
``INFORMATIVE_MARGIN_DB``. Not a test: it takes minutes on a CPU.

    .venv/bin/python benchmarks/inversion_check.py --scenario scenarios/cifar10_100clients.yaml --train-epochs 3 \\
        --save-state runs/inversion_check/model.pt [--iterations 2000] [--restarts 2] [--tv 0.01] [--images 4]
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
from fed_opc.attacks.inversion import Config, ImageSpace, calibration, observe_gradient, observe_update
from fed_opc.data.datasets import load_dataset
from fed_opc.losses import cross_entropy
from fed_opc.models import build_model
from fed_opc.rng import numpy_rng, torch_rng
from fed_opc.train import OptimConfig, accuracy, make_optimizer, supervised_batches, train_loop


def _load_state(path: str) -> dict[str, torch.Tensor]:
    from fed_opc.checkpoint import MAGIC, load_checkpoint

    with open(path, "rb") as f:
        head = f.read(len(MAGIC))
    obj = load_checkpoint(path) if head == MAGIC else torch.load(path, weights_only=True)
    return obj["state"] if "state" in obj else obj


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="/work/shared/data")
    ap.add_argument("--checksums", default="cifar10-offline-rebuild")
    ap.add_argument("--scenario", help="take the model kind (arch, norm, width) from this scenario's model block")
    ap.add_argument("--state", help="load the model's weights from this file")
    ap.add_argument("--save-state", help="save the (trained) model's weights here")
    ap.add_argument("--images", type=int, default=Config.images)
    ap.add_argument("--first", type=int, default=0, help="index of the first test image")
    ap.add_argument("--iterations", type=int, default=Config.iterations)
    ap.add_argument("--restarts", type=int, default=Config.restarts)
    ap.add_argument("--tv", type=float, default=Config.tv)
    ap.add_argument("--lr", type=float, default=Config.lr)
    ap.add_argument("--labels", choices=("infer", "given"), default=Config.labels)
    ap.add_argument("--no-joint", action="store_true", help="optimise image by image (same result, slower)")
    ap.add_argument("--train-mode", action="store_true", help="the client computes its gradient in train mode")
    ap.add_argument(
        "--bn-stats", type=float, default=Config.bn_stats, help="weight of the batch-norm statistics term (0: off)"
    )
    ap.add_argument("--target", choices=("global_model", "unlearning_update"), default="global_model")
    ap.add_argument("--local-steps", type=int, default=5)
    ap.add_argument("--local-lr", type=float, default=0.1)
    ap.add_argument("--no-replay", action="store_true")
    ap.add_argument("--train-epochs", type=float, default=0.0, help="train the model first (SGD lr 0.05, momentum 0.9)")
    ap.add_argument("--train-images", type=int, default=50_000, help="training images used by --train-epochs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (one is fastest for these small ops)")
    ap.add_argument("--out", default="runs/inversion_check")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    arch, norm, width = "small_cnn", None, 0
    if args.scenario:
        from fed_opc.config import load_scenario

        m = load_scenario(args.scenario, check_environment=False).model
        arch, norm, width = m.arch, m.norm, m.width
    pair = load_dataset("cifar10", args.root, checksums=args.checksums)
    space = ImageSpace.of(pair.test)
    model = build_model(arch, 10, 3, generator=torch_rng(args.seed, "model_init"), norm=norm, width=width)
    if args.state:
        model.load_state_dict(_load_state(args.state), strict=True)
    if args.train_epochs > 0:
        t = time.time()
        stats = train_loop(
            model,
            cross_entropy,
            supervised_batches(
                pair.train, np.arange(args.train_images), 64, args.train_epochs, numpy_rng(args.seed, "pretrain")
            ),
            make_optimizer(model.parameters(), OptimConfig(lr=0.05, momentum=0.9)),
        )
        print(
            f"trained {args.train_epochs} epoch(s) on {args.train_images:,} images: final loss "
            f"{np.mean(stats.losses[-50:]):.3f} ({time.time() - t:.0f} s)"
        )
    if args.save_state:
        Path(args.save_state).parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), args.save_state)
    test_acc = accuracy(model, pair.test, np.arange(len(pair.test.labels)))
    print(f"model {arch} (norm {norm or 'default'}, width {width or 'default'}): test accuracy {test_acc:.3f}")

    idx = np.arange(args.first, args.first + args.images)
    x, y = pair.test.tensors(idx)
    public = args.labels == "given"
    if args.target == "global_model":
        obs = tuple(
            observe_gradient(
                model,
                x[i : i + 1],
                y[i : i + 1],
                labels_public=public,
                train_mode=args.train_mode,
                bn_stats=args.bn_stats > 0,
            )
            for i in range(len(idx))
        )
    else:
        obs = tuple(
            observe_update(
                model, x[i : i + 1], y[i : i + 1], steps=args.local_steps, lr=args.local_lr, labels_public=public
            )
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
        lr=args.lr,
        tv=args.tv,
        images=args.images,
        replay=not args.no_replay,
        labels=args.labels,
        joint=not args.no_joint,
        bn_stats=args.bn_stats,
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
    res = calibration(res)
    wall = time.time() - t
    iters = args.iterations
    problems = args.images * args.restarts
    print(f"target {args.target}, {args.images} image(s) x {args.restarts} restart(s) x {args.iterations} iterations")
    for r in res["per_image"]:
        print(
            f"  image {args.first + r['observation']}: PSNR {r['psnr']:.2f} dB, SSIM {r['ssim']:.3f}, "
            f"own-mean flat {r['baseline_psnr']:.2f} dB, dataset-mean flat {r['baseline_psnr_dataset_mean']:.2f} dB, "
            f"label {r['label']}"
        )
    print(
        f"mean PSNR {res['psnr']:.2f} dB (own-mean flat {res['baseline_psnr']:.2f} dB, margin {res['margin_db']:+.2f} "
        f"dB, informative {res['informative']}; dataset-mean flat {res['baseline_psnr_dataset_mean']:.2f} dB), "
        f"SSIM {res['ssim']:.3f}, labels right {res.get('label_acc', float('nan')):.2f}; {wall:.0f} s, "
        f"{1000 * wall / iters:.1f} ms per iteration of all {problems} problems ({1000 * wall / iters / problems:.2f} "
        f"ms per problem-iteration)"
    )
    summary = res | {
        "config": dataclasses.asdict(cfg),
        "target": args.target,
        "model": {"arch": arch, "norm": norm, "width": width, "state": args.state, "test_acc": test_acc},
        "train_epochs": args.train_epochs,
        "train_mode": args.train_mode,
        "wall_s": wall,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"result_{args.target}.json").write_text(json.dumps(summary, indent=1))
    print(f"grid and result in {out}/")


if __name__ == "__main__":
    main()
