"""The body of the ServerApp: map partition ids to nodes, then run the run's stages on the grid in order.

``run_apps`` (fed_opc.flower) wraps this body in a Flower ``ServerApp`` and runs it on Ray or in-process. A stage is a
callable ``stage(grid, node_of) -> None`` built by ``strategies.run``; stages record their own results and checkpoints.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from fed_opc.flower import discover_nodes

log = logging.getLogger("fed_opc")

Stage = Callable[..., None]


def make_server_main(num_clients: int, stages: Sequence[Stage], register_timeout_s: float = 120.0) -> Callable:
    """The ServerApp body: discover the node map once, then run ``stages`` with it."""

    def main(grid) -> dict[int, int]:
        node_of = discover_nodes(grid, num_clients, timeout=register_timeout_s)
        log.info("%d clients registered", len(node_of))
        for stage in stages:
            stage(grid, node_of)
        return node_of

    return main
