"""The FL pretraining stage: FedAvg up to the first deletion request, checkpointed every round, and its cache entry."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fed_opc.checkpoint import CheckpointError
from fed_opc.config import Scenario
from fed_opc.edge import edge_of, new_clock
from fed_opc.models import new_model
from strategies import cache
from strategies.run.progress import Progress, stage_line
from strategies.training import TrainingResult, federated_training


def pretrain_rounds(sc: Scenario) -> int:
    """Rounds of FL pretraining: up to the first deletion request (all rounds when there is none)."""
    return min((r.round for r in sc.requests), default=sc.federation.rounds)


def pretrain_stage(sc, sd, rounds, keys: tuple[str, str], ckpt_path: Path, pre: dict, progress: bool, interval: int):
    """FedAvg from the seeded initial model for ``rounds`` rounds, checkpointing every round.

    ``keys`` = (the cache key, the same key without execution settings). A checkpoint whose settings differ only in
    execution settings (client resources) is resumed; the result then mixes two thread counts, so it is not cached.
    With ``interval`` > 0 the server also stores every client update of rounds 1, 1 + interval, ... (FedEraser's
    history), checkpointed with the model.
    """
    key, resume_key = keys

    def stage(grid, node_of) -> None:
        updates: dict[int, dict[int, dict]] = {}
        clock = new_clock(sc)

        def resume(saved: dict[str, Any]) -> None:
            if saved.get("resume_key") != resume_key:
                raise CheckpointError(f"{ckpt_path}: belongs to different pretraining settings; run without --resume")
            if saved.get("key") != key:
                pre["mixed_settings"] = True
                stage_line(progress, "pretraining resumed under other client resources (thread counts)")
            updates.update({int(r): {int(p): u for p, u in per.items()} for r, per in saved.get("updates", {}).items()})
            bar.skip_to(int(saved["round"]))

        def sink(rnd: int, pid: int, update: dict) -> None:
            if (rnd - 1) % interval == 0:
                updates.setdefault(rnd, {})[pid] = update

        t_stage = time.perf_counter()
        bar = Progress(progress, rounds, "pretrain")
        try:
            res: TrainingResult = federated_training(
                grid,
                sc,
                sd,
                node_of,
                initial_state=new_model(sc, sd).state_dict(),
                first_round=1,
                last_round=rounds,
                stage="pretrain",
                checkpoint=ckpt_path,
                checkpoint_extra=lambda: {"key": key, "resume_key": resume_key, "updates": updates},
                on_resume=resume,
                on_round_end=bar.update,
                update_sink=sink if interval else None,
                availability=edge_of(sc)[0],
                clock=clock,
            )
        finally:
            bar.close()
        pre.update(state=res.state, rounds=[r.as_dict() for r in res.rounds], cost=res.cost.as_dict(), cached=False)
        if clock is not None:
            pre["clock"] = clock.state()
        pre["wall_s"] = time.perf_counter() - t_stage
        if interval:
            pre["updates"] = updates

    return stage


def store_in_cache(key: str, pre: dict[str, Any], interval: int, progress: bool) -> None:
    """Store the pretraining in the cache; a cache is an optimisation, so a failure to write it is a warning."""
    if pre.get("mixed_settings"):
        stage_line(progress, "pretraining was resumed under other client resources: not stored in the cache")
        return
    try:
        cache.save_pretrained(key, cache_entry(pre), interval)
    except OSError as e:
        stage_line(progress, f"warning: cannot write the pretraining cache ({e.strerror or e}); going on without it")


def cache_entry(pre: dict[str, Any]) -> dict[str, Any]:
    """What the pretraining cache keeps of a pretraining result: its state, rounds, cost, update history and clock,
    those present.
    """
    return {k: pre[k] for k in ("state", "rounds", "cost", "updates", "clock") if k in pre}
