"""A tiny run end to end, pinned: its results.json must match a committed fixture exactly.

The fixtures (``fixtures/golden_results.json``; ``fixtures/golden_run_dir.json``: the files of the run directory and the
log's messages) were written by the code as it was before the run's stages were split
into the ``strategies.run`` package; a refactoring of the run must reproduce it. They were written again once since,
when both settings' evaluation became ``fed_opc.metrics.evaluate_methods``: the only change was the place of
``avg_gap`` in the centralized ``retrain`` block's keys (now where every other method has it), every value equal. Values that measure this machine
rather than the computation are left out of the comparison: every ``timing`` block, every ``wall_s`` and ``RTE_s``
(wall-clock seconds) and the pretraining cache key (a hash of the training code's source bytes); in the log, the
timestamps, the run directory's path and the seconds. Key order counts: the report lists methods in the order of ``results.json``.

To write the fixture again after an intended change of the numbers: ``GOLDEN_WRITE=1 pytest tests/strategies/test_golden_run.py``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from fed_opc.config import parse_scenario
from strategies.run import simulate
from tests.helpers import tiny

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE = FIXTURES / "golden_results.json"
RUN_DIR_FIXTURE = FIXTURES / "golden_run_dir.json"
# measured on this machine, not computed by the run
_VOLATILE = frozenset({"timing", "wall_s", "RTE_s", "cache_key"})


def golden_scenario() -> dict[str, Any]:
    """Two request rounds (a client and a class), three centralized and two federated methods, cheap attacks."""
    raw = tiny(name="golden", **{"federation.rounds": 3, "data.num_clients": 5, "federation.clients_per_round": 3})
    raw["requests"] = [
        {"id": "gone", "client": 1, "scope": "client", "round": 2},
        {"id": "cls", "clients": "all", "scope": "class", "classes": [0], "round": 3},
    ]
    raw["unlearning"] = {
        "methods": ["fed_opc", "fed_retrain", "opc", "retrain", "finetune"],
        "fed_opc": {"max_rounds": 2},
        "retrain": {"epochs": 1},
        "finetune": {"epochs": 1},
    }
    raw["attacks"] = {
        "recovery": ["fm", "probe", "relearn"],
        "k_shot": 5,
        "relearn_steps": [1],
        "inversion": {"targets": ["global_model", "model_difference"], "images": 1, "iterations": 2, "restarts": 1},
        # one attack task at a time, so that the log's attack lines come in one order (with more workers the tasks'
        # lines interleave; the numbers do not change: tests/strategies/test_attack_stage.py)
        "workers": 1,
    }
    return raw


def stable(value: Any) -> Any:
    """``value`` without the entries that measure this machine (``_VOLATILE``), at any depth."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


def log_messages(text: str, out: Path) -> list[str]:
    """The log's lines without their timestamps, with the run directory and every duration masked."""
    lines = []
    for line in text.splitlines():
        msg = line.split(" ", 2)[2].replace(str(out), "OUT")  # date, time, then the message
        msg = re.sub(r"\(\d+\.\d s\)", "(_ s)", msg)
        msg = re.sub(r"RTE_s=[^,]*", "RTE_s=_", msg)
        msg = re.sub(r"done in .*", "done in _", msg)
        lines.append(msg)
    return lines


def test_tiny_run_reproduces_the_golden_results(tmp_path):
    out = tmp_path / "run"
    r = simulate(parse_scenario(golden_scenario()), out, use_cache=False)
    got = stable(json.loads((out / "results.json").read_text()))
    assert got == stable(r.results)
    run_dir = {
        "files": sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()),
        "log": log_messages((out / "log.txt").read_text(), out),
    }
    if os.environ.get("GOLDEN_WRITE"):
        FIXTURE.write_text(json.dumps(got, indent=1) + "\n")
        RUN_DIR_FIXTURE.write_text(json.dumps(run_dir, indent=1) + "\n")
    want = json.loads(FIXTURE.read_text())
    assert rounded(got) == rounded(want)
    assert keys_in_order(got) == keys_in_order(want)  # the same order of keys
    assert run_dir == json.loads(RUN_DIR_FIXTURE.read_text())


def rounded(value: Any) -> Any:
    """``value`` with every float to 6 significant digits: a refactoring that changes the computation moves numbers far
    more than that, while another CPU's vector instructions may move the last bits of a float sum."""
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    if isinstance(value, float):
        return float(f"{value:.6g}")
    return value


def keys_in_order(value: Any) -> list[Any]:
    """Every mapping's keys, in order, depth first."""
    if isinstance(value, dict):
        return [[k, keys_in_order(v)] for k, v in value.items()]
    if isinstance(value, list):
        return [keys_in_order(v) for v in value]
    return []
