"""What a peer's proposal or vote must be to count at all: pure checks that name the fault.

``check_proposal`` and ``check_vote`` return ``None`` for a message that may
be counted, or the ``Rejected`` that answers it. Which ``FaultKind`` a breach
is, the kind the shell penalises the sender by, is decided here and nowhere
else:

- ``BAD_SIGNATURE``: the signature does not verify for its signer, this chain
  and the message's domain;
- ``NOT_AUTHORISED``: a vote by a non-validator, a proposal by anyone but its
  round's proposer;
- ``MALFORMED``: a proposal whose block is for another height, or whose valid
  round is not before its own round.

The cheap checks come first and the signature last, so a flood of junk costs
a lookup, not a signature verification.

This module must never look at the round state or store anything, and never
judge whether a message is timely: the driver drops messages of other heights
and far rounds before they get here, without blame, as honest peers that are
behind or ahead send them.
"""

from __future__ import annotations

from consensus import crypto
from consensus.errors import FaultKind
from consensus.tendermint.types import Rejected
from consensus.types import SignedProposal, SignedVote
from consensus.validators import ValidatorSet


def check_proposal(chain_id: str, validators: ValidatorSet, signed: SignedProposal) -> Rejected | None:
    p = signed.proposal
    if p.proposer != validators.get_proposer(chain_id, p.height, p.round):
        return Rejected(FaultKind.NOT_AUTHORISED, f"proposal for round {p.round} not from its proposer")
    if p.block.header.height != p.height or p.valid_round >= p.round:
        return Rejected(FaultKind.MALFORMED, "malformed proposal")
    if not crypto.verify_value(p.proposer, crypto.DOMAIN_PROPOSAL, chain_id, p, signed.signature):
        return Rejected(FaultKind.BAD_SIGNATURE, "bad proposal signature")
    return None


def check_vote(chain_id: str, validators: ValidatorSet, signed: SignedVote) -> Rejected | None:
    v = signed.vote
    if v.validator not in validators:
        return Rejected(FaultKind.NOT_AUTHORISED, "vote from a non-validator")
    if not crypto.verify_value(v.validator, crypto.DOMAIN_VOTE, chain_id, v, signed.signature):
        return Rejected(FaultKind.BAD_SIGNATURE, "bad vote signature")
    return None
