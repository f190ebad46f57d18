"""How a result section is filled: each row says beside its labels how one repeat's figures give it.

A ``Figure`` is one row of a ``benchmarks.common.BenchResult``: its label,
unit, baseline label and note, and a function from one repeat's figures (a
frozen dataclass of the measurements) to its value, or to its value and the
baseline's, or to None when the repeat has no value for it. A ``Table`` holds
a section's figures and per-repeat facts, takes one repeat at a time, and
finally gives the section with its leading facts, its notes and the load
average of its measurements.

This module must never measure anything or format a figure: the section
renderer in ``benchmarks.run_all`` does that from the JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from benchmarks.common import BenchResult, Row

R = TypeVar("R")

Value = float | tuple[float, float] | None
"""A row's value in one repeat: ours, (ours, baseline), or none this repeat."""


@dataclass(frozen=True, slots=True)
class Figure(Generic[R]):
    """One row of a section and how one repeat's figures give its value."""

    label: str
    unit: str
    value: Callable[[R], Value]
    baseline_label: str | None = None
    note: str = ""


Fact = tuple[str, Callable[[R], Any]]
"""A fact recorded once per repeat: its key and how a repeat's figures give it."""


class Table(Generic[R]):
    """A result section being filled one repeat at a time."""

    def __init__(self, result: BenchResult, figures: Sequence[Figure[R]], facts: Sequence[Fact[R]] = ()) -> None:
        self.result = result
        self._rows: list[tuple[Row, Callable[[R], Value]]] = [
            (result.row(f.label, f.unit, baseline_label=f.baseline_label, note=f.note), f.value) for f in figures
        ]
        self._facts = tuple(facts)
        self.facts: dict[str, list[Any]] = {key: [] for key, _ in self._facts}
        """Each per-repeat fact, one entry per repeat so far."""

    def add(self, repeat: R) -> None:
        for row, value in self._rows:
            got = value(repeat)
            if isinstance(got, tuple):
                row.add(*got)
            elif got is not None:
                row.add(got)
        for key, fact in self._facts:
            self.facts[key].append(fact(repeat))

    def finish(self, leading: dict[str, Any], notes: list[str], loads: Callable[[str], list[str]]) -> BenchResult:
        """The section: rows that got a value, ``leading`` facts, the per-repeat ones, ``loads(name)``, notes."""
        r = self.result
        r.rows = [row for row in r.rows if row.ours]
        r.facts = {**leading, **self.facts, "load_average_before_to_after": loads(r.name)}
        r.notes = notes
        return r
