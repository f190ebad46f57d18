"""A small blocking client for a node's RPC and blob endpoints, and transaction signing.

Used by the CLI, the devnet driver, tests and benchmarks. It speaks plain
HTTP through the standard library so a client needs nothing but this package.
Blob uploads carry a bearer token: one given, or the one in a node's
``rpc.cookie`` (read at each upload, since the node replaces it at every
start); ``client_for_home`` builds a client for the node of a home directory.

This module must never hold a node's state; it only talks to one.
"""

from __future__ import annotations

import itertools
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from consensus.codec import encode
from consensus.crypto import DOMAIN_TX, Keypair
from consensus.types import (
    Address,
    Amount,
    Hash32,
    JobSpec,
    KeyShare,
    RegisterNode,
    SignedTransaction,
    SubmitJob,
    Transaction,
    Transfer,
)
from tdml_node.config import load_config


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
    def __init__(self, url: str, timeout: float = 30.0, *, token: str | None = None, cookie: Path | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.token = token
        self.cookie = cookie
        self._ids = itertools.count(1)

    def blob_token(self) -> str | None:
        """The token given, else the cookie file's current one, else None (uploads will be refused)."""
        if self.token:
            return self.token
        if self.cookie is None:
            return None
        try:
            return self.cookie.read_text().strip() or None
        except OSError:
            return None

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
        token = self.blob_token()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        answer = self._post_json("/blob", data, content_type="application/octet-stream", headers=headers)
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

    def _post_json(
        self, path: str, data: bytes, content_type: str = "application/json", headers: dict[str, str] | None = None
    ) -> Any:
        req = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": content_type, **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise RpcCallError(exc.code, exc.read().decode(errors="replace")) from exc
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            raise NodeUnreachable(self.url, getattr(exc, "reason", exc)) from exc


def client_for_home(home: Path, timeout: float = 30.0, token: str | None = None) -> NodeClient:
    """A client for the node of ``home``: its RPC address, and its fixed token or else its cookie."""
    config = load_config(home)
    host = config.rpc_host if config.rpc_host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    netloc = f"[{host}]" if ":" in host else host
    return NodeClient(
        f"http://{netloc}:{config.rpc_port}", timeout, token=token or config.rpc_token or None,
        cookie=config.rpc_cookie_file,
    )


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
    key_shares: tuple[KeyShare, ...] = (),
) -> SignedTransaction:
    payload = SubmitJob(spec, Amount(budget), Hash32(initial_model_root), key_shares)
    tx = Transaction(keypair.public_key, nonce, Amount(fee), payload)
    return sign_transaction(keypair, chain_id, tx)
