"""When a stand-in checker steps in for a designated one that has not answered.

This module must never read a clock: the caller passes the times.
"""

from __future__ import annotations


def standin_due(
    waited: float, uptime: float, standin_after: float, designated: tuple[bytes, ...], reachable: frozenset[bytes]
) -> bool:
    """Whether a stand-in checker should check a unit still short of passing verdicts.

    It waits ``standin_after`` seconds for the designated checkers, unless one
    of them is not reachable (not connected, and not this node): then it
    checks at once, provided this node has run ``standin_after`` seconds
    itself, time enough to have connected to the peers that are up.
    """
    if waited >= standin_after:
        return True
    return uptime >= standin_after and any(k not in reachable for k in designated)
