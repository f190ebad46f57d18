"""The JSON-RPC methods: reads of the chain, its transactions, the jobs, the trainers' records and the model,
and one write; with the Ethereum-compatible reads (``eth``) and the listing (``catalog``), the whole table.

Every method reads the node through its ``NodeView``; the one write is
``tdml_sendRawTransaction``, which goes through the node's transaction
intake like a peer's transaction does. ``tdml_devPartition`` exists only on
dev networks (fault injection for tests).

This module must never change node state except through ``NodeView.submit_transaction``.
"""

from __future__ import annotations

import time
from typing import Any

from consensus import crypto
from consensus.codec import DecodeError, decode_as, encode
from consensus.state import get_trainers
from consensus.transition import compute_block_hash
from consensus.types import (
    FalsePass,
    FalseVerdict,
    Hash32,
    PipelineState,
    SignedTransaction,
    WorkFraud,
)
from consensus.work import submission_id
from tdml_node import __version__
from tdml_node.jsonview import hex0x, to_json
from tdml_node.pools import TxRejected, tx_hash
from tdml_node.rpc.catalog import add_catalog
from tdml_node.rpc.eth import EthMethods
from tdml_node.rpc.params import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    TX_REJECTED,
    Method,
    Param,
    RpcError,
    parse_address,
    parse_block_tag,
    parse_bool,
    parse_count,
    parse_count_or_zero,
    parse_hash,
    parse_key_list,
    parse_raw,
)
from tdml_node.rpc.views import (
    block_view,
    job_summary,
    job_view,
    outcome_view,
    receipt_view,
    role_names,
    transaction_view,
)
from tdml_node.runtime.netlink import Partitionable
from tdml_node.runtime.views import NodeView


