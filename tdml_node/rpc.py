"""JSON-RPC 2.0 over HTTP (and raw blob transfer) for people and tools.

``POST /`` takes a request or a batch; ``GET /health`` says whether the node
is up; ``GET /metrics`` serves Prometheus metrics; ``GET /blob/<digest>`` and
``POST /blob`` move content-addressed blobs (datasets, model states) without
hex-encoding them into JSON. The server binds to 127.0.0.1 unless told
otherwise. Methods follow Ethereum's conventions where they fit: namespaced
names, block tags (``latest``, ``earliest``), ``null`` for something not
found, and the standard error codes:

- ``-32700`` parse error (the body is not JSON)
- ``-32600`` invalid request (not a JSON-RPC 2.0 request object, empty batch)
- ``-32601`` method not found
- ``-32602`` invalid params (wrong count, type, format, or size)
- ``-32603`` internal error
- ``-32010`` transaction rejected (the message says why)

This module must never change node state except through the node's own
entry points (``on_transaction``, the blob store).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from consensus import crypto
from consensus.codec import DecodeError, decode_as, encode
from consensus.state import get_validator_set
from consensus.transition import compute_block_hash
from consensus.types import (
    JOB_ACTIVE,
    JOB_DONE,
    ROLE_TRAINER,
    ROLE_VALIDATOR,
    Block,
    FalsePass,
    FalseVerdict,
    Hash32,
    JobState,
    SignedTransaction,
    WorkFraud,
)
from consensus.work import submission_id
from tdml_node import __version__
from tdml_node.jsonview import f32, hex0x, to_json
from tdml_node.pools import TxRejected, tx_hash
from tdml_node.storage import StorageError

if TYPE_CHECKING:
    from tdml_node.node import CommittedBlock, Node

log = logging.getLogger("tdml.rpc")

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
TX_REJECTED = -32010

MAX_RPC_BODY = 4 * 1024 * 1024
MAX_BLOB_BODY = 256 * 1024 * 1024
MAX_BATCH = 100
MAX_HEIGHT = 2**64 - 1
"""Block numbers above this cannot name a block (heights are 64-bit keys in the store)."""
MAX_WS_BACKLOG = 256
_REQUIRED = object()


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Param:
    name: str
    parse: Callable[[Any], Any]
    default: Any = _REQUIRED


@dataclass(frozen=True)
class Method:
    fn: Callable[..., Awaitable[Any]]
    params: tuple[Param, ...]


# ---------------------------------------------------------------- parsers


def _bytes_param(length: int | None, what: str) -> Callable[[Any], bytes]:
    def parse(value: Any) -> bytes:
        if not isinstance(value, str) or not value.startswith("0x"):
            raise RpcError(INVALID_PARAMS, f"{what} must be 0x-prefixed hex")
        try:
            data = bytes.fromhex(value[2:])
        except ValueError as exc:
            raise RpcError(INVALID_PARAMS, f"{what} is not valid hex") from exc
        if length is not None and len(data) != length:
            raise RpcError(INVALID_PARAMS, f"{what} must be {length} bytes, got {len(data)}")
        return data

    return parse


parse_hash = _bytes_param(32, "a hash")
parse_raw = _bytes_param(None, "raw bytes")


def parse_address(value: Any) -> bytes:
    data = _bytes_param(None, "an address")(value)
    if len(data) == 32:
        return crypto.address_of(data)
    if len(data) != 20:
        raise RpcError(INVALID_PARAMS, "an address is 20 bytes (or a 32-byte public key)")
    return data


def parse_key_list(value: Any) -> list[bytes]:
    if not isinstance(value, list) or len(value) > 1024:
        raise RpcError(INVALID_PARAMS, "expected a list of node ids")
    return [_bytes_param(32, "a node id")(v) for v in value]


def parse_count_or_zero(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_HEIGHT:
        raise RpcError(INVALID_PARAMS, "expected a non-negative 64-bit integer")
    return value


def parse_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise RpcError(INVALID_PARAMS, "expected true or false")
    return value


def parse_count(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= 1000:
        raise RpcError(INVALID_PARAMS, "expected an integer from 1 to 1000")
    return value


def parse_block_tag(value: Any) -> int | str:
    if value in ("latest", "earliest"):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_HEIGHT:
        return value
    if isinstance(value, str) and value.startswith("0x"):
        try:
            number = int(value, 16)
        except ValueError:
            pass
        else:
            if 0 <= number <= MAX_HEIGHT:
                return number
    raise RpcError(INVALID_PARAMS, "a block is a non-negative number, 0x-hex quantity, 'latest' or 'earliest'")


# ----------------------------------------------------------------- server


class RpcServer:
    def __init__(self, node: Node, host: str, port: int) -> None:
        self.node = node
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        self.methods: dict[str, Method] = {
            "tdml_blockNumber": Method(self.block_number, ()),
            "tdml_getBlockByNumber": Method(
                self.get_block_by_number, (Param("block", parse_block_tag), Param("full", parse_bool, True))
            ),
            "tdml_getRawBlock": Method(self.get_raw_block, (Param("number", parse_count_or_zero),)),
            "tdml_getBlockByHash": Method(
                self.get_block_by_hash, (Param("hash", parse_hash), Param("full", parse_bool, True))
            ),
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
            "tdml_sendRawTransaction": Method(self.send_raw_transaction, (Param("tx", parse_raw),)),
            "tdml_getModel": Method(self.get_model, (Param("job", parse_hash),)),
            "tdml_nodeInfo": Method(self.node_info, ()),
            "tdml_peers": Method(self.peers, ()),
            "tdml_syncing": Method(self.syncing, ()),
            "tdml_bannedPeers": Method(self.banned_peers, ()),
        }
        if node.config.dev:
            # Fault injection for test networks; absent from a production node's RPC.
            self.methods["tdml_devPartition"] = Method(self.dev_partition, (Param("peers", parse_key_list),))

    # ------------------------------------------------------------ HTTP

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BLOB_BODY)
        app.router.add_post("/", self.handle_rpc)
        app.router.add_get("/health", self.handle_health)
        app.router.add_get("/metrics", self.handle_metrics)
        app.router.add_get("/blob/{digest}", self.handle_get_blob)
        app.router.add_post("/blob", self.handle_put_blob)
        app.router.add_get("/ws", self.handle_ws)
        return app

    async def start(self) -> int:
        self._runner = web.AppRunner(self.make_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def handle_rpc(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_RPC_BODY:
            return _json_response(_error(None, INVALID_REQUEST, f"request body over {MAX_RPC_BODY} bytes"))
        body = await request.read()
        if len(body) > MAX_RPC_BODY:
            return _json_response(_error(None, INVALID_REQUEST, f"request body over {MAX_RPC_BODY} bytes"))
        result = await self.dispatch_bytes(body)
        if result is None:
            return web.Response(status=204)
        return _json_response(result)

    async def handle_health(self, request: web.Request) -> web.Response:
        node = self.node
        healthy = node.fatal is None
        body = {"status": "ok" if healthy else "halted", "height": node.state.height, "chainId": node.chain_id}
        return _json_response(body, status=200 if healthy else 503)

    async def handle_metrics(self, request: web.Request) -> web.Response:
        node = self.node
        node.metrics.peers.set(node.network.peer_count())
        node.metrics.byzantine_faults.set(node.byzantine.faults)
        node.metrics.byzantine_first_fault_height.set(node.byzantine.first_fault_height)
        return web.Response(body=self.node.metrics.render(), content_type="text/plain")

    async def handle_get_blob(self, request: web.Request) -> web.Response:
        try:
            digest = bytes.fromhex(request.match_info["digest"].removeprefix("0x"))
        except ValueError:
            return web.Response(status=400, text="digest must be hex")
        if len(digest) != 32:
            return web.Response(status=400, text="digest must be 32 bytes")
        data = self.node.store.get(Hash32(digest))
        if data is None:
            return web.Response(status=404, text="no such blob")
        return web.Response(body=data, content_type="application/octet-stream")

    async def handle_put_blob(self, request: web.Request) -> web.Response:
        data = await request.read()
        if not data:
            return web.Response(status=400, text="empty blob")
        try:
            digest = self.node.store.put(data)
        except StorageError as exc:
            self._storage_failed(exc)
            return web.Response(status=507, text=f"cannot store the blob; the node is stopping: {exc}")
        return _json_response({"digest": hex0x(digest), "size": len(data)})

    def _storage_failed(self, exc: StorageError) -> None:
        """A write failed (full disk, permissions): the node stops rather than go on half-written."""
        log.error("node halted: %s", exc)
        self.node.halt(exc)

    # ------------------------------------------------------- dispatch

    async def dispatch_bytes(self, body: bytes) -> Any:
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(None, PARSE_ERROR, f"parse error: {exc}")
        except RecursionError:
            return _error(None, PARSE_ERROR, "parse error: nested too deeply")
        return await self.dispatch(payload)

    async def dispatch(self, payload: Any) -> Any:
        if isinstance(payload, list):
            if not payload:
                return _error(None, INVALID_REQUEST, "empty batch")
            if len(payload) > MAX_BATCH:
                return _error(None, INVALID_REQUEST, f"batch of over {MAX_BATCH} requests")
            answers = [await self._one(item) for item in payload]
            kept = [a for a in answers if a is not None]
            return kept or None
        return await self._one(payload)

    async def _one(self, req: Any) -> Any:
        if not isinstance(req, dict) or req.get("jsonrpc") != "2.0" or not isinstance(req.get("method"), str):
            rid = req.get("id") if isinstance(req, dict) and _valid_id(req.get("id")) else None
            return _error(rid, INVALID_REQUEST, "not a JSON-RPC 2.0 request")
        is_notification = "id" not in req
        rid = req.get("id")
        if not is_notification and not _valid_id(rid):
            return _error(None, INVALID_REQUEST, "id must be a string, a number or null")
        method = self.methods.get(req["method"])
        try:
            if method is None:
                raise RpcError(METHOD_NOT_FOUND, f"method {req['method']!r} not found")
            args = _bind(method, req.get("params", []))
            result = await method.fn(*args)
        except RpcError as exc:
            return None if is_notification else _error(rid, exc.code, exc.message)
        except StorageError as exc:
            self._storage_failed(exc)
            return None if is_notification else _error(rid, INTERNAL_ERROR, f"storage failure; the node is stopping: {exc}")
        except Exception as exc:
            log.exception("internal error in %s", req.get("method"))
            return None if is_notification else _error(rid, INTERNAL_ERROR, f"internal error: {type(exc).__name__}")
        return None if is_notification else {"jsonrpc": "2.0", "id": rid, "result": result}

    # -------------------------------------------------------- methods

    async def block_number(self) -> int:
        return int(self.node.state.height)

    async def get_block_by_number(self, tag: int | str, full: bool) -> Any:
        node = self.node
        if tag == "earliest" or tag == 0:
            return self._genesis_view()
        height = node.state.height if tag == "latest" else int(tag)
        if height == 0:
            return self._genesis_view()
        block = node.store.get_block(height)
        return None if block is None else self._block_view(block, full)

    async def get_raw_block(self, number: int) -> str | None:
        """A committed block's canonical bytes (hex), for clients that verify it themselves."""
        raw = self.node.store.get_block_bytes(number)
        return None if raw is None else hex0x(raw)

    async def get_block_by_hash(self, digest: bytes, full: bool) -> Any:
        if digest == self.node.genesis_hash:
            return self._genesis_view()
        height = self.node.store.get_height_of(digest)
        if height is None:
            return None
        block = self.node.store.get_block(height)
        return None if block is None else self._block_view(block, full)

    async def get_job(self, job_id: bytes) -> Any:
        job = self.node.state.jobs.get(Hash32(job_id))
        return None if job is None else self._job_view(job)

    async def get_job_spec(self, job_id: bytes) -> Any:
        """The job's spec in canonical bytes (0x hex), for clients that rebuild the model."""
        job = self.node.state.jobs.get(Hash32(job_id))
        return None if job is None else hex0x(encode(job.spec))

    async def list_jobs(self) -> list[Any]:
        return [self._job_summary(self.node.state.jobs[j]) for j in sorted(self.node.state.jobs)]

    async def get_job_history(self, job_id: bytes, limit: int) -> Any:
        job = self.node.state.jobs.get(Hash32(job_id))
        if job is None:
            return None
        outcomes = self.node.store.get_outcomes(Hash32(job_id), limit=limit)
        return [_outcome_view(o) for o in outcomes]

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
        if height is None:
            return None
        block = node.store.get_block(height)
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

    async def get_account(self, address: bytes) -> Any:
        state = self.node.state
        acct = state.get_account(address)  # type: ignore[arg-type]
        return {
            "address": hex0x(address),
            "balance": acct.balance,
            "nonce": acct.nonce,
            "stake": acct.stake,
            "roles": _roles(acct.roles),
            "publicKey": hex0x(acct.public_key) if acct.public_key else None,
            "slashed": acct.slashed,
            "record": to_json(state.get_record(address)),  # type: ignore[arg-type]
        }

    async def get_trainer(self, address: bytes) -> Any:
        state = self.node.state
        acct = state.get_account(address)  # type: ignore[arg-type]
        rec = state.get_record(address)  # type: ignore[arg-type]
        return {
            "address": hex0x(address),
            "roles": _roles(acct.roles),
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
        vs = get_validator_set(self.node.state)
        return [
            {"publicKey": hex0x(e.public_key), "address": hex0x(crypto.address_of(e.public_key)), "power": e.power}
            for e in vs.entries
        ]

    async def send_raw_transaction(self, raw: bytes) -> str:
        try:
            signed = decode_as(raw, SignedTransaction)
        except DecodeError as exc:
            raise RpcError(INVALID_PARAMS, f"not a signed transaction: {exc}") from exc
        try:
            await self.node.on_transaction(signed)
        except TxRejected as exc:
            raise RpcError(TX_REJECTED, f"transaction rejected: {exc}") from exc
        return hex0x(tx_hash(signed))

    async def get_model(self, job_id: bytes) -> Any:
        job = self.node.state.jobs.get(Hash32(job_id))
        if job is None:
            return None
        data = self.node.store.get(job.model_root)
        return {
            "job": hex0x(job_id),
            "step": job.step,
            "modelRoot": hex0x(job.model_root),
            "available": data is not None,
            "size": len(data) if data is not None else 0,
            "blobPath": f"/blob/{job.model_root.hex()}",
            "model": to_json(job.spec.model),
        }

    async def node_info(self) -> Any:
        node = self.node
        acct = node.state.get_account(node.keypair.address)
        return {
            "version": __version__,
            "chainId": node.chain_id,
            "genesisHash": hex0x(node.genesis_hash),
            "nodeId": hex0x(node.keypair.public_key),
            "address": hex0x(node.keypair.address),
            "height": node.state.height,
            "tipHash": hex0x(node.state.tip_hash),
            "roles": _roles(acct.roles),
            "validator": node.keypair.public_key in get_validator_set(node.state),
            "peers": node.network.peer_count(),
            "torchVersion": node.executor.torch_version,
            "uptimeSeconds": round(time.time() - node.started_at, 3),
        }

    async def peers(self) -> list[Any]:
        return self.node.network.peers()

    async def banned_peers(self) -> list[str]:
        """Node ids this node has banned for misbehaving (0x hex)."""
        banned = getattr(self.node.network, "banned", None)
        return ["0x" + k for k in banned()] if banned is not None else []

    async def syncing(self) -> Any:
        """False when in step with peers, else how far behind (Ethereum's eth_syncing shape)."""
        node = self.node
        highest = max(node.syncing_to, node.network.best_peer_height())
        if highest <= node.state.height + 1:
            return False
        return {"currentBlock": node.state.height, "highestBlock": highest}

    async def dev_partition(self, peers: list[bytes]) -> int:
        """(Dev networks only) cut this node off from these node ids; an empty list heals."""
        set_partitioned = getattr(self.node.network, "set_partitioned", None)
        if set_partitioned is None:
            raise RpcError(INVALID_REQUEST, "this node has no peer-to-peer network")
        set_partitioned(set(peers))
        return len(peers)

    # ------------------------------------------------------ websocket

    async def handle_ws(self, request: web.Request) -> web.WebSocketResponse:
        """JSON-RPC over a websocket, plus ``tdml_subscribe(["newBlocks"])`` notifications."""
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=MAX_RPC_BODY)
        await ws.prepare(request)
        outbox: asyncio.Queue[Any] = asyncio.Queue(maxsize=MAX_WS_BACKLOG)
        subscriptions: set[str] = set()
        overflow = asyncio.Event()

        def on_block(committed: CommittedBlock) -> None:
            if not subscriptions or overflow.is_set():
                return
            summary = _block_summary(committed)
            for sub_id in subscriptions:
                note = {"jsonrpc": "2.0", "method": "tdml_subscription", "params": {"subscription": sub_id, "result": summary}}
                try:
                    outbox.put_nowait(note)
                except asyncio.QueueFull:
                    # A client that does not read its notifications is cut off rather than buffered forever.
                    overflow.set()
                    return

        async def writer() -> None:
            while not ws.closed:
                if overflow.is_set():
                    await ws.close(message=b"notifications backlog full")
                    return
                await ws.send_str(json.dumps(await outbox.get()))

        self.node.add_block_listener(on_block)
        send_task = asyncio.create_task(writer())
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                answer = await self._ws_request(msg.data, subscriptions)
                if answer is not None:
                    await outbox.put(answer)
        finally:
            self.node.remove_block_listener(on_block)
            send_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await send_task
        return ws

    async def _ws_request(self, text: str, subscriptions: set[str]) -> Any:
        try:
            payload = json.loads(text)
        except ValueError as exc:
            return _error(None, PARSE_ERROR, f"parse error: {exc}")
        except RecursionError:
            return _error(None, PARSE_ERROR, "parse error: nested too deeply")
        if isinstance(payload, dict) and payload.get("method") in ("tdml_subscribe", "tdml_unsubscribe"):
            rid = payload.get("id")
            if not _valid_id(rid):
                return _error(None, INVALID_REQUEST, "id must be a string, a number or null")
            params = payload.get("params", [])
            if not isinstance(params, list) or len(params) != 1 or not isinstance(params[0], str):
                return _error(rid, INVALID_PARAMS, "expected one string param")
            if payload["method"] == "tdml_subscribe":
                if params[0] != "newBlocks":
                    return _error(rid, INVALID_PARAMS, "the only subscription is 'newBlocks'")
                sub_id = "0x" + os.urandom(8).hex()
                subscriptions.add(sub_id)
                return {"jsonrpc": "2.0", "id": rid, "result": sub_id}
            found = params[0] in subscriptions
            subscriptions.discard(params[0])
            return {"jsonrpc": "2.0", "id": rid, "result": found}
        return await self.dispatch(payload)

    # ---------------------------------------------------------- views

    def _genesis_view(self) -> Any:
        node = self.node
        return {"number": 0, "hash": hex0x(node.genesis_hash), "genesis": to_json(node.genesis)}

    def _block_view(self, block: Block, full: bool) -> Any:
        header = block.header
        view: dict[str, Any] = {
            "number": header.height,
            "hash": hex0x(compute_block_hash(header)),
            "header": to_json(header),
        }
        body = block.body
        if full:
            view["body"] = to_json(body)
        else:
            view["transactions"] = [hex0x(tx_hash(t)) for t in body.transactions]
            view["submissions"] = [hex0x(submission_id(s.submission)) for s in body.submissions]
            view["evidence"] = len(body.evidence)
            view["outcomes"] = [_outcome_view(o) for o in body.outcomes]
        commit = self.node.store.get_commit(header.height)
        view["commit"] = to_json(commit) if commit is not None else None
        return view

    def _job_summary(self, job: JobState) -> Any:
        return {
            "id": hex0x(job.job_id),
            "name": job.spec.name,
            "status": _status(job.status),
            "step": job.step,
            "steps": job.spec.steps,
            "modelRoot": hex0x(job.model_root),
        }

    def _job_view(self, job: JobState) -> Any:
        view = self._job_summary(job)
        last_eval = self.node.store.get_last_eval(job.job_id, job.step, job.spec.eval_every)
        view.update(
            submitter=hex0x(job.submitter),
            createdHeight=job.created_height,
            finishedHeight=job.finished_height if job.status == JOB_DONE else None,
            escrow=job.escrow,
            assignment=[hex0x(a) for a in job.assignment],
            accepted=[hex0x(a) if a is not None else None for a in job.accepted],
            lastOutcome=_outcome_view(job.last_outcome) if job.last_outcome is not None else None,
            lastEval=_outcome_view(last_eval) if last_eval is not None else None,
            spec=to_json(job.spec),
        )
        return view


