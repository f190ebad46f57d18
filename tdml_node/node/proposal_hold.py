"""Holding a propose timeout back while this node checks the round's proposal.

Checking a proposal means replaying work, which can outlast the propose
timeout; prevoting nil for a proposal already in hand throws the round away
(CometBFT validates inside its consensus routine, so its timeouts wait for the
check). The node holds the timeout of a round whose proposal it is checking
and lets it go when the check ends, or when the hold itself times out, so a
check that hangs cannot stall consensus.

This module only keeps the book: it must never schedule, sleep or touch the
consensus core; the node delivers what it hands back.
"""

from __future__ import annotations

import collections

from consensus.tendermint import Step, TimeoutElapsed

RoundKey = tuple[int, int]


class ProposalHold:
    def __init__(self) -> None:
        self._checks: collections.Counter[RoundKey] = collections.Counter()
        self._held: dict[RoundKey, TimeoutElapsed] = {}
        self._released: set[RoundKey] = set()

    def check_started(self, height: int, round_: int) -> None:
        self._checks[(height, round_)] += 1

    def check_ended(self, height: int, round_: int) -> TimeoutElapsed | None:
        """The held timeout to deliver now, if this was the round's last check in flight."""
        key = (height, round_)
        self._checks[key] -= 1
        if self._checks[key] > 0:
            return None
        del self._checks[key]
        return self.release(key)

    def hold(self, event: TimeoutElapsed) -> bool:
        """Whether to hold ``event`` back (also True for a repeat of one already held).

        A newly held timeout needs a deadline: the caller schedules ``release``
        for it when ``is_held`` was False before this call.
        """
        key = (event.height, event.round)
        if event.step != Step.PROPOSE or not self._checks[key] or key in self._released:
            return False
        self._held.setdefault(key, event)
        return True

    def is_held(self, height: int, round_: int) -> bool:
        return (height, round_) in self._held

    def release(self, key: RoundKey) -> TimeoutElapsed | None:
        """Let a held timeout go (once: a round's timeout is never held twice)."""
        event = self._held.pop(key, None)
        if event is not None:
            self._released.add(key)
        return event

    def prune(self, committed_height: int) -> None:
        """Forget the rounds of heights already committed."""
        self._released = {k for k in self._released if k[0] > committed_height}
        self._held = {k: e for k, e in self._held.items() if k[0] > committed_height}
