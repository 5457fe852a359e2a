"""What one step of the gradient-inversion attack costs, against the least any implementation of that step could cost.

    python benchmarks/inversion_step.py [scenarios/cifar10_100clients.yaml] [--images 1 2 4 8] [--iterations 40]

For each number of attacked images (each with the scenario's restarts: images x restarts independent problems, as
the attack stage optimises them in one batch), times the product's attack (``invert_many`` on single-image
gradients of the scenario's model, ``iterations`` steps) and, as the baseline measured in the same run, the plain
batched step every gradient-matching attack needs at least: one forward pass of the same number of images, their
parameter gradient with ``create_graph``, and its derivative with respect to the images (a double backward). Prints
milliseconds per step, per problem, and the ratio: what a faster per-problem gradient could still remove. One torch
thread, as the attack stage runs each method's attacks.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fed_opc.attacks.inversion import Config, ImageSpace, invert_many, observe_gradient  # noqa: E402
from fed_opc.config import load_scenario  # noqa: E402
from fed_opc.data.scenario_data import prepare  # noqa: E402
from fed_opc.models import new_model  # noqa: E402
from fed_opc.threads import torch_threads  # noqa: E402


def attack_step_s(model, x, y, restarts: int, iterations: int, space: ImageSpace) -> float:
    """Seconds per step of ``invert_many`` on one single-image gradient per image of ``x``."""
    obs = [observe_gradient(model, x[i : i + 1], y[i : i + 1]) for i in range(len(x))]
    cfg = Config(iterations=iterations, restarts=restarts, images=len(x))
    gens = [torch.Generator().manual_seed(i) for i in range(len(x))]
    t0 = time.perf_counter()
    invert_many(obs, model, cfg, space, generators=gens)
    return (time.perf_counter() - t0) / iterations


def plain_step_s(model, x, y, iterations: int) -> float:
    """Seconds per plain batched double-backward step on the images ``x`` (the baseline)."""
    params = [p for p in model.parameters() if p.requires_grad]
    trial = x.clone().requires_grad_(True)
    t0 = time.perf_counter()
    for _ in range(iterations):
        grads = torch.autograd.grad(F.cross_entropy(model(trial), y), params, create_graph=True)
        (gx,) = torch.autograd.grad(sum((g * g).sum() for g in grads), trial)
        trial.data.add_(gx.sign(), alpha=-1e-3)
    return (time.perf_counter() - t0) / iterations


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("scenario", nargs="?", default="scenarios/cifar10_100clients.yaml")
    p.add_argument("--images", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--iterations", type=int, default=40)
    args = p.parse_args()
    sc = load_scenario(args.scenario)
    sd = prepare(sc)
    model = new_model(sc, sd).eval()
    space = ImageSpace.of(sd.data.train)
    restarts = sc.attacks.inversion.restarts
    print(f"{sc.name}: {sc.model.arch}, {restarts} restarts per image, {args.iterations} steps, 1 torch thread")
    print(
        f"{'images':>6} {'problems':>8} {'attack ms/step':>15} {'plain ms/step':>14} {'attack ms/problem':>18} {'ratio':>6}"
    )
    with torch_threads(1):
        for n in args.images:
            x, y = sd.data.train.tensors(sd.requests[0].forget[:n])
            attack = attack_step_s(model, x, y, restarts, args.iterations, space)
            plain = plain_step_s(model, x.repeat(restarts, 1, 1, 1), y.repeat(restarts), args.iterations)
            print(
                f"{n:>6} {n * restarts:>8} {attack * 1e3:>15.1f} {plain * 1e3:>14.1f} "
                f"{attack * 1e3 / (n * restarts):>18.2f} {attack / plain:>6.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
