"""Attacks on unlearned models: a registry of recovery attacks and of gradient-inversion targets.

Attacks see only a ``ServerView`` (what an honest-but-curious server or model holder has); ground truth is used by the
metrics alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

RECOVERY: dict[str, Callable[..., Any]] = {}
INVERSION_TARGETS: dict[str, Callable[..., Any]] = {}
