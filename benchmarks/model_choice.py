"""Model choice: FedAvg pretraining of a candidate model on a scenario's real partition, timed, with its test accuracy.

    python benchmarks/model_choice.py scenarios/cifar10_100clients.yaml --set model.arch=small_cnn --set federation.rounds=10

Trains the way the federation does, without Flower: the scenario's partitions, the seeded client sampling of
``strategies.fedavg``, the same per-(round, client) generators (stage ``pretrain``), the product's model builder and its
one training loop, and FedAvg's average weighted by each client's number of samples. The only difference from a Ray run
is the process layout (one process, ``--threads`` torch threads, clients one after another), which changes speed, not
what is computed. ``--set key=value`` (repeatable, YAML values, dotted keys) overrides the scenario before it is
validated, so a candidate is any setting a scenario can hold. Prints the model's parameter count, the training
throughput (client samples per second of training, evaluation excluded), the test accuracy at each ``--eval-every``
round and at the end, and the seconds of training; with ``--out`` writes the same as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch import nn  # noqa: E402

from fed_opc.config import ConfigError, parse_scenario  # noqa: E402
from fed_opc.data.scenario_data import prepare  # noqa: E402
from fed_opc.losses import cross_entropy  # noqa: E402
from fed_opc.models import FeatureModel, init_weights, new_model  # noqa: E402
from fed_opc.models.small_cnn import conv_block  # noqa: E402
from fed_opc.rng import numpy_rng, torch_rng  # noqa: E402
from fed_opc.train import OptimConfig, accuracy, make_optimizer, supervised_batches, train_loop  # noqa: E402
from strategies.fedavg import sample_clients  # noqa: E402


def body_model(plan: str, norm: str, num_classes: int, in_channels: int, generator: torch.Generator) -> FeatureModel:
    """A candidate not (yet) in ``fed_opc.models``: 3x3 conv-norm-ReLU layers of the listed widths, ``M`` a 2x2
    max-pool, then a global average pool (e.g. ``32,M,64,M,128``; ``32,M,64,M,128,M,256`` is ``cnn4``)."""
    layers: list[nn.Module] = []
    cin = in_channels
    for tok in plan.split(","):
        if tok == "M":
            layers.append(nn.MaxPool2d(2))
            continue
        cout = int(tok)
        layers += conv_block(cin, cout, norm)
        cin = cout
    body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return init_weights(FeatureModel(body, nn.Linear(cin, num_classes)), generator)


def crop_flip(batches, rng: np.random.Generator, pad: int = 4):
    """Random crop (zero padding of ``pad`` pixels in normalised space, i.e. the mean colour) and horizontal flip of
    each image, drawn from ``rng``: the standard CIFAR-10 augmentation, as a candidate for the product's batch stream."""
    for b in batches:
        x = b["x"]
        n, _, h, w = x.shape
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        dy, dx = rng.integers(0, 2 * pad + 1, size=(2, n))
        flip = rng.random(n) < 0.5
        out = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
        out[flip] = out[flip].flip(3)
        yield b | {"x": out}


def apply_overrides(raw: dict, sets: list[str]) -> dict:
    """Set each dotted ``key=value`` (value parsed as YAML) in the raw scenario mapping."""
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected key=value")
        node = raw
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = yaml.safe_load(value)
    return raw


def candidate(sc, sd, body: str | None) -> FeatureModel:
    """The scenario's model, or the :func:`body_model` of plan ``body`` with the scenario's ``model.norm``."""
    if body is None:
        return new_model(sc, sd)
    train = sd.data.train
    gen = torch_rng(sc.seed, "model_init")
    return body_model(body, sc.model.norm or "none", train.num_classes, train.image_shape[0], gen)


def speed(sc, body: str | None = None, threads: int = 1, steps: int = 30, repeats: int = 5) -> float:
    """Training samples per second of the candidate on client 0's data at the scenario's batch size: the best of
    ``repeats`` timings of ``steps`` steps of the product's loop (the best, because the machine may be shared)."""
    torch.set_num_threads(threads)
    sd = prepare(sc)
    fed = sc.federation
    model = candidate(sc, sd, body)
    opt = make_optimizer(model.parameters(), OptimConfig(fed.lr, fed.momentum, fed.weight_decay))
    idx = sd.partitions[0]
    epochs = steps * fed.batch_size / len(idx) + 1
    best = float("inf")
    for r in range(repeats + 1):
        batches = list(supervised_batches(sd.data.train, idx, fed.batch_size, epochs, numpy_rng(sc.seed, "speed", r)))
        t = time.perf_counter()
        n = train_loop(model, cross_entropy, batches[:steps], opt).samples
        if r > 0:  # the first pass warms up
            best = min(best, (time.perf_counter() - t) / n)
    return 1.0 / best


