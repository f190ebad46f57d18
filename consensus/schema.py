"""The message reference of ``docs/protocol.md``, rendered from the codec's registry.

Every registered message is listed with its tag, its version and its fields
in wire order (the order of the canonical array ``[tag, version, field_1,
...]``), each with its type, its bounds as the codec enforces them (from the
``Annotated`` markers and the rules registered for the scalar ``NewType``\\ s)
and its meaning. Types and bounds are read from the declarations, so they
cannot drift from the code; meanings come from the class docstrings and from
``FIELD_NOTES`` below, which a test holds complete for ``consensus.types``.

``tdml_node.devtools.protocol_doc`` writes the rendering into the document
and a test checks that the document holds exactly what this module renders.

This module must never do I/O, print or depend on anything but the standard
library and ``consensus``: it is a pure function of the registry.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from consensus import codec

# ---------------------------------------------------------------------------
# What the declarations cannot say: the meaning of each field.

SUMMARIES: dict[str, str] = {
    "Transfer": "Move `amount` from the sender's balance to the account `to`.",
    "Transaction": "A transaction: who sends it, its sequence number, its fee and what it does. Signed in domain `tx`.",
    "SignedTransaction": "A transaction with its sender's signature.",
    "SignedWorkSubmission": "A work submission with its trainer's signature (domain `work`).",
    "SignedVerdict": "A verdict with its validator's signature (domain `verdict`).",
    "Vote": "A prevote or precommit for a block (or for nil) at one height and round. Signed in domain `vote`.",
    "SignedVote": "A vote with its validator's signature.",
    "CommitSig": "One validator's precommit signature inside a commit certificate.",
    "BlockBody": "What a block carries; applied in the order transactions, evidence, submissions with their verdicts, completed steps, deadlines.",
    "Block": "A block: its header and its body.",
    "Proposal": "A proposer's proposal of a block for one height and round. Signed in domain `proposal`.",
    "SignedProposal": "A proposal with its proposer's signature.",
    "AccountEntry": "One account of the state snapshot, with its work record.",
    "ValidatorEntry": "One member of a validator set and its voting power.",
    "GenesisNode": "A node registered at genesis; its stake is bonded out of nothing (not taken from a balance).",
    "GenesisBalance": "A balance credited at genesis.",
}
"""One-line summaries of the messages that carry no docstring of their own."""

FIELD_NOTES: dict[str, str] = {
    # Job specification
    "IntArg.name": "argument name",
    "IntArg.value": "its value",
    "DecimalArg.name": "hyperparameter name",
    "DecimalArg.value": "its value as decimal text, matching `^\\d{1,12}(\\.\\d{1,16})?([eE]-?\\d{1,3})?$`; read as the nearest IEEE double",
    "ModelSpec.name": "registry name: `mlp`, `cnn` or `char_transformer` (§8.2)",
    "ModelSpec.args": "exactly the model's arguments, sorted by name, each once",
    "OptimizerSpec.name": "`sgd` or `adamw` (§8.7)",
    "OptimizerSpec.params": "hyperparameters sorted by name, each once; `lr` required, the others default (§8.7)",
    "ScheduleSpec.name": "`constant` or `linear` (§8.8)",
    "ScheduleSpec.warmup_steps": "`linear`: steps of linear warm-up; ignored by `constant`",
    "ScheduleSpec.final_fraction": "`linear`: the fraction of `lr` reached at `t = steps`; ignored by `constant`",
    "ExecutionProfile.dtype": "`float32` or `float64`: the dtype of parameters, data and every result tensor",
    "ExecutionProfile.threads": "intra-op thread count (`torch.set_num_threads`)",
    "ExecutionProfile.deterministic": "`torch.use_deterministic_algorithms` setting",
    "ExecutionProfile.device": "`cpu` or `cuda`",
    "ExecutionProfile.torch_version": "the exact `torch.__version__` string",
    "VerificationPolicy.checked_steps": "inner steps each checker replays (at most `inner_steps`)",
    "VerificationPolicy.checkers_per_unit": "passing verdicts a unit needs; 0 means f + 1",
    "VerificationPolicy.tolerance": "`\"0\"`: bit-exact comparison under the job's profile; else the relative distance allowed (other profiles may train)",
    "VerificationPolicy.unit_timeout_blocks": "blocks a shard's trainer has before the shard is reassigned",
    "JobSpec.name": "a label",
    "JobSpec.task": "`classification` or `char_lm`",
    "JobSpec.model": "the registry model",
    "JobSpec.dataset": "digest of the dataset bundle (§8.3)",
    "JobSpec.seq_len": "`char_lm`: tokens per sample window; must be ≥ 1 (and ≤ the model's `ctx`); 0 for classification",
    "JobSpec.loss": "`cross_entropy`",
    "JobSpec.optimizer": "the optimizer (inner optimizer when `inner_steps` > 1)",
    "JobSpec.outer_optimizer": "present exactly when `inner_steps` > 1; applied to the mean delta",
    "JobSpec.schedule": "learning-rate schedule of `optimizer`",
    "JobSpec.global_batch": "samples per step over all shards; a multiple of `shards`",
    "JobSpec.shards": "K, work units per step",
    "JobSpec.inner_steps": "H, optimizer steps per unit",
    "JobSpec.steps": "T, outer steps of the job",
    "JobSpec.seed": "model initialisation (its low 32 bits, §8.2.6) and sample order (all 64 bits, §8.5)",
    "JobSpec.eval_every": "evaluate after step t when `(t + 1) % eval_every == 0` or t = T − 1; 0 never",
    "JobSpec.profile": "the execution profile (§8.11)",
    "JobSpec.verification": "how units are checked",
    "JobSpec.reward_per_unit": "paid to the trainer of each accepted unit, from the escrow",
    "JobSpec.reward_per_verdict": "paid to each counted checker of an accepted unit, from the escrow",
    "JobSpec.preprocessing": "the feature transform the dataset went through, for use on raw input; nil: none",
    "JobSpec.private": "the dataset blob is a sealed envelope that only the job's key shares open (tdml_node/work/sealed.py)",
    "JobSpec.pipeline": "the split of the model into stages trained by different trainers (consensus/pipeline.py); nil: whole-model units",
    "PipelineSpec.layer_bounds": "S + 1 strictly increasing layer indices from 0 to the model's layer count; stage s holds layers [b[s], b[s+1])",
    "PipelineSpec.micro_batches": "equal micro-batches a shard's batch goes through each stage in; must divide the shard batch",
    "Preprocessing.kind": "`standardize` (the only kind)",
    "Preprocessing.mean": "per-feature mean of the train split, float64 bit patterns",
    "Preprocessing.scale": "per-feature standard deviation of the train split (1 where it is 0), float64 bit patterns",
    # Transactions
    "Transfer.to": "the receiving account",
    "Transfer.amount": "the amount moved",
    "RegisterNode.stake": "stake bonded in addition to what the account already has, taken from its balance",
    "RegisterNode.roles": "bit set: 1 trainer, 2 validator (replaces the account's roles)",
    "RegisterNode.endpoint": "where peers reach the node (`host:port`), or empty",
    "SubmitJob.spec": "the job",
    "SubmitJob.budget": "escrowed from the sender's balance; pays the rewards, the rest returns when the job is done",
    "SubmitJob.key_shares": "(private jobs) the dataset's key sealed to each chosen member; empty for a public job",
    "ShareDataKey.job": "the private job whose data key is shared",
    "ShareDataKey.shares": "the key sealed to each new member (registered nodes without a share yet)",
    "KeyShare.recipient": "the member's node key (Ed25519); the share is sealed to its X25519 form",
    "KeyShare.sealed_key": "the 32-byte data key in a libsodium sealed box (crypto_box_seal) to the recipient",
    "SubmitJob.initial_model_root": "digest of the initialised model state, no optimizer state (§8.2.6); validators recompute it",
    "Transaction.sender": "the sender's public key; its address pays",
    "Transaction.nonce": "must equal the sender account's nonce, which then increments",
    "Transaction.fee": "paid to the block's proposer",
    "Transaction.payload": "what the transaction does",
    "SignedTransaction.tx": "the transaction",
    "SignedTransaction.signature": "the sender's signature over the transaction (domain `tx`)",
    # Work
    "WorkSubmission.job": "job id",
    "WorkSubmission.step": "the job's current step t",
    "WorkSubmission.shard": "k, the shard",
    "WorkSubmission.trainer": "the trainer's public key; its address must be the shard's assignee",
    "WorkSubmission.parent_model_root": "the job's committed model root the unit started from",
    "WorkSubmission.checkpoint_digests": "H > 1: digest of checkpoint i + 1 at index i (H entries); H = 1: empty",
    "WorkSubmission.result_digest": "digest of the result bundle (§8.6)",
    "WorkSubmission.losses": "H float32 bit patterns: the loss of inner step i at index i",
    "WorkSubmission.receipt": "the profile the unit ran under; must equal the job's profile in an exact job",
    "WorkSubmission.links": "(pipeline jobs) the stage state, inputs and handed-on gradient of the unit; nil for other jobs",
    "StageLinks.stage_root": "digest of the stage's state bundle in the committed PipelineState",
    "StageLinks.inputs": "digests of the blobs the unit read, in consensus/pipeline.py's expected_inputs order",
    "StageLinks.output_gradient": "digest of the gradient w.r.t. the stage input it hands to the stage before; nil when it hands none",
    "PipelineState.stage_roots": "digest of each stage's state bundle, in stage order",
    "SignedWorkSubmission.submission": "the submission",
    "SignedWorkSubmission.signature": "the trainer's signature (domain `work`)",
    "Verdict.submission_id": "H(WorkSubmission)",
    "Verdict.validator": "the checker's public key",
    "Verdict.sample_signature": "the checker's signature over the 32-byte submission id (domain `sample`)",
    "Verdict.checked_steps": "the inner steps the sample signature picks, ascending (§9.3)",
    "Verdict.failure": "0 passed, 1 wrong parent, 2 replay mismatch, 3 result inconsistent, 4 malformed blob",
    "Verdict.failed_step": "the inner step of a replay failure; −1 otherwise",
    "Verdict.observed_digest": "replay failure: the digest the replay produced; wrong parent: the job's model root; else all zero",
    "Verdict.observed_loss": "replay failure: the loss bits the replay produced; else 0",
    "Verdict.receipt": "the profile the checker ran under",
    "SignedVerdict.verdict": "the verdict",
    "SignedVerdict.signature": "the checker's signature (domain `verdict`)",
    "StepOutcome.job": "job id",
    "StepOutcome.step": "the step completed",
    "StepOutcome.model_root": "the new model root",
    "StepOutcome.train_loss": "float32 bits: mean over shards of each shard's last inner loss (§8.9)",
    "StepOutcome.eval_loss": "float32 bits of the test loss (§8.10); 0 when not evaluated",
    "StepOutcome.eval_correct": "test predictions whose arg-max is the target",
    "StepOutcome.eval_total": "test predictions made; 0 when not evaluated",
    # Evidence
    "WorkFraud.submission": "the signed submission",
    "WorkFraud.verdict": "the signed failing verdict",
    "FalseVerdict.submission": "the signed submission",
    "FalseVerdict.verdict": "the signed failing verdict that re-checking refutes",
    "FalsePass.submission": "the signed submission",
    "FalsePass.verdict": "the signed passing verdict that re-checking refutes",
    "Equivocation.vote_a": "one signed vote",
    "Equivocation.vote_b": "another signed vote of the same validator, kind, height and round, for another block",
    # Consensus
    "Vote.kind": "1 prevote, 2 precommit",
    "Vote.height": "the height",
    "Vote.round": "the round",
    "Vote.block_hash": "the block voted for; nil for a nil vote",
    "Vote.validator": "the voter's public key",
    "SignedVote.vote": "the vote",
    "SignedVote.signature": "the voter's signature (domain `vote`)",
    "CommitSig.validator": "the signer",
    "CommitSig.signature": "its signature (domain `vote`) over `Vote(2, height, round, block_hash, validator)` of the certificate",
    "CommitCertificate.height": "the height decided",
    "CommitCertificate.round": "the round in which it was decided",
    "CommitCertificate.block_hash": "the block decided",
    "CommitCertificate.signatures": "distinct validators' precommits, more than 2/3 of the power",
    "BlockHeader.chain_id": "the chain",
    "BlockHeader.height": "the block's height (the first block is 1)",
    "BlockHeader.round": "the round of its proposal",
    "BlockHeader.parent_hash": "hash of the previous block's header (the genesis hash at height 1)",
    "BlockHeader.proposer": "the proposer of (height, round) (§10)",
    "BlockHeader.body_hash": "H(body)",
    "BlockHeader.state_root": "H(StateSnapshot) after the block",
    "BlockHeader.time_ms": "the proposer's time, ms since the Unix epoch; above the parent's (decision 26)",
    "BlockBody.transactions": "applied first, in order",
    "BlockBody.submissions": "work units accepted by this block",
    "BlockBody.verdicts": "passing verdicts for those submissions",
    "BlockBody.evidence": "fraud, false verdicts, false passes and equivocations",
    "BlockBody.outcomes": "one per step the block completes, in job-id order",
    "BlockBody.last_commit": "the certificate of block h − 1; nil at height 1",
    "Block.header": "the header",
    "Block.body": "the body",
    "Proposal.height": "the height",
    "Proposal.round": "the round",
    "Proposal.block": "the proposed block",
    "Proposal.valid_round": "the round in which the proposer saw the block become valid, or −1",
    "Proposal.proposer": "the proposer's public key",
    "SignedProposal.proposal": "the proposal",
    "SignedProposal.signature": "the proposer's signature (domain `proposal`)",
    # Ledger state
    "Account.balance": "spendable balance",
    "Account.nonce": "the next transaction's nonce",
    "Account.stake": "bonded stake",
    "Account.roles": "bit set: 1 trainer, 2 validator",
    "Account.public_key": "known once the account signed a transaction or was registered at genesis",
    "Account.endpoint": "the registered endpoint",
    "Account.slashed": "slashed for good",
    "WorkRecord.units_accepted": "units accepted",
    "WorkRecord.units_rejected": "units proven fraudulent",
    "WorkRecord.units_reassigned": "shards taken away (timeout or slashing)",
    "WorkRecord.verdicts_signed": "passing verdicts counted for accepted units",
    "WorkRecord.false_verdicts": "false verdicts and false passes proven",
    "WorkRecord.times_slashed": "times slashed",
    "WorkRecord.rewards": "everything earned: unit, verdict and reporter rewards",
    "WorkRecord.missed_streak": "consecutive timed-out units (at most 10)",
    "WorkRecord.benched_until": "no new assignments before this height",
    "AccountEntry.address": "the account's address",
    "AccountEntry.account": "the account",
    "AccountEntry.record": "its work record",
    "JobState.job_id": "H(Transaction) of the submitting transaction",
    "JobState.spec": "the job",
    "JobState.submitter": "the submitter's address",
    "JobState.status": "0 active, 1 done, 2 stalled",
    "JobState.step": "the step in progress (T when done)",
    "JobState.model_root": "the committed model root the step starts from",
    "JobState.created_height": "height of the block that submitted the job",
    "JobState.step_started_height": "height of the block that started the step",
    "JobState.step_seed": "parent hash of the block that started (or restarted) the step",
    "JobState.assignment": "the trainer's address of each shard (empty while stalled or done)",
    "JobState.deadlines": "the height by which each shard's unit must be accepted",
    "JobState.accepted": "each shard's accepted submission id, or nil",
    "JobState.results": "each shard's accepted result digest, or nil",
    "JobState.escrow": "what is left of the budget",
    "JobState.last_outcome": "the outcome of the last completed step",
    "JobState.finished_height": "height of the block that completed the last step; 0 before",
    "JobState.key_shares": "(private jobs) the key shares the job was submitted with",
    "JobState.output_gradients": "(pipeline jobs) per unit, the handed-on gradient of its accepted submission; empty for other jobs",
    "ChainParams.min_validator_stake": "least stake of a validator (at least 1 in effect)",
    "ChainParams.min_trainer_stake": "least stake of a trainer (at least 1 in effect)",
    "ChainParams.slash_fraction_bps": "share of the stake burned by slashing, in basis points",
    "ChainParams.reporter_reward_bps": "share of the burned amount paid to the reporter, in basis points",
    "ChainParams.max_jobs_active": "most jobs not yet done (active or stalled)",
    "ValidatorEntry.public_key": "the validator",
    "ValidatorEntry.power": "its voting power (its stake)",
    "StateSnapshot.chain_id": "the chain",
    "StateSnapshot.height": "height of the last applied block",
    "StateSnapshot.params": "the chain's parameters",
    "StateSnapshot.accounts": "non-empty accounts, sorted by address",
    "StateSnapshot.jobs": "every job, sorted by id",
    "StateSnapshot.last_validators": "the validator set that voted on the last block, sorted by key",
    "GenesisNode.public_key": "the node's key",
    "GenesisNode.stake": "its bonded stake",
    "GenesisNode.roles": "bit set: 1 trainer, 2 validator",
    "GenesisNode.endpoint": "its endpoint",
    "GenesisBalance.address": "the account",
    "GenesisBalance.balance": "the amount credited",
    "Genesis.chain_id": "the chain",
    "Genesis.params": "the chain's parameters",
    "Genesis.balances": "credited first, in order",
    "Genesis.nodes": "registered next, in order",
    "Genesis.transactions": "applied last, as if in a block at height 0",
    # Tensor bundles
    "TensorRecord.name": "the tensor's name (§7)",
    "TensorRecord.dtype": "`float32`, `float64`, `float16`, `bfloat16`, `int64`, `int32`, `int16`, `int8` or `uint8`",
    "TensorRecord.shape": "dimensions, outermost first; `[]` for a scalar",
    "TensorRecord.data": "the elements in C order, each little-endian: exactly ∏shape × itemsize bytes",
    "TensorBundle.tensors": "records sorted by name (code point order), names unique",
}
"""Meaning of each field, keyed ``Class.field``."""


# ---------------------------------------------------------------------------
# The reference as values


@dataclass(frozen=True, slots=True)
class FieldDoc:
    """One field: its position in the wire array, its name, type, bounds and meaning."""

    position: int
    name: str
    type_text: str
    bounds: str
    meaning: str


@dataclass(frozen=True, slots=True)
class MessageDoc:
    name: str
    tag: int
    version: int
    summary: str
    fields: tuple[FieldDoc, ...]


def get_message_classes(module: str) -> tuple[type, ...]:
    """The registered messages declared in ``module``, by tag."""
    return tuple(cls for _, cls in sorted(codec.registered_messages().items()) if cls.__module__ == module)


def get_undocumented_fields(classes: Iterable[type], notes: Mapping[str, str] = FIELD_NOTES) -> tuple[str, ...]:
    """``Class.field`` of every field that has no note."""
    return tuple(
        f"{cls.__name__}.{f.name}" for cls in classes for f in dataclasses.fields(cls) if f"{cls.__name__}.{f.name}" not in notes
    )


def get_message_docs(
    classes: Iterable[type],
    *,
    notes: Mapping[str, str] = FIELD_NOTES,
    summaries: Mapping[str, str] = SUMMARIES,
) -> tuple[MessageDoc, ...]:
    out: list[MessageDoc] = []
    for cls in classes:
        hints = typing.get_type_hints(cls, include_extras=True)
        fields: list[FieldDoc] = []
        for i, f in enumerate(dataclasses.fields(cls)):
            type_text, bounds = describe_type(hints[f.name])
            fields.append(FieldDoc(i + 2, f.name, type_text, bounds, notes.get(f"{cls.__name__}.{f.name}", "")))
        summary = _docstring(cls) or summaries.get(cls.__name__, "")
        out.append(MessageDoc(cls.__name__, codec.tag_of(cls), codec.version_of(cls), summary, tuple(fields)))
    return tuple(out)


def render_messages(
    classes: Iterable[type],
    *,
    notes: Mapping[str, str] = FIELD_NOTES,
    summaries: Mapping[str, str] = SUMMARIES,
    heading: str = "####",
) -> str:
    """Markdown: an index of the messages, then each message's field table."""
    docs = get_message_docs(classes, notes=notes, summaries=summaries)
    lines = ["| tag | version | message | fields |", "|---:|---:|---|---:|"]
    lines += [f"| {d.tag} | {d.version} | [`{d.name}`](#{message_anchor(d.name)}) | {len(d.fields)} |" for d in docs]
    for d in docs:
        lines += ["", f'<a id="{message_anchor(d.name)}"></a>', "", f"{heading} `{d.name}` — tag {d.tag}, version {d.version}", ""]
        if d.summary:
            lines += [d.summary, ""]
        if not d.fields:
            lines.append(f"No fields: encoded `[{d.tag}, {d.version}]`.")
            continue
        lines += ["| pos | field | type | bounds | meaning |", "|---:|---|---|---|---|"]
        lines += [
            f"| {f.position} | `{f.name}` | {f.type_text} | {f.bounds} | {_cell(f.meaning)} |" for f in d.fields
        ]
    return "\n".join(lines) + "\n"


