"""The inversion's calibration row per seed and attack setting, against the own-mean flat image.

The calibration row is the ``global_model`` target on a run's original, pretrained model and the forget images the
run attacks; the question is whether the attack beats the own-mean flat image by ``INFORMATIVE_MARGIN_DB`` on every
seed.

    python benchmarks/inversion_calibration.py scenarios/cifar10_100clients.yaml --seeds 0 1 2 \
        --setting iterations=2000,restarts=2 --setting iterations=2000,restarts=2,images=8

The original model of each seed is read from the pretraining cache (run the scenario with that seed once first; a
missing entry is reported and the seed skipped), or from ``--state SEED=PATH``. Every ``--setting`` overrides fields of the scenario's
``attacks.inversion`` block (``images``, ``iterations``, ``restarts``, ``lr``, ``tv``, ``bn_stats``, ``combine``) and runs the
product's calibration (``strategies.attack_run.inversion_reference``'s original-model row) on one torch thread.
Prints, per seed and setting, the mean PSNR, the own-mean flat baseline, the margin, each image's margin, and the
seconds it took; at the end the margin's mean and minimum over seeds per setting.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from fed_opc.attacks.inversion import INFORMATIVE_MARGIN_DB  # noqa: E402
from fed_opc.checkpoint import load_checkpoint  # noqa: E402
from fed_opc.config import load_scenario  # noqa: E402
from fed_opc.data.forget import union_forget  # noqa: E402
from fed_opc.data.scenario_data import prepare  # noqa: E402
from fed_opc.models import new_model  # noqa: E402
from fed_opc.threads import torch_threads  # noqa: E402
from strategies import cache  # noqa: E402
from strategies.attack_run import global_model_inversion  # noqa: E402
from strategies.run.pretrain import pretrain_rounds  # noqa: E402

FIELDS = {
    "images": int,
    "iterations": int,
    "restarts": int,
    "lr": float,
    "tv": float,
    "bn_stats": float,
    "combine": str,
}


def parse_setting(text: str) -> dict:
    out = {}
    for part in filter(None, text.split(",")):
        k, _, v = part.partition("=")
        if k not in FIELDS:
            raise SystemExit(f"--setting: unknown field {k!r} (known: {', '.join(FIELDS)})")
        out[k] = FIELDS[k](v)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("scenario")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--setting", action="append", default=[], help="k=v,... over attacks.inversion (repeatable)")
    p.add_argument(
        "--state",
        action="append",
        default=[],
        metavar="SEED=PATH",
        help="read this seed's original model from a fed-opc checkpoint (a run's checkpoints/pretrain.ckpt or a "
        "pretraining cache entry) instead of the cache entry of the current code",
    )
    p.add_argument("--plots", default=None, help="save each seed's and setting's grid (originals above) here")
    args = p.parse_args()
    settings = [parse_setting(s) for s in args.setting] or [{}]
    base = load_scenario(args.scenario)
    states = dict(x.split("=", 1) for x in args.state)
    margins: dict[int, list[float]] = {i: [] for i in range(len(settings))}
    for seed in args.seeds:
        sc = dataclasses.replace(base, seed=seed)
        sd = prepare(sc)
        if str(seed) in states:
            entry = load_checkpoint(Path(states[str(seed)]))
        else:
            entry = cache.load_pretrained(cache.pretrain_key(sc, sd, pretrain_rounds(sc)))
        if entry is None:
            print(f"seed {seed}: no cached pretraining (run the scenario with seed {seed} first); skipped", flush=True)
            continue
        model = new_model(sc, sd)
        model.load_state_dict(entry["state"], strict=True)
        forget = union_forget(sd.requests)
        for i, setting in enumerate(settings):
            inv = dataclasses.replace(sc.attacks.inversion, **setting)
            sci = dataclasses.replace(sc, attacks=dataclasses.replace(sc.attacks, inversion=inv))
            t = time.perf_counter()
            with tempfile.TemporaryDirectory() as d, torch_threads(1):
                grid = Path(args.plots or d) / f"calibration_seed{seed}_setting{i}.png"
                grid.parent.mkdir(parents=True, exist_ok=True)
                res = global_model_inversion(sci, sd, model, forget, grid, "cpu", per_image=True)
            dt = time.perf_counter() - t
            margin = res["psnr"] - res["baseline_psnr"]
            margins[i].append(margin)
            per = ", ".join(f"{r['psnr'] - r['baseline_psnr']:+.1f}" for r in res["per_image"])
            print(
                f"seed {seed} {setting or 'scenario'}: PSNR {res['psnr']:.2f} dB, own-mean flat "
                f"{res['baseline_psnr']:.2f}, margin {margin:+.2f} dB (per image {per}), {dt:.0f} s",
                flush=True,
            )
    print(f"\nmargin over seeds (informative at >= {INFORMATIVE_MARGIN_DB} dB):")
    for i, setting in enumerate(settings):
        m = np.array(margins[i])
        if len(m):
            print(
                f"  {setting or 'scenario'}: mean {m.mean():+.2f}, min {m.min():+.2f}, informative {int((m >= INFORMATIVE_MARGIN_DB).sum())}/{len(m)}"
            )


if __name__ == "__main__":
    main()
