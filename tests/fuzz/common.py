"""What the fuzz targets share: per-input randomness, failures, and result bookkeeping."""

from __future__ import annotations

import random
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

MAX_FAILURES_KEPT = 20
MAX_HEX = 4096
"""Inputs are printed in hex up to this many characters (the replay command rebuilds the rest)."""


class FuzzFailure(AssertionError):
    """A property the target must keep was broken; ``kind`` names which."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def rng_for(seed: int, target: str, index: int) -> random.Random:
    """The generator of input ``index``: a function of the seed, the target and the index only."""
    return random.Random(f"tdml-fuzz/{seed}/{target}/{index}")


@dataclass
class Failure:
    """One input that broke a property, with what is needed to reproduce it."""

    target: str
    seed: int
    index: int
    kind: str
    detail: str
    input_hex: str
    context: str = ""

    def describe(self) -> str:
        hex_text = self.input_hex if len(self.input_hex) <= MAX_HEX else self.input_hex[:MAX_HEX] + "..."
        return (
            f"FUZZ FAILURE target={self.target} seed={self.seed} index={self.index} kind={self.kind}\n"
            f"  {self.detail}\n"
            f"  context: {self.context}\n"
            f"  input ({len(self.input_hex) // 2} bytes): {hex_text}\n"
            f"  reproduce: python -m tests.fuzz.run --seed {self.seed} --replay {self.target}:{self.index}"
        )


@dataclass
class ChunkResult:
    """What one run of a range of inputs of one target found."""

    target: str
    inputs: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: list[Failure] = field(default_factory=list)
    failure_count: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def add_failure(self, failure: Failure) -> None:
        self.failure_count += 1
        self.outcomes[f"FAIL:{failure.kind}"] += 1
        if len(self.failures) < MAX_FAILURES_KEPT:
            self.failures.append(failure)

    def merge(self, other: ChunkResult) -> None:
        self.inputs += other.inputs
        self.outcomes.update(other.outcomes)
        self.failure_count += other.failure_count
        self.failures.extend(other.failures[: max(0, MAX_FAILURES_KEPT - len(self.failures))])
        self.seconds += other.seconds
        for key, value in other.extra.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.extra[key] = self.extra.get(key, 0) + value
            else:
                self.extra.setdefault(key, value)


def failure_from(exc: BaseException, target: str, seed: int, index: int, data: bytes, context: str) -> Failure:
    """A ``Failure`` for a broken property or an unexpected exception (with its traceback)."""
    if isinstance(exc, FuzzFailure):
        kind, detail = exc.kind, exc.detail
    else:
        kind = f"crash:{type(exc).__name__}"
        detail = "".join(traceback.format_exception(exc)).strip()[-3000:]
    return Failure(target, seed, index, kind, detail, data.hex(), context)