def message_anchor(name: str) -> str:
    return "msg-" + name.lower()


# ---------------------------------------------------------------------------
# Types and bounds as the codec enforces them


def describe_type(tp: Any) -> tuple[str, str]:
    """A field type as (type text, bounds text), in the codec's terms."""
    base, limit, int_range = codec.unwrap_bounds(tp)
    rule = codec.get_scalar_rule(base)
    if rule is not None:
        name = f"`{base.__name__}`"
        kind = _BASE_KIND[rule.base]
        if rule.base is int:
            r = int_range or codec.IntRange(rule.lo, rule.hi)
            return f"{name} ({kind})", _range_text(r.lo, r.hi)
        if rule.exact_len is not None:
            return f"{name} ({kind})", f"exactly {rule.exact_len} bytes"
        n = limit if limit is not None else rule.max_len
        return f"{name} ({kind})", _length_text(rule.base, n)
    if base is bool:
        return "bool", ""
    if base is int:
        r = int_range or codec.IntRange(0, codec.U64_MAX)
        return "int", _range_text(r.lo, r.hi)
    if base is bytes:
        return "bin", _length_text(bytes, limit or codec.DEFAULT_MAX_BYTES)
    if base is str:
        return "str", _length_text(str, limit or codec.DEFAULT_MAX_STR)
    origin = typing.get_origin(base)
    if origin is tuple:
        item_type, item_bounds = describe_type(typing.get_args(base)[0])
        bounds = f"≤ {format_int(limit or codec.DEFAULT_MAX_ITEMS)} items"
        if item_bounds:
            bounds += f"; each {item_bounds}"
        if item_type.endswith(" or nil"):
            item_type = f"({item_type})"
        return f"array of {item_type}", bounds
    if origin in (typing.Union, types.UnionType):
        members = typing.get_args(base)
        choices = [m for m in members if m is not type(None)]
        nil = " or nil" if len(choices) < len(members) else ""
        if len(choices) == 1:
            inner, bounds = describe_type(choices[0])
            return inner + nil, bounds
        return "one of " + ", ".join(_message_link(c) for c in choices) + nil, ""
    if isinstance(base, type) and base in codec.registered_messages().values():
        return _message_link(base), ""
    raise TypeError(f"type {base!r} cannot appear in a protocol message")


