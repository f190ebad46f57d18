"""The protocol's two kinds of error: something a peer sent, and something we broke.

- ``ProtocolError``: input from outside (a message, a block, a transaction, a
  work unit) breaks a rule. The input is refused and the node carries on; the
  shell penalises the peer that sent it according to the error's
  ``FaultKind``, through one table (``tdml_node.node.faults``). Every rule
  violation the core reports is one of these, so no caller ever has to read
  an error's text to decide what it means.
- ``LocalFault``: this node broke one of its own invariants (its storage
  failed, it was about to sign twice, a state it computed is impossible). The
  node must stop rather than go on and risk signing or committing something
  wrong.

This module must never hold rules: it names the kinds of fault, and the
modules that check rules raise them.
"""

from __future__ import annotations

import enum


class FaultKind(enum.Enum):
    """What kind of wrong a piece of input is; it decides how much its sender is penalised."""

    BAD_SIGNATURE = "bad-signature"
    """A signature that does not verify: forged, corrupted, or for another chain."""
    MALFORMED = "malformed"
    """Well-encoded but impossible in shape (a proposal whose block is for another height)."""
    NOT_AUTHORISED = "not-authorised"
    """Signed by someone without the right to sign it (a non-validator's vote, another round's proposer)."""
    INVALID = "invalid"
    """Breaks a rule of the state (a nonce already used, a block whose root does not match)."""
    STALE = "stale"
    """Was valid once or will be soon (another step, another assignment): honest peers send these when behind."""


class ProtocolError(Exception):
    """Input from outside breaks a protocol rule; ``kind`` says what kind of fault it is."""

    default_kind = FaultKind.INVALID

    def __init__(self, message: str, kind: FaultKind | None = None) -> None:
        super().__init__(message)
        self.kind = kind if kind is not None else self.default_kind


class LocalFault(Exception):
    """This node broke one of its own invariants and must stop (storage, double signing, impossible state)."""


class InvariantViolation(LocalFault):
    """A state the node computed itself is impossible; going on could commit or sign something wrong."""


class InvalidBlock(ProtocolError):
    """A block breaks a protocol rule; the message says which, the kind how bad it is."""


class InvalidTransaction(InvalidBlock):
    """One transaction breaks a rule (raised by ``transition.apply_transaction``)."""


class InvalidCommit(InvalidBlock):
    """A commit certificate does not certify what it claims."""
