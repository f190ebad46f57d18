"""Deliberate misbehaviour for test networks: the seams a Byzantine node bends.

An honest node uses ``Honest``: every hook returns its input unchanged. The
node refuses any other behaviour unless its network is a dev network
(``--dev``), and ``tdml-node run --help`` marks the options as test-only.

This module must never be active on a production network.
"""

from __future__ import annotations

from consensus.types import JobState, WorkSubmission
from consensus.work import CheckResult


class Honest:
    """No misbehaviour."""

    name = "honest"

    def tamper_submission(self, sub: WorkSubmission, job: JobState) -> WorkSubmission:
        return sub

    def tamper_check(self, result: CheckResult, sub: WorkSubmission) -> CheckResult:
        return result


BEHAVIOURS: dict[str, type[Honest]] = {"honest": Honest}


def make_behaviour(names: tuple[str, ...], *, dev: bool) -> Honest:
    """The behaviour named in the config; refuses any misbehaviour outside a dev network."""
    wanted = [n for n in names if n and n != "honest"]
    if not wanted:
        return Honest()
    if not dev:
        raise ValueError("Byzantine behaviours are test-only: they need a dev network (--dev)")
    if len(wanted) > 1:
        raise ValueError("give one Byzantine behaviour at a time")
    cls = BEHAVIOURS.get(wanted[0])
    if cls is None:
        raise ValueError(f"unknown Byzantine behaviour {wanted[0]!r}; known: {', '.join(sorted(BEHAVIOURS))}")
    return cls()
