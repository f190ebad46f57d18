"""Running Byzantine behaviours in real multi-process devnets and measuring what the chain caught.

A ``Scenario`` names which nodes misbehave and how. ``run_scenario`` starts a
devnet of real ``tdml-node run`` processes (each with its own LevelDB), trains
a job to the end, and reads everything back over RPC as any observer could:
the faults the Byzantine nodes report committing (``/metrics``), the
evidence in the blocks, the trainers' records, the bans. Every piece of
evidence is re-checked independently: a fresh executor, fed only blobs
fetched over HTTP, re-runs the check the evidence names.

This module must never reach into a node's memory or trust a node's own
judgement of evidence: it re-derives it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consensus import pipeline
from consensus.codec import decode_as
from consensus.crypto import DOMAIN_VOTE, Keypair, address_of, verify_value
from consensus.transition import compute_genesis_hash
from consensus.types import (
    FAILURE_MALFORMED,
    FAILURE_PARENT,
    FAILURE_REPLAY,
    FAILURE_RESULT,
    Block,
    Equivocation,
    FalseVerdict,
    Hash32,
    JobSpec,
    WorkFraud,
)
from consensus.work import StepView
from tdml_node.client import NodeClient
from tdml_node.devnet import Devnet, submit_job
from tdml_node.storage import MemoryBlobStore
from tdml_node.work.executor import TorchExecutor
from tdml_node.work.jobs import get_job
from tdml_node.work.pipeline_state import decode_pipeline_state
from tdml_node.work.reference import run_reference
from tests.adversarial.wire import RogueClient

FAILURE_NAMES = {
    FAILURE_PARENT: "parent-state check",
    FAILURE_REPLAY: "replay",
    FAILURE_RESULT: "result check",
    FAILURE_MALFORMED: "malformed blob",
}


@dataclass(frozen=True)
class Scenario:
    name: str
    behaviours: dict[int, str]
    job: str = "digits-mlp"
    steps: int = 60
    nodes: int = 4
    checked_steps: int | None = None
    checkers_per_unit: int | None = None
    rogue: str | None = None
    """A rogue wire client (``wire.py``) attacks the devnet: ``flood`` or ``malformed``."""
    rogue_as: int | None = None
    """The validator whose key the rogue client proves (its node is not started); None: a stranger's key."""

    @property
    def offenders(self) -> frozenset[int]:
        """The indices of the devnet's misbehaving validators."""
        return frozenset(self.behaviours) | ({self.rogue_as} if self.rogue_as is not None else set())


