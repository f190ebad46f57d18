"""Every user error is one clear line through the real CLI: status 2 for usage, 1 for runtime, 130 for Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from consensus.crypto import Keypair
from consensus.types import PublicKey
from tdml_node.cli import main
from tdml_node.config import NodeConfig, write_config
from tdml_node.devnet import free_port
from tdml_node.genesis import compose_genesis, write_genesis
from tdml_node.keys import write_key_file

ZERO_ID = "0x" + "00" * 32


def _error(args: list[str], code: int, env: dict[str, str] | None = None) -> str:
    """The one ``Error:`` line a failing command prints (after click's usage lines, for status 2)."""
    result = CliRunner().invoke(main, args, catch_exceptions=False, env=env)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    if code == 1:
        assert lines == errors, result.output
    return errors[0]


@pytest.fixture
def dead_url() -> str:
    """A loopback port nobody listens on."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    CliRunner().invoke(main, ["keys", "new", "alice", "--keys-dir", str(tmp_path / "keys"), "--insecure-dev-key"])
    return tmp_path / "keys"


def test_an_unreachable_node_is_one_line_for_every_command(dead_url: str, keys_dir: Path, tmp_path: Path) -> None:
    expected = f"cannot reach the node at {dead_url}: connection refused — is `tdml-node run` running?"
    for args in (
        ["job", "list"],
        ["job", "show", ZERO_ID],
        ["job", "submit", "--key", "alice", "--keys-dir", str(keys_dir), "--steps", "1"],
        ["model", "export", ZERO_ID, "--out", str(tmp_path / "m.safetensors")],
        ["transfer", "--key", str(keys_dir / "alice.json"), "--to", "0x" + "11" * 20, "--amount", "1"],
        ["rpc", "tdml_blockNumber"],
    ):
        assert _error([*args, "--url", dead_url], 1) == f"Error: {expected}", args
    assert _error(["job", "list"], 1, env={"TDML_RPC": dead_url}) == f"Error: {expected}"


def test_register_reaches_the_node_at_its_homes_rpc_port(tmp_path: Path) -> None:
    port = free_port()
    home = tmp_path / "n"
    write_config(NodeConfig(home=home, rpc_port=port))
    write_key_file(home / "node_key.json", Keypair.generate(), None, insecure=True)
    line = _error(["register", "--home", str(home), "--stake", "10"], 1)
    assert line.startswith(f"Error: cannot reach the node at http://127.0.0.1:{port}:")


def test_usage_errors_are_status_2_and_name_the_problem(tmp_path: Path) -> None:
    assert "no preset 'x'; presets: digits-mlp" in _error(["job", "submit", "--job", "x", "--key", "k"], 2)
    assert "no preset 'x'" in _error(["reference", "--job", "x"], 2)
    assert "'0xdeadbeef' is 4 bytes; a job id is 32" in _error(["job", "show", "0xdeadbeef"], 2)
    assert "is not hex" in _error(["model", "export", "nothex", "--out", "m"], 2)
    assert "--nope" in _error(["job", "list", "--nope"], 2)
    assert "does not exist" in _error(["genesis", "show", str(tmp_path / "missing.bin")], 2)
    assert "needs a text file" in _error(["reference", "--job", "chars-transformer"], 2)
    assert "does not exist" in _error(["keys", "new", "k", "--passphrase-file", str(tmp_path / "nope")], 2)
    assert "'jbo'" in _error(["jbo"], 2)


def test_runtime_errors_are_status_1_and_one_line(tmp_path: Path, keys_dir: Path, dead_url: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text("rpc_port = 1\n")
    assert "is not a valid genesis file" in _error(["genesis", "show", str(config)], 1)
    line = _error(["job", "submit", "--key", "bob", "--keys-dir", str(keys_dir), "--url", dead_url], 1)
    assert line == f"Error: no key named 'bob' in {keys_dir} (`tdml-node keys list` shows them), and no file bob either"
    (tmp_path / "n").mkdir()
    (tmp_path / "n" / "config.toml").write_text("rpc_port = = 3\n")
    assert "cannot read" in _error(["run", "--home", str(tmp_path / "n")], 1)
    assert "no genesis file" in _error(["run", "--home", str(tmp_path / "empty")], 1)


def test_dev_options_follow_the_genesis(tmp_path: Path) -> None:
    real, dev = tmp_path / "real.bin", tmp_path / "dev.bin"
    node = (PublicKey(Keypair.generate().public_key), "127.0.0.1:1")
    write_genesis(real, compose_genesis("mainnet", [node]))
    write_genesis(dev, compose_genesis("mine-devnet", [node]))
    line = _error(["init", "--home", str(tmp_path / "a"), "--insecure-dev-key", "--genesis", str(real)], 1)
    assert "'mainnet' is not a dev chain" in line and not (tmp_path / "a" / "node_key.json").exists()
    out = CliRunner().invoke(main, ["init", "--home", str(tmp_path / "b"), "--insecure-dev-key", "--genesis", str(dev)])
    assert out.exit_code == 0 and "dev = true" in (tmp_path / "b" / "config.toml").read_text()
    assert (tmp_path / "b" / "genesis.bin").read_bytes() == dev.read_bytes()
    # A home made before its genesis arrived: run refuses dev options on a chain that is not dev.
    out = CliRunner().invoke(main, ["init", "--home", str(tmp_path / "c"), "--insecure-dev-key"])
    assert out.exit_code == 0 and "only on a dev chain" in out.output
    (tmp_path / "c" / "genesis.bin").write_bytes(real.read_bytes())
    line = _error(["run", "--home", str(tmp_path / "c")], 1)
    assert "dev options" in line and "'mainnet' is not one" in line
    assert "'mainnet' is not one" in _error(["run", "--home", str(tmp_path / "c"), "--genesis", str(real), "--dev"], 1)


def test_genesis_without_nodes_warns_that_it_has_no_validators(tmp_path: Path, keys_dir: Path) -> None:
    address = "0x" + Keypair.generate().address.hex()
    result = CliRunner().invoke(
        main,
        ["genesis", "new", "--chain-id", "x", "--client", address, "--client", "alice", "--keys-dir", str(keys_dir),
         "--out", str(tmp_path / "g.bin")],
    )
    assert result.exit_code == 0 and "warning: no --node given: the chain has no validators" in result.output
    assert "not a 0x address" in _error(["genesis", "new", "--chain-id", "x", "--client", "0x12", "--out", "g"], 2)


def _accept_request_with(server: socket.socket, marker: bytes) -> socket.socket:
    """The connection whose request carries ``marker``, read whole.

    Other tests on this machine dial ports they found free, and one may be
    this server's by then: interrupting the command on a stranger's connection
    would signal it before it is waiting on the node.
    """
    for _ in range(20):
        conn, _ = server.accept()
        conn.settimeout(30)
        received = b""
        while marker not in received:
            chunk = conn.recv(65536)
            if not chunk:
                break
            received += chunk
        if marker in received:
            return conn
        conn.close()
    raise AssertionError("the command's request never arrived")


def test_ctrl_c_is_status_130_without_a_traceback() -> None:
    marker = os.urandom(8).hex()
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(60)
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "tdml_node", "rpc", "--url", url, "tdml_getBlockByNumber", marker],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        try:
            # The command sent its whole request and waits on a node that never answers.
            with _accept_request_with(server, marker.encode()):
                proc.send_signal(signal.SIGINT)
                _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    assert proc.returncode == 130, err
    assert err.decode().strip() == "interrupted"
