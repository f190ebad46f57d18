"""Fuzz target (c): the JSON-RPC server's ``dispatch_bytes`` on a live in-process node.

A real ``Node`` (real LevelDB in a temporary directory, consensus running,
blocks every 50 ms) answers request bodies through ``RpcServer.dispatch_bytes``
directly, without HTTP. Properties, for every body:

- the call returns (never raises) a well-formed JSON-RPC 2.0 answer: an
  object, a non-empty list of them for a batch, or None only when every
  request was a notification; each answer has ``jsonrpc``, ``id`` and exactly
  one of ``result`` or ``error``; it serialises as strict JSON (no NaN);
- an error has a standard code (-32700, -32600, -32601, -32602 or -32010),
  never -32603 (internal error), and the id of a valid request is echoed;
- the mempool gains only the transactions the answers accepted, and the node
  never halts; at the end of a run the chain has advanced and the stored tip
  (block, commit, state) is consistent.

Inputs: every method with good, wrong-typed, huge, deeply nested, giant and
invalid-hex params (positional and by name), broken envelopes and ids (NaN,
infinities, objects), batches, notifications, JSON text mutated at the byte
level, and transactions: valid ones, undecodable ones, ones with an invalid
signature or signed for another chain id, and correctly signed ones with
random payloads (transfers, registrations, job submissions with mutated specs).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import random
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consensus import crypto
from consensus.codec import DecodeError, decode_as, encode
from consensus.crypto import DOMAIN_TX, Keypair
from consensus.state import LedgerState
from consensus.transition import compute_block_hash
from consensus.types import (
    Address,
    Amount,
    JobSpec,
    RegisterNode,
    Signature,
    SignedTransaction,
    SubmitJob,
    Transaction,
    Transfer,
)
from tdml_node.config import NodeConfig
from tdml_node.genesis import compose_genesis
from tdml_node.node import Node, open_node
from tdml_node.pools import tx_hash
from tdml_node.pools.mempool import MAX_NONCE_GAP
from tdml_node.rpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    TX_REJECTED,
    RpcServer,
)
from tdml_node.rpc.websocket import handle_text
from tdml_node.storage import ChainStore

from .common import FuzzFailure
from .mutate import mutate
from .values import fields_of, message_of, value_of

TARGET = "rpc"
CHAIN_ID = "tdml-fuzz-rpc"
STANDARD_CODES = {PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, TX_REJECTED}
RESULT = "result"


def node_key() -> Keypair:
    return Keypair.from_seed(crypto.sha256(b"tdml-fuzz-rpc/node"))


def client_key() -> Keypair:
    return Keypair.from_seed(crypto.sha256(b"tdml-fuzz-rpc/client"))


def stranger_key() -> Keypair:
    """A key with no funds on the chain."""
    return Keypair.from_seed(crypto.sha256(b"tdml-fuzz-rpc/stranger"))


@dataclass
class RpcHarness:
    """A live node, its RPC server (not listening: bodies go to ``dispatch_bytes``) and fuzz state."""

    node: Node
    server: RpcServer
    store: ChainStore
    client: Keypair
    job_spec: JobSpec | None
    start_height: int = 0
    accepted: int = 0
    sent_valid: int = 0
    methods: tuple[str, ...] = ()
    known_hashes: list[str] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    async def stop(self) -> None:
        """Stop the node and wait for it (the store stays open for ``check_final``)."""
        self.node.request_stop()
        if self.task is not None:
            async with asyncio.timeout(60):
                await self.task


@contextlib.asynccontextmanager
async def live_node(home: Path | None = None, *, with_job_spec: bool = True) -> AsyncIterator[RpcHarness]:
    """Start a one-validator node in-process (real LevelDB under ``home``) and stop it afterwards."""
    with contextlib.ExitStack() as stack:
        if home is None:
            home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tdml-fuzz-rpc-")))
        key, client = node_key(), client_key()
        genesis = compose_genesis(CHAIN_ID, [(key.public_key, "")], clients=[client.public_key])
        config = NodeConfig(home=home, rpc_port=0, dev=True, block_interval_ms=50)
        store = ChainStore(config.data_dir)
        try:
            async with open_node(config, key, genesis, store=store) as node:
                server = RpcServer(node, "127.0.0.1", 0, dev=config.dev)
                spec = _preset_spec() if with_job_spec else None
                harness = RpcHarness(node, server, store, client, spec, methods=tuple(server.methods.table))
                harness.task = asyncio.create_task(node.run(), name="fuzz-node")
                try:
                    yield harness
                finally:
                    await harness.stop()
        finally:
            store.close()


def _preset_spec() -> JobSpec | None:
    try:
        from tdml_node.work.jobs import get_job

        spec, _ = get_job("digits-mlp")
    except Exception:  # the preset needs scikit-learn's bundled data; fuzzing goes on without it
        return None
    return spec


# ---------------------------------------------------------------------------
# Parameter values


BAD_VALUES: tuple[Any, ...] = (
    None, True, False, 0, 1, -1, 1.5, -0.0, 1e308, 2**63, 2**64 - 1, 2**64, 10**30, -(10**30),
    "", "0x", "0X00", "0xzz", "0x0", "0x" + "0" * 63, "0x" + "00" * 33, "0x" + "00" * 19, "0x-1", "-0x1",
    "0x_1", "0x1 ", " 0x1", "0x\u0660", "latest ", "pending", "LATEST", "\u0000", "\ud800", "\u4e2d",
    [], {}, [1, 2], {"a": 1}, [[[[[]]]]], "0x" + "ff" * 32, "0x" + "gg" * 32,
)


def _deep(rng: random.Random) -> Any:
    depth = rng.choice([10, 100, 500])
    value: Any = rng.choice([0, "x", None])
    for _ in range(depth):
        value = [value] if rng.random() < 0.5 else {"k": value}
    return value


def bad_value(rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.75:
        return rng.choice(BAD_VALUES)
    if roll < 0.85:
        return _deep(rng)
    if roll < 0.93:
        return "0x" + rng.choice(["ab", "f", "0"]) * rng.choice([1000, 70_000])
    if roll < 0.97:
        return rng.choice(["a", "\u00e9", "0x"]) * rng.choice([10_000, 300_000])
    return rng.choice([10**300, -(10**300), 2**128 + 1])


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def good_value(h: RpcHarness, parse_name: str, rng: random.Random) -> Any:
    height = h.node.state.height
    if parse_name == "parse_block_tag":
        return rng.choice(["latest", "earliest", rng.randint(0, height + 2), hex(rng.randint(0, height + 2)), 2**63 - 1, 2**64 - 1])
    if parse_name == "parse_bool":
        return rng.random() < 0.5
    if parse_name == "parse_count":
        return rng.choice([1, 2, 100, 1000])
    if parse_name == "parse_address":
        return rng.choice([_hex(h.client.address), _hex(h.client.public_key), _hex(rng.randbytes(20)), _hex(rng.randbytes(32))])
    if parse_name == "parse_raw":
        return _hex(encode(_transfer(h, rng, valid=False)))
    if parse_name == "parse_count_or_zero":
        return rng.randint(0, height + 2)
    if parse_name == "parse_key_list":
        return [_hex(k.public_key) for k in (node_key(), client_key())][: rng.randrange(3)]
    # a hash (and whatever a method added later takes: its bad-value path still applies)
    if h.known_hashes and rng.random() < 0.5:
        return rng.choice(h.known_hashes)
    return _hex(rng.randbytes(32))


# ---------------------------------------------------------------------------
# Transactions


def _client_nonce(h: RpcHarness) -> int:
    """The client's next nonce, counting its transactions waiting in the mempool."""
    acct = h.node.state.get_account(h.client.address)
    pending = [t.tx.nonce for t in h.node.mempool.items() if t.tx.sender == h.client.public_key]
    return max([acct.nonce - 1, *pending]) + 1


