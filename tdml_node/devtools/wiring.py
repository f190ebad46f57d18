"""The dev-network wiring of a Byzantine behaviour: the one place that may install one.

``behaviour_seams`` turns the configured behaviour names into the node's
seams: the honest ones when none is named, and otherwise, only on a dev
network, the honest ones with one behaviour's seam bent. The behaviour's
fault counts are registered as metrics (``tdml_byzantine_faults``,
``tdml_byzantine_first_fault_height``) on the node's registry, so the
adversarial suite reads them as any observer reads metrics.

This module must never let a behaviour run outside a dev network, and
never import the behaviours unless one is named.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge

from consensus.crypto import Keypair
from tdml_node.devtools.catalogue import ALL_BEHAVIOURS
from tdml_node.runtime.seams import HONEST, Seams

if TYPE_CHECKING:
    from tdml_node.devtools.behaviours import Behaviour


class BehaviourError(ValueError):
    """The configured behaviour is unknown, or not allowed here."""


def make_behaviour(name: str, keypair: Keypair, chain_id: str) -> Behaviour:
    # Imported here, so that an honest node never loads the behaviours at all.
    from tdml_node.devtools.behaviours import BEHAVIOURS, Equivocator

    if name in Equivocator.names:
        return Equivocator(name, keypair, chain_id)
    for cls in BEHAVIOURS:
        if name in cls.names:
            return cls(name)
    raise BehaviourError(f"unknown Byzantine behaviour {name!r}; known: {', '.join(ALL_BEHAVIOURS[1:])}")


def behaviour_seams(
    names: tuple[str, ...], *, dev: bool, keypair: Keypair, chain_id: str
) -> tuple[Seams, Behaviour | None]:
    """The node's seams for the configured behaviours, and the behaviour installed (None when honest)."""
    wanted = [n for n in names if n and n != "honest"]
    if not wanted:
        return HONEST, None
    if not dev:
        raise BehaviourError("Byzantine behaviours are test-only: they need a dev network (--dev)")
    if len(wanted) > 1:
        raise BehaviourError("give one Byzantine behaviour at a time")
    behaviour = make_behaviour(wanted[0], keypair, chain_id)
    return behaviour.bend(HONEST), behaviour


def register_metrics(behaviour: Behaviour, registry: CollectorRegistry, height: Callable[[], int]) -> None:
    """Serve the behaviour's fault counts as metrics; ``height`` is the node's committed height."""
    behaviour.height = height
    faults = Gauge("tdml_byzantine_faults", "Faults this node committed on purpose (test networks only)", registry=registry)
    faults.set_function(lambda: behaviour.faults)
    first = Gauge(
        "tdml_byzantine_first_fault_height", "Height of this node's first deliberate fault", registry=registry
    )
    first.set_function(lambda: behaviour.first_fault_height)
