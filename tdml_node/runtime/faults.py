"""How much a peer is penalised for each kind of bad input: one table, no reading of error text.

A ``ProtocolError`` says what kind of fault its input is (``FaultKind``);
this table turns the kind into the score a peer loses. A signature that does
not verify cannot come from an honest peer (every node checks signatures
before it relays), so it bans at once; a malformed message costs much; a
message from someone without the right to sign it a little (such messages
can cross a validator-set change); a message that is merely invalid against
our state, or stale, costs nothing, because honest peers that are ahead or
behind send those.

This module must never decide whether input is bad: the rules in
``consensus`` raise the errors, the callers hand them here.
"""

from __future__ import annotations

from consensus.errors import FaultKind, ProtocolError
from tdml_node.runtime.netlink import Network

SEVERITY_NONE = 0
SEVERITY_MINOR = 5
SEVERITY_MAJOR = 20
SEVERITY_FATAL = 100

SEVERITY: dict[FaultKind, int] = {
    FaultKind.BAD_SIGNATURE: SEVERITY_FATAL,
    FaultKind.MALFORMED: SEVERITY_MAJOR,
    FaultKind.NOT_AUTHORISED: SEVERITY_MINOR,
    FaultKind.INVALID: SEVERITY_NONE,
    FaultKind.STALE: SEVERITY_NONE,
}


def severity_of(kind: FaultKind) -> int:
    return SEVERITY[kind]


def penalise(network: Network, peer_id: bytes | None, what: str, error: ProtocolError) -> None:
    """Penalise the peer that sent ``what`` (a message kind, for the log) by the table's score for the error."""
    severity = severity_of(error.kind)
    if peer_id is not None and severity:
        network.penalize(peer_id, f"{what}: {error}", severity)