def _sign(key: Keypair, tx: Transaction, chain_id: str = CHAIN_ID) -> SignedTransaction:
    return SignedTransaction(tx, key.sign_value(DOMAIN_TX, chain_id, tx))


def _transfer(h: RpcHarness, rng: random.Random, *, valid: bool) -> SignedTransaction:
    nonce = _client_nonce(h) if valid else rng.choice([0, 1, 63, 2**64 - 1, _client_nonce(h) + 100])
    tx = Transaction(h.client.public_key, nonce, Amount(0), Transfer(Address(rng.randbytes(20)), Amount(rng.randint(1, 3))))
    return _sign(h.client, tx)


def _random_payload(h: RpcHarness, rng: random.Random) -> Transfer | RegisterNode | SubmitJob:
    roll = rng.random()
    if roll < 0.3:
        return Transfer(Address(rng.randbytes(20)), Amount(rng.choice([0, 1, 10**12, 2**64 - 1])))
    if roll < 0.6:
        # Never the validator role: a second validator that no one runs would halt
        # this one-node chain (correct behaviour, but the end of the fuzz run).
        roles = rng.choice([0, 1])
        return RegisterNode(Amount(rng.choice([0, 1, 10**6, 2**64 - 1])), roles, rng.choice(["", "127.0.0.1:1", "x" * 128]))
    spec = h.job_spec
    if spec is None or rng.random() < 0.3:
        spec = message_of(JobSpec, rng)
    else:
        name, tp = rng.choice(fields_of(JobSpec))
        spec = dataclasses.replace(spec, **{name: value_of(tp, rng)})
    return SubmitJob(spec, Amount(rng.choice([0, 1, 10**9, 2**64 - 1])), crypto.sha256(rng.randbytes(8)))


