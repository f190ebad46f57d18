"""The RPC cookie end to end: a real ``tdml-node run`` process writes it, clients and the CLI upload with it.

The node writes ``data/rpc.cookie`` (mode 0600) at every start; blob uploads
without its token are refused; a client built from the node's home, the
devnet's clients and ``tdml-node job submit --home`` upload with it; after a
restart the old token no longer works and the clients read the new one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from tdml_node.cli import main
from tdml_node.client import NodeClient, RpcCallError, client_for_home
from tdml_node.config import cookie_file
from tdml_node.devnet import Devnet, running_devnet

pytestmark = pytest.mark.slow


def _wait(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _nonce(client: NodeClient, account: str) -> int:
    return int(client.call("tdml_getAccount", account)["nonce"])


def test_the_cookie_authorizes_uploads_and_changes_at_each_start(tmp_path: Path) -> None:
    devnet = Devnet.create(tmp_path / "net", 1)
    node = devnet.nodes[0]
    with running_devnet(devnet):
        cookie = cookie_file(node.home)
        first = cookie.read_text()
        assert cookie.stat().st_mode & 0o777 == 0o600 and len(first) == 64
        digest = node.client().put_blob(b"uploaded with the cookie")
        assert client_for_home(node.home).put_blob(b"and from the home") != digest
        for stranger in (NodeClient(node.rpc_url), NodeClient(node.rpc_url, token="0" * 64)):
            with pytest.raises(RpcCallError) as refused:
                stranger.put_blob(b"refused")
            assert refused.value.code == 401
        submit = ["job", "submit", "--job", "digits-mlp", "--steps", "1", "--key", str(devnet.base / "client_key.json"),
                  "--url", node.rpc_url]
        account = "0x" + devnet.client_key.address.hex()
        for submitted, (extra, env) in enumerate(
            ((["--home", str(node.home)], {}), (["--rpc-token", first], {}), ([], {"TDML_RPC_TOKEN": first})), 1
        ):
            result = CliRunner().invoke(main, submit + extra, env=env)
            assert result.exit_code == 0, result.output
            assert result.output.strip().startswith("0x")
            _wait(lambda: _nonce(node.client(), account) >= submitted)  # noqa: B023 (called at once)
        no_token = CliRunner().invoke(main, submit, env={"TDML_RPC_TOKEN": ""})
        assert no_token.exit_code != 0 and "401" in no_token.output
        devnet.stop(node)
        devnet.start(node)
        devnet.wait_ready()
        assert cookie.read_text() != first
        with pytest.raises(RpcCallError):
            NodeClient(node.rpc_url, token=first).put_blob(b"an old token")
        assert node.client().put_blob(b"uploaded with the cookie") == digest
