"""This node's keys to private jobs' datasets: its own key share of each, opened once and kept in memory.

A private job's ``key_shares`` (on the chain) seal the dataset's key to
each member's node key. The key ring finds the share addressed to this
node in the committed state and opens it with the node's signing key; the
executor asks it by job spec when it decodes a private dataset.

This module must never write a key anywhere (disk, logs, metrics, RPC) and
never hand one out but to the executor's decoder.
"""

from __future__ import annotations

from collections.abc import Callable

from consensus.crypto import Keypair
from consensus.state import LedgerState
from consensus.types import Hash32, JobSpec
from tdml_node.work.sealed import SealError, open_key


class KeyRing:
    def __init__(self, keypair: Keypair) -> None:
        self._keypair = keypair
        self._state: Callable[[], LedgerState] | None = None
        self._keys: dict[Hash32, bytes] = {}
        """By dataset digest (a ciphertext's): the key that opens it."""

    def attach(self, state: Callable[[], LedgerState]) -> None:
        """Read the shares from this committed state from now on (the chain head exists after the executor)."""
        self._state = state

    def key_for(self, spec: JobSpec) -> bytes | None:
        """The key of ``spec``'s private dataset, if a job on the chain seals one to this node."""
        known = self._keys.get(spec.dataset)
        if known is not None or self._state is None:
            return known
        me = self._keypair.public_key
        for job in self._state().jobs.values():
            if job.spec.dataset != spec.dataset or not job.spec.private:
                continue
            for share in job.key_shares:
                if share.recipient != me:
                    continue
                try:
                    key = open_key(share.sealed_key, self._keypair.signing_key)
                except SealError:
                    continue  # a share that does not open is the submitter's fault; another job's may
                self._keys[spec.dataset] = key
                return key
        return None

    def holds(self, spec: JobSpec) -> bool:
        return self.key_for(spec) is not None
