"""What a run says while it runs: the file log, the progress bars, the stage lines and the timing line."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from strategies.training import RoundRecord

log = logging.getLogger("fed_opc")


class FileLog:
    """Route the fed_opc and flwr loggers to ``<out>/log.txt`` for the duration of a run."""

    def __init__(self, path: Path) -> None:
        self.handler = logging.FileHandler(path, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.loggers = [logging.getLogger("fed_opc"), logging.getLogger("flwr")]

    def __enter__(self) -> FileLog:
        self.levels = [lg.level for lg in self.loggers]
        for lg in self.loggers:
            lg.addHandler(self.handler)
        logging.getLogger("fed_opc").setLevel(logging.INFO)
        # Flower logs every round at INFO on the console; our own log and progress bar say what matters
        logging.getLogger("flwr").setLevel(logging.ERROR)
        return self

    def __exit__(self, *exc: object) -> None:
        for lg, level in zip(self.loggers, self.levels):
            lg.removeHandler(self.handler)
            lg.setLevel(level)
        self.handler.close()


class Progress:
    """A progress bar over rounds with the latest test accuracy (tqdm; silent when disabled)."""

    def __init__(self, enabled: bool, total: int, desc: str) -> None:
        self.bar = None
        if enabled and total > 0:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="round", dynamic_ncols=True)

    def skip_to(self, done: int) -> None:
        """Count ``done`` rounds as already finished (a resumed stage)."""
        if self.bar is not None:
            self.bar.update(done - self.bar.n)

    def update(self, rec: RoundRecord) -> None:
        """Advance the bar by one round, showing ``rec``'s test accuracy when the round was evaluated."""
        if self.bar is not None:
            self.bar.update(1)
            if rec.test_acc == rec.test_acc:  # rounds between evaluations keep the last accuracy shown
                self.bar.set_postfix(test_acc=f"{rec.test_acc:.3f}")

    def close(self) -> None:
        """Close the bar (nothing to do when disabled)."""
        if self.bar is not None:
            self.bar.close()


def timing_line(timing: dict[str, Any]) -> str:
    """``stage 12.3 s, ...`` for the log (per-method entries summed under their stage; ``attack_tasks``, the attack
    tasks' own seconds, which overlap, is left to results.json: ``attacks`` is that stage's wall time).
    """
    parts = []
    for stage, v in timing.items():
        if stage == "attack_tasks":
            continue
        total = sum(v.values()) if isinstance(v, dict) else v
        parts.append(f"{stage} {total:.1f} s")
    return ", ".join(parts)


def stage_line(progress: bool, text: str) -> None:
    """Log ``text``; with ``progress``, also print it to stderr as ``[fed-opc] text``."""
    log.info(text)
    if progress:
        import sys

        print(f"[fed-opc] {text}", file=sys.stderr, flush=True)