def fedavg(
    sc,
    eval_every: int = 0,
    threads: int = 2,
    body: str | None = None,
    augment: bool = False,
    server_momentum: float = 0.0,
    server_lr: float = 1.0,
    cosine: bool = False,
) -> dict:
    """Pretrain ``sc``'s model by FedAvg as the federation does; returns accuracies, time and throughput.

    ``body``: train the :func:`body_model` candidate of that plan (with ``model.norm``) instead of ``model.arch``.
    ``augment``: apply :func:`crop_flip` to every local batch.
    ``server_momentum``, ``server_lr``: FedAvgM (Hsu et al. 2019) candidates: the server keeps a momentum buffer ``v``
    of the average update ``d`` of the floating-point parameters (``v = server_momentum * v + d``) and steps
    ``server_lr * v``; buffers (batch-norm statistics) take the plain average. 0 and 1: FedAvg.
    ``cosine``: the clients' learning rate decays from ``federation.lr`` to 0 over the rounds (cosine).
    """
    torch.set_num_threads(threads)
    sd = prepare(sc)
    fed = sc.federation
    model = candidate(sc, sd, body)
    glob = {k: v.clone() for k, v in model.state_dict().items()}
    params = sum(p.numel() for p in model.parameters())
    trained = {n for n, _ in model.named_parameters()}
    velocity = {k: torch.zeros_like(glob[k], dtype=torch.float64) for k in trained}
    train_s, samples, curve = 0.0, 0, []
    for rnd in range(1, fed.rounds + 1):
        lr = fed.lr * 0.5 * (1 + math.cos(math.pi * (rnd - 1) / fed.rounds)) if cosine else fed.lr
        t = time.perf_counter()
        states, weights = [], []
        for pid in sample_clients(sc.seed, rnd, range(sd.num_clients), fed.clients_per_round):
            idx = sd.partitions[pid]
            if len(idx) == 0:
                continue
            model.load_state_dict(glob, strict=True)
            opt = make_optimizer(model.parameters(), OptimConfig(lr, fed.momentum, fed.weight_decay))
            rng = numpy_rng(sc.seed, "client_train/pretrain", rnd, pid)
            batches = supervised_batches(sd.data.train, idx, fed.batch_size, fed.local_epochs, rng)
            if augment:
                batches = crop_flip(batches, numpy_rng(sc.seed, "augment/pretrain", rnd, pid))
            samples += train_loop(model, cross_entropy, batches, opt).samples
            states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
            weights.append(len(idx))
        total = sum(weights)
        avg = {k: sum(s[k].double() * (w / total) for s, w in zip(states, weights)) for k in glob}
        for k in trained:
            velocity[k] = server_momentum * velocity[k] + (avg[k] - glob[k].double())
            avg[k] = glob[k].double() + server_lr * velocity[k]
        glob = {k: avg[k].to(glob[k].dtype) for k in glob}
        train_s += time.perf_counter() - t
        if (eval_every and rnd % eval_every == 0) or rnd == fed.rounds:
            model.load_state_dict(glob, strict=True)
            acc = accuracy(model, sd.data.test, sd.test_idx)
            curve.append((rnd, acc))
            print(f"  round {rnd:3d}: test acc {acc:.4f}  ({train_s:.0f} s of training)", flush=True)
    return {
        "params": params,
        "test_acc": curve[-1][1],
        "curve": curve,
        "train_s": train_s,
        "client_samples": samples,
        "samples_per_s": samples / train_s,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("scenario", help="a scenario YAML file")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--body", default=None, help="train a candidate conv stack instead of model.arch, e.g. 32,M,64,M,128"
    )
    p.add_argument("--augment", action="store_true", help="random crop + horizontal flip of every local batch")
    p.add_argument("--server-momentum", type=float, default=0.0, help="FedAvgM server momentum (0: FedAvg)")
    p.add_argument("--server-lr", type=float, default=1.0, help="server step on the (momentum) update (1: FedAvg)")
    p.add_argument("--cosine", action="store_true", help="clients' lr decays to 0 over the rounds (cosine)")
    p.add_argument("--speed", action="store_true", help="only time training steps (samples/s, best of 5), 1 thread")
    p.add_argument("--eval-every", type=int, default=0, help="also evaluate every N rounds (0: only at the end)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (2: the cores of two 1-CPU Ray actors)")
    p.add_argument("--out", default=None, help="write the result as JSON here")
    args = p.parse_args()
    path = Path(args.scenario)
    raw = apply_overrides(yaml.safe_load(path.read_text()), args.sets)
    try:
        sc = parse_scenario(raw, path=str(path))
    except ConfigError as e:
        print(e, file=sys.stderr)
        raise SystemExit(2) from None
    m, f = sc.model, sc.federation
    print(
        f"{sc.name}: {('body ' + args.body) if args.body else m.arch} norm={m.norm} width={m.width} | {sc.data.num_clients} clients "
        f"{sc.data.partition.kind}, {f.rounds} rounds x {f.clients_per_round} clients x {f.local_epochs} epochs, "
        f"batch {f.batch_size}, lr {f.lr}{' cosine' if args.cosine else ''}, momentum {f.momentum}"
        f"{', crop+flip' if args.augment else ''}, server momentum {args.server_momentum} lr {args.server_lr}",
        flush=True,
    )
    prepare(sc)  # load the data outside the timed rounds
    if args.speed:
        print(f"samples/s {speed(sc, args.body):.0f} (1 thread, batch {f.batch_size})")
        return
    r = fedavg(
        sc, args.eval_every, args.threads, args.body, args.augment, args.server_momentum, args.server_lr, args.cosine
    )
    print(
        f"params {r['params']:,}  samples/s {r['samples_per_s']:.0f}  test acc {r['test_acc']:.4f}  "
        f"train {r['train_s']:.1f} s  ({os.cpu_count()} cpus, {args.threads} threads)"
    )
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"args": vars(args), "scenario": raw, "result": r}, indent=2))


if __name__ == "__main__":
    main()