@dataclass
class ScenarioResult:
    scenario: str
    behaviours: dict[int, str]
    faults_committed: int
    faulty_caught: int
    mechanisms: list[str]
    blocks_to_catch: int | None
    evidence: int
    evidence_rechecked: int
    offenders_slashed: int
    offenders_banned: int
    offender_shards_reassigned: int
    job_done: bool
    final_accuracy: float | None
    equals_reference: bool
    honest_units: int
    honest_accused: int
    seconds: float
    errors: list[str] = field(default_factory=list)
    evidence_units: list[str] = field(default_factory=list)
    """Where each piece of work evidence sits: the unit index, and for a pipeline job its shard, stage and phase."""

    def as_row(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _metric(client: NodeClient, name: str) -> float:
    import urllib.request

    with urllib.request.urlopen(client.url + "/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def _job_for(s: Scenario) -> tuple[JobSpec, bytes]:
    spec, dataset = get_job(s.job, steps=s.steps)
    policy = spec.verification
    if s.checked_steps is not None:
        policy = dataclasses.replace(policy, checked_steps=s.checked_steps)
    if s.checkers_per_unit is not None:
        policy = dataclasses.replace(policy, checkers_per_unit=s.checkers_per_unit)
    return dataclasses.replace(spec, verification=policy), dataset


@contextlib.contextmanager
def _attacked_devnet(s: Scenario, devnet: Devnet) -> Iterator[RogueClient | None]:
    """The devnet's nodes running (all but the one whose key the rogue client takes), and the rogue client."""
    running = [n for n in devnet.nodes if n.index != s.rogue_as]
    rogue: RogueClient | None = None
    try:
        for node in running:
            devnet.start(node)
        devnet.wait_ready(nodes=running)
        if s.rogue is not None:
            key = devnet.nodes[s.rogue_as].keypair if s.rogue_as is not None else Keypair.generate()
            genesis_hash = compute_genesis_hash(devnet.genesis)
            rogue = RogueClient(key, devnet.genesis.chain_id, genesis_hash, mode=s.rogue)
            rogue.start([f"127.0.0.1:{n.p2p_port}" for n in running])
        yield rogue
    finally:
        if rogue is not None:
            rogue.stop()
        devnet.stop_all()


def run_scenario(s: Scenario, base: Path, *, timeout: float = 600.0) -> ScenarioResult:
    spec, dataset = _job_for(s)
    started = time.monotonic()
    devnet = Devnet.create(base, s.nodes, byzantine=s.behaviours, config_overrides={"retain_steps": 1_000_000})
    byz_keys = {devnet.nodes[i].keypair.public_key for i in s.offenders}
    honest_nodes = [n for n in devnet.nodes if n.index not in s.offenders]
    errors: list[str] = []
    with _attacked_devnet(s, devnet) as rogue:
        client = honest_nodes[0].client()
        for node in honest_nodes[1:]:
            node.client().put_blob(dataset)
        job_id = submit_job(client, devnet.client_key, devnet.genesis.chain_id, spec, dataset)
        view: dict[str, Any] | None = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            view = client.call("tdml_getJob", job_id)
            if view is not None and view["status"] == "done":
                break
            time.sleep(0.5)
        else:
            errors.append("the job did not finish in time")
        assert view is not None
        height = client.call("tdml_blockNumber")
        blocks = [client.call("tdml_getBlockByNumber", h, True) for h in range(1, height + 1)]
        records = {n.index: client.call("tdml_getTrainer", "0x" + n.keypair.address.hex()) for n in devnet.nodes}
        faults = sum(int(_metric(devnet.nodes[i].client(), "tdml_byzantine_faults")) for i in s.behaviours)
        first_fault = min(
            (int(_metric(devnet.nodes[i].client(), "tdml_byzantine_first_fault_height")) for i in s.behaviours),
            default=0,
        )
        if rogue is not None:
            faults += rogue.sent
            byz_keys.add(rogue.keypair.public_key)
        ban_lists = [set(n.client().call("tdml_bannedPeers")) for n in honest_nodes]
        bans = set().union(*ban_lists)
        byz_ids = {"0x" + k.hex() for k in byz_keys}
        banned_by = sum(1 for b in ban_lists if b & byz_ids)
        rechecked, evidence, offenders_accused, units = _recheck_all(devnet, honest_nodes, spec, job_id, blocks, errors)
    seconds = time.monotonic() - started
    byz_addr = {"0x" + address_of(k).hex() for k in byz_keys}
    evidence_heights = [h for h, _, _ in evidence]
    honest_accused = sum(1 for _, _, who in evidence if who not in byz_addr)
    slashed = sum(1 for i in s.offenders if records[i]["timesSlashed"] > 0)
    banned = sum(1 for k in byz_keys if "0x" + k.hex() in bans)
    reassigned = sum(records[i]["unitsReassigned"] for i in s.offenders)
    last_eval = (view or {}).get("lastEval") or {}
    reference = run_reference(spec, dataset).final_root
    return ScenarioResult(
        scenario=s.name,
        behaviours=dict(s.behaviours),
        faults_committed=faults,
        faulty_caught=_caught(s, evidence, byz_addr, reassigned, banned_by),
        mechanisms=sorted({m for _, m, who in evidence if who in byz_addr})
        + (["deadline: shard reassigned, trainer benched"] if reassigned and not evidence else [])
        + ([f"peer score: banned by {banned_by} of {len(honest_nodes)} honest nodes"] if banned_by else []),
        blocks_to_catch=(min(evidence_heights) - first_fault) if evidence_heights and first_fault else None,
        evidence=len(evidence),
        evidence_rechecked=rechecked,
        offenders_slashed=slashed,
        offenders_banned=banned,
        offender_shards_reassigned=reassigned,
        job_done=bool(view and view["status"] == "done"),
        final_accuracy=last_eval.get("testAccuracy"),
        equals_reference=bool(view and view["modelRoot"] == "0x" + reference.hex()),
        honest_units=sum(r["unitsVerified"] for i, r in records.items() if i not in s.offenders),
        honest_accused=honest_accused + offenders_accused,
        seconds=round(seconds, 1),
        errors=errors,
        evidence_units=units,
    )


def _caught(
    s: Scenario, evidence: list[tuple[int, str, str]], byz_addr: set[str], reassigned: int, banned_by: int
) -> int:
    """How many of the faults the chain (or the network) answered: evidence, else reassignments, else bans."""
    against = sum(1 for _, _, who in evidence if who in byz_addr)
    if against:
        return against
    if any(b == "withhold" for b in s.behaviours.values()) or (reassigned and not banned_by):
        return reassigned  # unprovable faults (withheld or refused units) answered by their deadlines
    return banned_by


def _recheck_all(
    devnet: Devnet,
    honest_nodes: list[Any],
    spec: JobSpec,
    job_id: str,
    blocks: list[dict[str, Any]],
    errors: list[str],
) -> tuple[int, list[tuple[int, str, str]], int, list[str]]:
    """Re-check every piece of evidence with a fresh executor.

    Returns (re-checked, evidence, wrongly accused, where each work evidence's unit sits).
    """
    blobs = MemoryBlobStore()
    executor = TorchExecutor(blobs)
    clients = [n.client() for n in honest_nodes]
    roots = _roots_by_step(clients[0], executor, spec, job_id)
    rechecked = 0
    wrongly = 0
    found: list[tuple[int, str, str]] = []
    units: list[str] = []
    for block in blocks:
        for ev_json in block["body"]["evidence"]:
            raw = _evidence_bytes(clients[0], block["number"], ev_json)
            ev = raw
            if isinstance(ev, Equivocation):
                a, b = ev.vote_a, ev.vote_b
                ok = (
                    a.vote.block_hash != b.vote.block_hash
                    and (a.vote.height, a.vote.round, a.vote.kind, a.vote.validator)
                    == (b.vote.height, b.vote.round, b.vote.kind, b.vote.validator)
                    and all(
                        verify_value(sv.vote.validator, DOMAIN_VOTE, devnet.genesis.chain_id, sv.vote, sv.signature)
                        for sv in (a, b)
                    )
                )
                found.append((block["number"], "conflicting votes", "0x" + address_of(a.vote.validator).hex()))
            else:
                sub = ev.submission.submission
                verdict = ev.verdict.verdict
                if roots.get(sub.step) != sub.parent_model_root and verdict.failure != FAILURE_PARENT:
                    errors.append(f"evidence at height {block['number']} names a root the chain never had at its step")
                job = _job_at(spec, job_id, sub.step, roots.get(sub.step, sub.parent_model_root))
                for digest in (spec.dataset, sub.parent_model_root, sub.result_digest, *sub.checkpoint_digests):
                    _fetch(clients, blobs, digest)
                _fetch_stage_blobs(clients, blobs, spec, job.model_root, sub)
                units.append(_unit_place(spec, sub.shard))
                if isinstance(ev, WorkFraud):
                    ok = executor.recheck(job, sub, verdict)
                    found.append((block["number"], FAILURE_NAMES.get(verdict.failure, "?"), "0x" + address_of(sub.trainer).hex()))
                elif isinstance(ev, FalseVerdict):
                    ok = not executor.recheck(job, sub, verdict)
                    found.append((block["number"], "false accusation refuted", "0x" + address_of(verdict.validator).hex()))
                else:
                    ok = executor.recheck_pass(job, sub, verdict)
                    found.append((block["number"], "false pass exposed", "0x" + address_of(verdict.validator).hex()))
            if ok:
                rechecked += 1
            else:
                errors.append(f"evidence at height {block['number']} does not re-check")
                wrongly += 1
    return rechecked, found, wrongly, units


def _unit_place(spec: JobSpec, unit: int) -> str:
    if spec.pipeline is None:
        return f"unit {unit}"
    place = pipeline.place_of(spec, unit)
    return f"unit {unit}: shard {place.shard} stage {place.stage} {pipeline.PHASE_NAMES[place.phase]}"


def _fetch_stage_blobs(clients: list[NodeClient], blobs: MemoryBlobStore, spec: JobSpec, root: bytes, sub: Any) -> None:
    """(Pipeline jobs) what a stage unit's re-check reads besides its result: every stage root, its links' blobs."""
    if spec.pipeline is None:
        return
    _fetch(clients, blobs, root)
    state = blobs.get(Hash32(root))
    stage_roots = decode_pipeline_state(state, spec).stage_roots if state is not None else ()
    links = sub.links
    named = (links.stage_root, *links.inputs, *((links.output_gradient,) if links.output_gradient else ())) if links else ()
    for digest in (*stage_roots, *named):
        _fetch(clients, blobs, digest)


def _roots_by_step(client: NodeClient, executor: TorchExecutor, spec: JobSpec, job_id: str) -> dict[int, bytes]:
    """The job's committed model root at the start of each step, from the chain's step outcomes."""
    roots = {0: bytes(executor.initial_model_root(spec))}
    for outcome in client.call("tdml_getJobHistory", job_id, 1000):
        roots[outcome["step"] + 1] = bytes.fromhex(outcome["model_root"][2:])
    return roots


def _evidence_bytes(client: NodeClient, height: int, ev_json: dict[str, Any]) -> Any:
    """The evidence as protocol values, decoded from the block's canonical bytes."""
    block = decode_as(bytes.fromhex(client.call("tdml_getRawBlock", height)[2:]), Block)
    for ev in block.body.evidence:
        if type(ev).__name__ == ev_json["type"]:
            return ev
    raise AssertionError("evidence missing from the block bytes")


def _job_at(spec: JobSpec, job_id: str, step: int, model_root: bytes) -> StepView:
    """The job as it stood at ``step`` (what a re-check needs: spec, step, committed root)."""
    return StepView(Hash32(bytes.fromhex(job_id[2:])), spec, step, Hash32(model_root))


def _fetch(clients: list[NodeClient], blobs: MemoryBlobStore, digest: bytes) -> None:
    if blobs.has(Hash32(digest)):
        return
    for c in clients:
        try:
            data = c.get_blob(digest.hex())
        except OSError:
            continue
        blobs.put(data)
        return
