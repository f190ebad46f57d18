"""What the duties may use of the node: a frozen bundle of narrow collaborators.

The duties never see the ``Node``. They read the committed chain through a
``ChainView``, keep units and verdicts in the ``WorkPool``, run torch work
through the ``WorkRunner``, gossip through the ``Network``, act through the
node's ``Seams``, start tasks through ``spawn`` and tell the proposer that
something it waits for changed through ``wake``.

This module must never hold behaviour.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from consensus.crypto import Keypair
from consensus.types import ExecutionProfile, JobSpec
from consensus.work import WorkExecutor
from tdml_node.metrics import NodeMetrics
from tdml_node.pools import WorkPool
from tdml_node.runtime.netlink import Network
from tdml_node.runtime.runner import WorkRunner
from tdml_node.runtime.seams import Seams
from tdml_node.runtime.views import ChainView


class DutyExecutor(WorkExecutor, Protocol):
    """The executor as the duties use it: the work, and what it can run and reports running under."""

    def can_run(self, spec: JobSpec) -> bool: ...

    def receipt(self, spec: JobSpec) -> ExecutionProfile: ...


@dataclass(frozen=True)
class DutyContext:
    keypair: Keypair
    chain: ChainView
    pool: WorkPool
    runner: WorkRunner
    network: Network
    executor: DutyExecutor
    seams: Seams
    metrics: NodeMetrics
    spawn: Callable[[Coroutine[Any, Any, Any], str], None]
    wake: Callable[[], None]
    clock: Callable[[], float]
    """Seconds on the event loop's clock (a simulated one in simulations)."""

    @property
    def me(self) -> bytes:
        return self.keypair.public_key

    @property
    def address(self) -> bytes:
        return self.keypair.address

    @property
    def chain_id(self) -> str:
        return self.chain.chain_id