_BASE_KIND: dict[type, str] = {int: "int", bytes: "bin", str: "str"}


def _message_link(cls: type) -> str:
    return f"[`{cls.__name__}`](#{message_anchor(cls.__name__)})"


def _length_text(base: type, n: int | None) -> str:
    if n is None:
        return ""
    unit = "bytes" if base is bytes else "characters"
    return f"≤ {format_int(n)} {unit}"


def _range_text(lo: int, hi: int) -> str:
    return f"[{format_int(lo)}, {format_int(hi)}]"


def format_int(n: int) -> str:
    """Integers as people read them: ``2^64-1``, ``2^20``, ``10,000``, ``-1``."""
    if n >= 1 << 16:
        if ((n + 1) & n) == 0:
            return f"2^{(n + 1).bit_length() - 1}-1"
        if (n & (n - 1)) == 0:
            return f"2^{n.bit_length() - 1}"
    if abs(n) >= 10_000:
        return f"{n:,}"
    return str(n)


def _docstring(cls: type) -> str:
    """The class docstring as markdown paragraphs; empty for the one dataclasses invents."""
    doc = cls.__doc__ or ""
    if not doc or doc.startswith(cls.__name__ + "("):
        return ""
    paragraphs = re.split(r"\n\s*\n", inspect.cleandoc(doc))
    text = "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)
    return text.replace("``", "`")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