class RpcMethods:
    def __init__(self, node: NodeView, *, dev: bool) -> None:
        self.node = node
        self.table: dict[str, Method] = {
            "tdml_blockNumber": Method(self.block_number, ()),
            "tdml_getBlockByNumber": Method(
                self.get_block_by_number, (Param("block", parse_block_tag), Param("full", parse_bool, True))
            ),
            "tdml_getRawBlock": Method(self.get_raw_block, (Param("number", parse_count_or_zero),)),
            "tdml_getBlockByHash": Method(
                self.get_block_by_hash, (Param("hash", parse_hash), Param("full", parse_bool, True))
            ),
            "tdml_getTransactionByHash": Method(self.get_transaction, (Param("hash", parse_hash),)),
            "tdml_getTransactionReceipt": Method(self.get_receipt, (Param("hash", parse_hash),)),
            "tdml_getJob": Method(self.get_job, (Param("job", parse_hash),)),
            "tdml_getJobSpec": Method(self.get_job_spec, (Param("job", parse_hash),)),
            "tdml_listJobs": Method(self.list_jobs, ()),
            "tdml_getJobHistory": Method(
                self.get_job_history, (Param("job", parse_hash), Param("limit", parse_count, 100))
            ),
            "tdml_getWork": Method(self.get_work, (Param("submission", parse_hash),)),
            "tdml_getAccount": Method(self.get_account, (Param("address", parse_address),)),
            "tdml_getTrainer": Method(self.get_trainer, (Param("address", parse_address),)),
            "tdml_validators": Method(self.validators, ()),
            "tdml_trainers": Method(self.trainers, ()),
            "tdml_sendRawTransaction": Method(self.send_raw_transaction, (Param("tx", parse_raw),)),
            "tdml_getModel": Method(self.get_model, (Param("job", parse_hash),)),
            "tdml_nodeInfo": Method(self.node_info, ()),
            "tdml_peers": Method(self.peers, ()),
            "tdml_syncing": Method(self.syncing, ()),
            "tdml_bannedPeers": Method(self.banned_peers, ()),
        }
        if dev:
            # Fault injection for test networks; absent from a production node's RPC.
            self.table["tdml_devPartition"] = Method(self.dev_partition, (Param("peers", parse_key_list),))
        self.table.update(EthMethods(node).table)
        add_catalog(self.table)

    # ------------------------------------------------------------ blocks

    async def block_number(self) -> int:
        return int(self.node.chain.state.height)

    async def get_block_by_number(self, tag: int | str, full: bool) -> Any:
        if tag == "earliest" or tag == 0:
            return self._genesis_view()
        height = self.node.chain.state.height if tag == "latest" else int(tag)
        if height == 0:
            return self._genesis_view()
        return self._block_at(height, full)

    async def get_raw_block(self, number: int) -> str | None:
        """A committed block's canonical bytes (hex), for clients that verify it themselves."""
        raw = self.node.store.get_block_bytes(number)
        return None if raw is None else hex0x(raw)

    async def get_block_by_hash(self, digest: bytes, full: bool) -> Any:
        if digest == self.node.genesis_hash:
            return self._genesis_view()
        height = self.node.store.get_height_of(digest)
        return None if height is None else self._block_at(height, full)

    def _block_at(self, height: int, full: bool) -> Any:
        block = self.node.store.get_block(height)
        if block is None:
            return None
        return block_view(block, self.node.store.get_commit(height), full)

    def _genesis_view(self) -> Any:
        return {"number": 0, "hash": hex0x(self.node.genesis_hash), "genesis": to_json(self.node.genesis)}

    # ------------------------------------------------------------ transactions

    async def get_transaction(self, digest: bytes) -> Any:
        found = self._committed_tx(digest)
        return None if found is None else transaction_view(*found)

    async def get_receipt(self, digest: bytes) -> Any:
        found = self._committed_tx(digest)
        return None if found is None else receipt_view(*found)

    def _committed_tx(self, digest: bytes) -> tuple[SignedTransaction, int, Hash32, int] | None:
        """A committed transaction, its block's height and hash, and its index; None if no block holds it."""
        found = self.node.store.get_tx_block(digest)
        if found is None:
            return None
        block, index = found
        return block.body.transactions[index], block.header.height, compute_block_hash(block.header), index

    # ------------------------------------------------------------ jobs

    async def get_job(self, job_id: bytes) -> Any:
        job = self.node.chain.state.jobs.get(Hash32(job_id))
        if job is None:
            return None
        return job_view(job, self.node.store.get_last_eval(job.job_id, job.step, job.spec.eval_every))

    async def get_job_spec(self, job_id: bytes) -> Any:
        """The job's spec in canonical bytes (0x hex), for clients that rebuild the model."""
        job = self.node.chain.state.jobs.get(Hash32(job_id))
        return None if job is None else hex0x(encode(job.spec))

    async def list_jobs(self) -> list[Any]:
        jobs = self.node.chain.state.jobs
        return [job_summary(jobs[j]) for j in sorted(jobs)]

    async def get_job_history(self, job_id: bytes, limit: int) -> Any:
        if Hash32(job_id) not in self.node.chain.state.jobs:
            return None
        return [outcome_view(o) for o in self.node.store.get_outcomes(Hash32(job_id), limit=limit)]

    async def get_work(self, sid: bytes) -> Any:
        node = self.node
        entry = node.workpool.get(sid)
        if entry is not None:
            return {
                "status": "pending",
                "submission": to_json(entry.signed),
                "verdicts": [to_json(v) for v in entry.verdicts.values()],
            }
        height = node.store.get_work_height(sid)
        block = node.store.get_block(height) if height is not None else None
        if block is None:
            return None
        for signed in block.body.submissions:
            if submission_id(signed.submission) == sid:
                verdicts = [v for v in block.body.verdicts if v.verdict.submission_id == sid]
                return {
                    "status": "accepted",
                    "height": height,
                    "submission": to_json(signed),
                    "verdicts": [to_json(v) for v in verdicts],
                }
        for ev in block.body.evidence:
            if isinstance(ev, WorkFraud | FalseVerdict | FalsePass) and submission_id(ev.submission.submission) == sid:
                return {
                    "status": {WorkFraud: "rejected", FalseVerdict: "falsely-accused"}.get(type(ev), "accepted"),
                    "height": height,
                    "submission": to_json(ev.submission),
                    "verdicts": [to_json(ev.verdict)],
                    "evidence": to_json(ev),
                }
        return None

    async def get_model(self, job_id: bytes) -> Any:
        job = self.node.chain.state.jobs.get(Hash32(job_id))
        if job is None:
            return None
        store = self.node.store
        data = store.get(job.model_root)
        view = {
            "job": hex0x(job_id),
            "step": job.step,
            "modelRoot": hex0x(job.model_root),
            "available": data is not None,
            "size": len(data) if data is not None else 0,
            "blobPath": f"/blob/{hex0x(job.model_root)}",
            "model": to_json(job.spec.model),
        }
        if job.spec.pipeline is not None:
            # Which partitions this node holds (a node with model_state = assigned holds only those it is dealt);
            # unknown (None) while it does not hold the root's stage list itself.
            roots = decode_as(data, PipelineState).stage_roots if data is not None else None
            view["stages"] = None if roots is None else [
                {"stage": s, "stateRoot": hex0x(r), "held": store.has(r)} for s, r in enumerate(roots)
            ]
        return view

    # ------------------------------------------------------------ accounts and nodes

    async def get_account(self, address: bytes) -> Any:
        state = self.node.chain.state
        acct = state.get_account(address)  # type: ignore[arg-type]
        return {
            "address": hex0x(address),
            "balance": acct.balance,
            "nonce": acct.nonce,
            "stake": acct.stake,
            "roles": role_names(acct.roles),
            "publicKey": hex0x(acct.public_key) if acct.public_key else None,
            "slashed": acct.slashed,
            "record": to_json(state.get_record(address)),  # type: ignore[arg-type]
        }

    async def get_trainer(self, address: bytes) -> Any:
        state = self.node.chain.state
        acct = state.get_account(address)  # type: ignore[arg-type]
        rec = state.get_record(address)  # type: ignore[arg-type]
        return {
            "address": hex0x(address),
            "roles": role_names(acct.roles),
            "stake": acct.stake,
            "slashed": acct.slashed,
            "unitsDone": rec.units_accepted + rec.units_rejected,
            "unitsVerified": rec.units_accepted,
            "unitsRejected": rec.units_rejected,
            "unitsReassigned": rec.units_reassigned,
            "verdictsSigned": rec.verdicts_signed,
            "falseVerdicts": rec.false_verdicts,
            "timesSlashed": rec.times_slashed,
            "rewards": rec.rewards,
        }

    async def validators(self) -> list[Any]:
        return [
            {"publicKey": hex0x(e.public_key), "address": hex0x(crypto.address_of(e.public_key)), "power": e.power}
            for e in self.node.chain.validators().entries
        ]

    async def trainers(self) -> list[Any]:
        """The trainers the next step would deal to (registered, staked, not slashed), with their keys."""
        state = self.node.chain.state
        out = []
        for address in get_trainers(state):
            key = state.get_account(address).public_key
            out.append({"address": hex0x(address), "publicKey": hex0x(key) if key else None})
        return out

    async def node_info(self) -> Any:
        node = self.node
        state = node.chain.state
        key = node.node_key
        return {
            "version": __version__,
            "chainId": node.chain.chain_id,
            "genesisHash": hex0x(node.genesis_hash),
            "nodeId": hex0x(key),
            "address": hex0x(crypto.address_of(key)),
            "height": state.height,
            "tipHash": hex0x(state.tip_hash),
            "roles": role_names(state.get_account(crypto.address_of(key)).roles),
            "validator": key in node.chain.validators(),
            "peers": node.network.peer_count(),
            "torchVersion": node.torch_version,
            "modelState": node.model_state,
            "uptimeSeconds": round(time.time() - node.started_at, 3),
        }

    async def peers(self) -> list[Any]:
        return self.node.network.peers()

    async def banned_peers(self) -> list[str]:
        """Node ids this node has banned for misbehaving (0x hex)."""
        return ["0x" + k for k in self.node.network.banned()]

    async def syncing(self) -> Any:
        """False when in step with peers, else how far behind (Ethereum's eth_syncing shape)."""
        node = self.node
        height = node.chain.state.height
        highest = max(node.syncing_to, node.network.best_peer_height())
        if highest <= height + 1:
            return False
        return {"currentBlock": height, "highestBlock": highest}

    # ------------------------------------------------------------ writes

    async def send_raw_transaction(self, raw: bytes) -> str:
        try:
            signed = decode_as(raw, SignedTransaction)
        except DecodeError as exc:
            raise RpcError(INVALID_PARAMS, f"not a signed transaction: {exc}") from exc
        try:
            await self.node.submit_transaction(signed)
        except TxRejected as exc:
            raise RpcError(TX_REJECTED, f"transaction rejected: {exc}") from exc
        return hex0x(tx_hash(signed))

    async def dev_partition(self, peers: list[bytes]) -> int:
        """(Dev networks only) cut this node off from these node ids; an empty list heals."""
        network = self.node.network
        if not isinstance(network, Partitionable):
            raise RpcError(INVALID_REQUEST, "this node has no peer-to-peer network")
        network.set_partitioned(set(peers))
        return len(peers)
