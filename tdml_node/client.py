"""A small blocking client for a node's RPC and blob endpoints, and transaction signing.

Used by the CLI, the devnet driver, tests and benchmarks. It speaks plain
HTTP through the standard library so a client needs nothing but this package.

This module must never hold a node's state; it only talks to one.
"""

from __future__ import annotations

import itertools
import json
import urllib.error
import urllib.request
from typing import Any

from consensus.codec import encode
from consensus.crypto import DOMAIN_TX, Keypair
from consensus.types import (
    Address,
    Amount,
    Hash32,
    JobSpec,
    RegisterNode,
    SignedTransaction,
    SubmitJob,
    Transaction,
    Transfer,
)


class RpcCallError(Exception):
    """The node answered with a JSON-RPC error."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message


class NodeUnreachable(urllib.error.URLError):
    """No node answered at the URL (refused, timed out, bad host); a ``URLError`` so old handlers still match."""

    def __init__(self, url: str, reason: str | BaseException) -> None:
        super().__init__(reason)
        self.url = url

    def __str__(self) -> str:
        return f"cannot reach the node at {self.url}: {_reason_text(self.reason)}"


def _reason_text(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return str(reason)


class NodeClient:
    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._ids = itertools.count(1)

    def call(self, method: str, *params: Any) -> Any:
        body = json.dumps({"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params)})
        answer = self._post_json("/", body.encode())
        if "error" in answer:
            raise RpcCallError(answer["error"]["code"], answer["error"]["message"])
        return answer["result"]

    def health(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=self.timeout) as resp:
                data: dict[str, Any] = json.loads(resp.read())
                return data
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def put_blob(self, data: bytes) -> str:
        answer = self._post_json("/blob", data, content_type="application/octet-stream")
        digest: str = answer["digest"]
        return digest

    def get_blob(self, digest_hex: str) -> bytes:
        try:
            with urllib.request.urlopen(f"{self.url}/blob/{digest_hex.removeprefix('0x')}", timeout=self.timeout) as resp:
                data: bytes = resp.read()
                return data
        except urllib.error.HTTPError as exc:
            raise RpcCallError(exc.code, exc.read().decode(errors="replace")) from exc
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            raise NodeUnreachable(self.url, getattr(exc, "reason", exc)) from exc

    def send_transaction(self, signed: SignedTransaction) -> str:
        result: str = self.call("tdml_sendRawTransaction", "0x" + encode(signed).hex())
        return result

    def next_nonce(self, keypair: Keypair) -> int:
        nonce: int = self.call("tdml_getAccount", "0x" + keypair.address.hex())["nonce"]
        return nonce

    def _post_json(self, path: str, data: bytes, content_type: str = "application/json") -> Any:
        req = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise RpcCallError(exc.code, exc.read().decode(errors="replace")) from exc
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            raise NodeUnreachable(self.url, getattr(exc, "reason", exc)) from exc


def sign_transaction(keypair: Keypair, chain_id: str, tx: Transaction) -> SignedTransaction:
    return SignedTransaction(tx, keypair.sign_value(DOMAIN_TX, chain_id, tx))


def make_transfer(keypair: Keypair, chain_id: str, nonce: int, to: bytes, amount: int, fee: int = 0) -> SignedTransaction:
    tx = Transaction(keypair.public_key, nonce, Amount(fee), Transfer(Address(to), Amount(amount)))
    return sign_transaction(keypair, chain_id, tx)


def make_register(
    keypair: Keypair, chain_id: str, nonce: int, stake: int, roles: int, endpoint: str = "", fee: int = 0
) -> SignedTransaction:
    tx = Transaction(keypair.public_key, nonce, Amount(fee), RegisterNode(Amount(stake), roles, endpoint))
    return sign_transaction(keypair, chain_id, tx)


def make_submit_job(
    keypair: Keypair,
    chain_id: str,
    nonce: int,
    spec: JobSpec,
    budget: int,
    initial_model_root: bytes,
    fee: int = 0,
) -> SignedTransaction:
    tx = Transaction(
        keypair.public_key, nonce, Amount(fee), SubmitJob(spec, Amount(budget), Hash32(initial_model_root))
    )
    return sign_transaction(keypair, chain_id, tx)