@dataclass(frozen=True)
class RpcInput:
    body: bytes
    category: str
    expect: frozenset[str] | None  # acceptable outcome classes ("result", "error:CODE", ...); None: any
    message_has: str = ""  # a word the error message must contain
    channel: str = "http"  # "ws": the websocket's handler (subscriptions, then the same dispatch)

    def context(self) -> str:
        return f"channel={self.channel} category={self.category} expect={sorted(self.expect) if self.expect else 'any'}"


def _expect(*outcomes: int | str) -> frozenset[str]:
    """Outcome classes from error codes and names ("result", "none", "batch")."""
    return frozenset(o if isinstance(o, str) else f"error:{o}" for o in outcomes)


def _request(method: Any, params: Any, rid: Any = 1, *, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    req = {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}
    for key in drop:
        req.pop(key, None)
    return req


def _body(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def _tx_input(h: RpcHarness, rng: random.Random) -> RpcInput:
    roll = rng.random()
    client = h.client
    if roll < 0.15:
        signed = _transfer(h, rng, valid=True)
        h.sent_valid += 1
        body = _body(_request("tdml_sendRawTransaction", [_hex(encode(signed))]))
        if signed.tx.nonce - h.node.state.get_account(client.address).nonce >= MAX_NONCE_GAP - 8:
            # The chain has fallen behind the client: too far ahead is the right answer.
            return RpcInput(body, "tx-valid-backlog", _expect(RESULT, TX_REJECTED))
        return RpcInput(body, "tx-valid", _expect(RESULT))
    if roll < 0.30:
        tx = _transfer(h, rng, valid=True).tx
        signed = _sign(client, tx, rng.choice(["another-chain", "", CHAIN_ID + " ", "tdml-fuzz"]))
        return RpcInput(_body(_request("tdml_sendRawTransaction", [_hex(encode(signed))])), "tx-wrong-chain", _expect(TX_REJECTED), "signature")
    if roll < 0.45:
        signed = _transfer(h, rng, valid=True)
        sig = bytearray(signed.signature)
        sig[rng.randrange(64)] ^= 1 << rng.randrange(8)
        bad = rng.choice([
            SignedTransaction(signed.tx, Signature(bytes(sig))),
            SignedTransaction(dataclasses.replace(signed.tx, fee=Amount(signed.tx.fee + 1)), signed.signature),
            SignedTransaction(signed.tx, Signature(bytes(64))),
        ])
        return RpcInput(_body(_request("tdml_sendRawTransaction", [_hex(encode(bad))])), "tx-bad-signature", _expect(TX_REJECTED), "signature")
    if roll < 0.60:
        data, _ = mutate(encode(_transfer(h, rng, valid=True)), rng)
        return RpcInput(_body(_request("tdml_sendRawTransaction", [_hex(data)])), "tx-mutated-bytes", None)
    if roll < 0.70:
        signed = message_of(SignedTransaction, rng)
        return RpcInput(_body(_request("tdml_sendRawTransaction", [_hex(encode(signed))])), "tx-random", _expect(TX_REJECTED))
    if roll < 0.80:
        tx = Transaction(stranger_key().public_key, 0, Amount(rng.choice([0, 5])), Transfer(Address(rng.randbytes(20)), Amount(1)))
        signed = _sign(stranger_key(), tx)
        return RpcInput(_body(_request("tdml_sendRawTransaction", [_hex(encode(signed))])), "tx-unfunded", _expect(TX_REJECTED))
    nonce = _client_nonce(h) if rng.random() < 0.7 else rng.choice([0, 2**64 - 1])
    tx = Transaction(client.public_key, nonce, Amount(rng.choice([0, 1, 2**64 - 1])), _random_payload(h, rng))
    signed = _sign(client, tx)
    return RpcInput(_body(_request("tdml_sendRawTransaction", [_hex(encode(signed))])), "tx-signed-random", _expect(RESULT, TX_REJECTED))


def _id(rng: random.Random) -> tuple[Any, bool]:
    """A request id and whether it is valid JSON-RPC."""
    roll = rng.random()
    if roll < 0.6:
        return rng.choice([1, 0, "a", "", None, 2**53, -7, 1.5, "\u4e2d" * 3]), True
    return rng.choice([True, False, [], {}, [1], {"x": 1}]), False


def _call_input(h: RpcHarness, rng: random.Random) -> RpcInput:
    method = rng.choice(h.methods)
    spec = h.server.methods.table[method]
    params: Any
    roll = rng.random()
    if roll < 0.35:
        values = [good_value(h, p.parse.__name__, rng) for p in spec.params]
        if spec.params and rng.random() < 0.3:
            values = values[: rng.randrange(len(values) + 1)]  # a required param may go missing
        params = values if rng.random() < 0.7 else {p.name: v for p, v in zip(spec.params, values, strict=False)}
        category = "call-good"
    elif roll < 0.80:
        values = [good_value(h, p.parse.__name__, rng) for p in spec.params] or [None]
        i = rng.randrange(len(values))
        values[i] = bad_value(rng)
        if rng.random() < 0.2:
            values.append(bad_value(rng))  # one param too many
        params = values
        category = "call-bad-param"
    else:
        params = rng.choice([None, 5, "x", True, {"nope": 1}, [None] * 5, {"a": [1]}, _deep(rng)])
        body = _body(_request(method, params, rng.choice([1, "a", None])))
        # JSON-RPC 2.0: params that are neither an array nor an object make an invalid request.
        code = INVALID_PARAMS if isinstance(params, list | dict) else INVALID_REQUEST
        return RpcInput(body, "call-bad-params-container", _expect(code))
    body = _body(_request(method, params, rng.choice([1, "a", None, 2**53, -7, 1.5])))
    # Any standard answer: methods may refuse a call for reasons of their own
    # (a dev-only method on a node without a network is an invalid request).
    return RpcInput(body, category, None)


def _envelope_input(h: RpcHarness, rng: random.Random) -> RpcInput:
    method = rng.choice(h.methods)
    roll = rng.randrange(9)
    if roll == 0:
        rid, ok = _id(rng)
        return RpcInput(_body(_request(method, [], rid)), "envelope-id", None if ok else _expect(INVALID_REQUEST))
    if roll == 1:
        text = rng.choice(['{"jsonrpc":"2.0","id":NaN,"method":"tdml_blockNumber"}', '{"jsonrpc":"2.0","id":Infinity,"method":"tdml_blockNumber"}', '{"jsonrpc":"2.0","id":-Infinity,"method":"tdml_blockNumber"}', '{"jsonrpc":"2.0","id":1e400,"method":"tdml_blockNumber"}'])
        return RpcInput(text.encode(), "envelope-nonfinite-id", _expect(INVALID_REQUEST))
    if roll == 2:
        req = _request(method, [], 1, drop=(rng.choice(["jsonrpc", "method"]),))
        return RpcInput(_body(req), "envelope-missing", _expect(INVALID_REQUEST))
    if roll == 3:
        req = _request(method, [], 1)
        req[rng.choice(["jsonrpc", "method"])] = rng.choice([None, 2.0, "1.0", 2, [], {}, "2.0 "])
        return RpcInput(_body(req), "envelope-wrong", _expect(INVALID_REQUEST, METHOD_NOT_FOUND))
    if roll == 4:
        name = rng.choice(["tdml_nope", "", "__init__", "dispatch", "tdml_blockNumber ", "rpc.discover", "x" * 10_000, method.upper()])
        return RpcInput(_body(_request(name, [], 3)), "unknown-method", _expect(METHOD_NOT_FOUND))
    if roll == 5:
        req = _request(method, [], rng.choice([1, "n"]), drop=("id",))  # a notification: no answer
        return RpcInput(_body(req), "notification", _expect("none"))
    if roll == 6:
        n = rng.choice([0, 1, 3, 100, 101, 500])
        items = [_request(rng.choice(h.methods), [], i) if rng.random() < 0.7 else bad_value(rng) for i in range(n)]
        expect = _expect(INVALID_REQUEST) if n == 0 or n > 100 else _expect("batch")
        return RpcInput(_body(items), "batch", expect)
    if roll == 7:
        return RpcInput(_body(bad_value(rng)), "not-a-request", _expect(INVALID_REQUEST, "batch"))
    depth = rng.choice([1000, 10_000, 200_000])
    text = rng.choice(["[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth, "[" * depth])
    return RpcInput(text.encode(), "deep-nesting", _expect(PARSE_ERROR, INVALID_REQUEST))


def _text_mutation(h: RpcHarness, rng: random.Random) -> RpcInput:
    base = rng.choice([_call_input, _tx_input])(h, rng).body if rng.random() < 0.8 else b'{"jsonrpc":"2.0","id":1,"method":"tdml_blockNumber"}'
    roll = rng.random()
    if roll < 0.5:
        out = bytearray(base)
        for _ in range(rng.choice([1, 1, 2, 5])):
            if not out:
                break
            pos = rng.randrange(len(out))
            how = rng.randrange(4)
            if how == 0:
                out[pos] = rng.randrange(256)
            elif how == 1:
                out.insert(pos, rng.choice(b'{}[]",:0x\\e-.'))
            elif how == 2:
                del out[pos]
            else:
                del out[pos:]
        return RpcInput(bytes(out), "text-mutated", None)
    if roll < 0.6:
        return RpcInput(b"\xef\xbb\xbf" + base, "text-bom", None)
    if roll < 0.7:
        return RpcInput(base.replace(b'"', b"'"), "text-quotes", None)
    if roll < 0.8:
        return RpcInput(base + rng.choice([b"\x00", b"garbage", b"\xff\xfe", b" {}"]), "text-trailing", None)
    if roll < 0.9:
        return RpcInput(rng.randbytes(rng.randrange(1, 64)), "text-random", None)
    return RpcInput(b"1" * rng.choice([4000, 5000, 100_000]), "text-huge-number", None)


def _ws_input(h: RpcHarness, rng: random.Random) -> RpcInput:
    """A websocket text message: a (un)subscription with odd params and ids, or any other input."""
    if rng.random() < 0.5:
        inner = generate(h, rng, websocket=False)
        return dataclasses.replace(inner, body=inner.body.decode("utf-8", "replace").encode(), channel="ws", expect=None, message_has="")
    method = rng.choice(["tdml_subscribe", "tdml_unsubscribe", "eth_subscribe", "eth_unsubscribe"])
    params = rng.choice(
        [["newBlocks"], ["newHeads"], ["0x00"], [], ["newBlocks", 1], [1], None, "newBlocks", {"a": 1}, [_deep(rng)]]
    )
    req: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
    rid, _ = _id(rng)
    if rng.random() < 0.9:
        req["id"] = rid
    text = json.dumps(req)
    if rng.random() < 0.1:
        text = text.replace('"id": ' + json.dumps(rid), '"id": NaN') if "id" in req else text
    return RpcInput(text.encode(), "ws-subscription", None, channel="ws")


def generate(h: RpcHarness, rng: random.Random, *, websocket: bool = True) -> RpcInput:
    roll = rng.random()
    if websocket and roll < 0.06:
        return _ws_input(h, rng)
    if roll < 0.35:
        return _call_input(h, rng)
    if roll < 0.60:
        return _tx_input(h, rng)
    if roll < 0.85:
        return _envelope_input(h, rng)
    return _text_mutation(h, rng)


# ---------------------------------------------------------------------------
# Checking


def _is_notification(req: Any) -> bool:
    return isinstance(req, dict) and req.get("jsonrpc") == "2.0" and isinstance(req.get("method"), str) and "id" not in req


def _valid_id(rid: Any) -> bool:
    if rid is None or isinstance(rid, str):
        return True
    return isinstance(rid, int | float) and not isinstance(rid, bool) and math.isfinite(rid)


def _check_answer(answer: Any, request: Any) -> str:
    if not isinstance(answer, dict):
        raise FuzzFailure("shape", f"an answer is a {type(answer).__name__}, not an object")
    keys = set(answer)
    if answer.get("jsonrpc") != "2.0" or "id" not in answer or keys not in ({"jsonrpc", "id", "result"}, {"jsonrpc", "id", "error"}):
        raise FuzzFailure("shape", f"malformed answer {str(answer)[:300]}")
    rid = answer["id"]
    if not _valid_id(rid):
        raise FuzzFailure("id", f"answer id {rid!r} is not a valid JSON-RPC id")
    if isinstance(request, dict) and "id" in request and _valid_id(request["id"]) and request.get("jsonrpc") == "2.0" and isinstance(request.get("method"), str):
        if rid != request["id"] or type(rid) is not type(request["id"]):
            raise FuzzFailure("id", f"answer id {rid!r} is not the request's {request['id']!r}")
    if "result" in answer:
        return RESULT
    error = answer["error"]
    if not isinstance(error, dict) or set(error) != {"code", "message"} or type(error["code"]) is not int or not isinstance(error["message"], str):
        raise FuzzFailure("shape", f"malformed error {str(error)[:300]}")
    code = error["code"]
    if code == INTERNAL_ERROR:
        raise FuzzFailure("internal-error", f"-32603: {error['message']}")
    if code not in STANDARD_CODES:
        raise FuzzFailure("code", f"non-standard error code {code}")
    return f"error:{code}"


def _note_accepted(outcome: str, answer: dict[str, Any], request: Any, accepted: set[bytes]) -> None:
    """Add the hash a successful ``sendRawTransaction`` answered with (checking its form)."""
    if outcome != RESULT or not isinstance(request, dict) or request.get("method") != "tdml_sendRawTransaction":
        return
    result = answer["result"]
    if not (isinstance(result, str) and result.startswith("0x") and len(result) == 66):
        raise FuzzFailure("result", f"sendRawTransaction answered {result!r}")
    accepted.add(bytes.fromhex(result[2:]))


def _parsed(body: bytes | str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return _Unparsable


class _Unparsable:
    pass


def mempool_hashes(node: Node) -> set[bytes]:
    # The pool's own keys are the transactions' hashes (``tx_hash``); reading them
    # saves hashing every pending transaction twice per input.
    return set(node.mempool._txs)


def _check_no_stale_pending(node: Node) -> None:
    """A commit updates the state and prunes the pool in one step: no pending nonce is ever used up."""
    for signed in node.mempool.items():
        used = node.state.get_account(crypto.address_of(signed.tx.sender)).nonce
        if signed.tx.nonce < used:
            raise FuzzFailure(
                "mempool-stale",
                f"a {type(signed.tx.payload).__name__} with nonce {signed.tx.nonce} is pending, but the account's "
                f"next nonce is {used} (height {node.state.height})",
            )


def _sent_unanswered(request: Any) -> set[bytes]:
    """Hashes of the transactions sent in notifications: the node may take them without a word."""
    out: set[bytes] = set()
    for req in request if isinstance(request, list) else [request]:
        if not (_is_notification(req) and req.get("method") == "tdml_sendRawTransaction"):
            continue
        params = req.get("params")
        raw = params[0] if isinstance(params, list) and params else params.get("tx") if isinstance(params, dict) else None
        if isinstance(raw, str) and raw.startswith("0x"):
            with contextlib.suppress(ValueError, DecodeError):
                out.add(bytes(tx_hash(decode_as(bytes.fromhex(raw[2:]), SignedTransaction))))
    return out


async def check(h: RpcHarness, inp: RpcInput) -> str:
    """Dispatch one body and check the answer and what it did to the node; returns the outcome class."""
    node = h.node
    before = mempool_hashes(node)
    if inp.channel == "ws":
        answer = await handle_text(inp.body.decode("utf-8", "replace"), {}, h.server.dispatcher)
    else:
        answer = await h.server.dispatch_bytes(inp.body)
    try:
        json.dumps(answer, allow_nan=False)
    except ValueError as exc:
        raise FuzzFailure("json", f"the answer is not strict JSON: {exc}") from exc
    # The websocket handler gets text: a BOM is then a character, not an encoding mark.
    request = _parsed(inp.body.decode("utf-8", "replace") if inp.channel == "ws" else inp.body)
    accepted: set[bytes] = set()
    if answer is None:
        batch_of_notes = isinstance(request, list) and 0 < len(request) <= 100 and all(_is_notification(r) for r in request)
        if not (_is_notification(request) or batch_of_notes):
            raise FuzzFailure("shape", "no answer to a request that is not a notification")
        outcome = "none"
    elif isinstance(answer, list):
        if not answer or not isinstance(request, list):
            raise FuzzFailure("shape", "a list answer to a request that is not a batch")
        requests = [r for r in request if not _is_notification(r)]
        if len(answer) != len(requests):
            raise FuzzFailure("shape", f"{len(answer)} answers to {len(requests)} requests")
        for a, r in zip(answer, requests, strict=True):
            _note_accepted(_check_answer(a, r), a, r, accepted)
        outcome = "batch"
    else:
        outcome = _check_answer(answer, request)
        _note_accepted(outcome, answer, request, accepted)
    if inp.expect is not None and outcome not in inp.expect:
        raise FuzzFailure("expectation", f"{inp.category}: answered {outcome}, expected one of {sorted(inp.expect)}: {str(answer)[:300]}")
    if inp.message_has and (not isinstance(answer, dict) or inp.message_has not in str(answer.get("error", {}).get("message", ""))):
        raise FuzzFailure("expectation", f"{inp.category}: the error does not say {inp.message_has!r}: {str(answer)[:300]}")
    after = mempool_hashes(node)
    if after - before - accepted - _sent_unanswered(request):
        raise FuzzFailure("mempool", f"{len(after - before - accepted)} transactions entered the mempool without being accepted")
    h.accepted += len(accepted)
    _check_no_stale_pending(node)
    if node.fatal is not None:
        raise FuzzFailure("halted", f"the node halted: {node.fatal!r}")
    return f"{inp.category} -> {outcome}"


def remember_hashes(h: RpcHarness) -> None:
    """Note a few real block hashes so hash params sometimes name something that exists."""
    height = h.node.state.height
    if height and len(h.known_hashes) < 32:
        block = h.store.get_block(height)
        if block is not None:
            h.known_hashes.append(_hex(compute_block_hash(block.header)))


async def wait_height(h: RpcHarness, height: int, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while h.node.state.height < height:
            await asyncio.sleep(0.02)


def check_final(h: RpcHarness) -> dict[str, Any]:
    """After the node stopped: its stored tip is whole and its state is the one it reports."""
    node, store = h.node, h.store
    # Under the store's write lock: a commit that the stop cancelled may still be
    # finishing in its thread, and the reads below must see all of it or none.
    with store._lock:
        tip = store.tip()
        if tip is None:
            raise FuzzFailure("store", "no tip")
        block = store.get_block(tip.height)
        commit = store.get_commit(tip.height)
        state = store.load_state()
    if block is None or commit is None or state is None:
        raise FuzzFailure("store", f"tip {tip.height} is missing its block, commit or state")
    if compute_block_hash(block.header) != tip.block_hash or commit.block_hash != tip.block_hash:
        raise FuzzFailure("store", "the tip's block or commit does not match its hash")
    reloaded = LedgerState.decode(node.state.encode(), node.state.tip_hash)
    if reloaded.root != node.state.root:
        raise FuzzFailure("store", "the state reloaded from its own encoding has another root")
    if state.root != block.header.state_root or state.height != tip.height:
        raise FuzzFailure("store", f"the stored state (height {state.height}) is not the state of tip block {tip.height}")
    # A stop can cancel the node while its last commit finishes in a thread:
    # the store is then one block ahead of the node's memory, never behind.
    if node.state.height == tip.height:
        if node.state.root != state.root:
            raise FuzzFailure("store", "the node's state differs from the stored state at the same height")
    elif node.state.height + 1 != tip.height:
        raise FuzzFailure("store", f"the node is at height {node.state.height}, its store at {tip.height}")
    for signed in node.mempool.items():
        if not crypto.verify_value(signed.tx.sender, DOMAIN_TX, CHAIN_ID, signed.tx, signed.signature):
            raise FuzzFailure("mempool", "a transaction with a bad signature is in the mempool")
    if tip.height <= h.start_height:
        raise FuzzFailure("stalled", f"the chain did not advance during the run (height {tip.height})")
    return {"rpc_heights": tip.height - h.start_height, "rpc_txs_accepted": h.accepted}