def _block_summary(committed: CommittedBlock) -> dict[str, Any]:
    block = committed.block
    return {
        "number": block.header.height,
        "hash": hex0x(committed.block_hash),
        "round": committed.commit.round,
        "proposer": hex0x(block.header.proposer),
        "transactions": len(block.body.transactions),
        "submissions": len(block.body.submissions),
        "evidence": len(block.body.evidence),
        "outcomes": [_outcome_view(o) for o in block.body.outcomes],
    }


def _outcome_view(o: Any) -> Any:
    view = to_json(o)
    view["trainLossFloat"] = f32(o.train_loss)
    if o.eval_total:
        view["evalLossFloat"] = f32(o.eval_loss)
        view["testAccuracy"] = o.eval_correct / o.eval_total
    return view


def _status(code: int) -> str:
    return {JOB_ACTIVE: "active", JOB_DONE: "done"}.get(code, "stalled")


def _roles(bits: int) -> list[str]:
    return [name for flag, name in ((ROLE_TRAINER, "trainer"), (ROLE_VALIDATOR, "validator")) if bits & flag]


def _bind(method: Method, params: Any) -> list[Any]:
    specs = method.params
    if isinstance(params, list):
        if len(params) > len(specs):
            raise RpcError(INVALID_PARAMS, f"expected at most {len(specs)} params, got {len(params)}")
        values = list(params) + [_REQUIRED] * (len(specs) - len(params))
    elif isinstance(params, dict):
        unknown = set(params) - {p.name for p in specs}
        if unknown:
            raise RpcError(INVALID_PARAMS, f"unknown params: {sorted(unknown)}")
        values = [params.get(p.name, _REQUIRED) for p in specs]
    else:
        raise RpcError(INVALID_PARAMS, "params must be an array or an object")
    out = []
    for spec, value in zip(specs, values, strict=True):
        if value is _REQUIRED:
            if spec.default is _REQUIRED:
                raise RpcError(INVALID_PARAMS, f"missing param {spec.name!r}")
            out.append(spec.default)
        else:
            try:
                out.append(spec.parse(value))
            except RpcError as exc:
                raise RpcError(INVALID_PARAMS, f"{spec.name}: {exc.message}") from exc
    return out


def _valid_id(rid: Any) -> bool:
    # NaN and the infinities parse from JSON text but cannot be written back as JSON.
    if isinstance(rid, float):
        return math.isfinite(rid)
    return rid is None or isinstance(rid, str) or (isinstance(rid, int) and not isinstance(rid, bool))


def _error(rid: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}}


def _json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type="application/json")
