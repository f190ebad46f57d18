"""The README's commands, run as written against real node processes, so the README stays true.

Every code block after a ``<!-- readme-test: MACHINE [background] -->``
marker is run with bash, in order, on one of two emulated machines: ``a``
(a user's own one-node chain) and ``b`` (a node joining it). A machine is a
home directory (``$HOME``), a working directory, and the environment a user
would have set: the passphrase, and free loopback ports through the
documented variables (``TDML_RPC_PORT``, ``TDML_P2P_PORT`` for ``init``,
``TDML_RPC`` for the client commands), so the commands stay literal. The
join section's ``$PEER`` is machine a's p2p address and ``$NODE_ADDRESS``
the address machine b's ``init`` printed, as the README says; machine b
gets a's ``genesis.bin`` in its working directory, as an operator would
copy it. A ``background`` block is a node: started in its own process
group, waited for on ``/health``, and reaped at the end.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tdml_node.client import NodeClient
from tdml_node.devnet import free_port

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"<!-- readme-test: (\w+)( background)? -->\n```sh\n(.*?)```", re.S)
STEP_TIMEOUT = 240


@dataclass
class Machine:
    name: str
    home: Path
    rpc_port: int = field(default_factory=free_port)
    p2p_port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def cwd(self) -> Path:
        return self.home / "work"

    @property
    def client(self) -> NodeClient:
        return NodeClient(f"http://127.0.0.1:{self.rpc_port}", timeout=10)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TDML_") and k != "XDG_CONFIG_HOME"}
        env.update(
            HOME=str(self.home),
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            PYTHONUNBUFFERED="1",
            TDML_PASSPHRASE=f"passphrase of {self.name}",
            TDML_RPC_PORT=str(self.rpc_port),
            TDML_P2P_PORT=str(self.p2p_port),
            TDML_RPC=f"http://127.0.0.1:{self.rpc_port}",
            **self.extra_env,
        )
        return env


def readme_blocks() -> list[tuple[str, bool, str]]:
    return [(m.group(1), bool(m.group(2)), m.group(3)) for m in BLOCK.finditer(README.read_text())]


def _wait(what: str, ready: Callable[[], bool], timeout: float = STEP_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def _height(m: Machine) -> int:
    try:
        height: int = m.client.call("tdml_blockNumber")
        return height
    except OSError:
        return -1


@pytest.fixture
def nodes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in started:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_the_readme_blocks_are_found() -> None:
    blocks = readme_blocks()
    assert {m for m, _, _ in blocks} == {"a", "b"}
    text = "".join(b for _, _, b in blocks)
    for command in ("keys new", "init", "genesis new", "job submit", "--key alice", "--bootstrap", "register"):
        assert command in text, command
    assert [m for m, bg, _ in blocks if bg] == ["a", "b"]


@pytest.mark.slow
def test_the_readme_runs_as_written(tmp_path: Path, nodes: list[subprocess.Popen[bytes]]) -> None:
    a = Machine("a", tmp_path / "a")
    b = Machine("b", tmp_path / "b", extra_env={"PEER": f"127.0.0.1:{a.p2p_port}"})
    machines = {"a": a, "b": b}
    for m in machines.values():
        m.cwd.mkdir(parents=True)
    outputs: dict[str, list[str]] = {"a": [], "b": []}
    for name, background, script in readme_blocks():
        m = machines[name]
        if name == "b" and not (b.cwd / "genesis.bin").exists():
            shutil.copy(a.home / ".tdml" / "genesis.bin", b.cwd / "genesis.bin")
        if "transfer" in script:
            # The README's funder sends to the address b's init printed.
            (address,) = re.findall(r"^address:\s+(0x[0-9a-f]{40})$", "\n".join(outputs["b"]), re.M)
            a.extra_env["NODE_ADDRESS"] = address
        if "register" in script:
            # The operator registers once the stake has arrived, as the README's order implies.
            _wait("the transfer", lambda: b.client.call("tdml_getAccount", a.extra_env["NODE_ADDRESS"])["balance"] >= 100_000)
        if background:
            (line,) = [ln for ln in script.splitlines() if ln.strip() and not ln.startswith("#")]
            log = open(m.home / "node.log", "ab")  # the child keeps its own descriptor
            proc = subprocess.Popen(
                ["bash", "-c", line], cwd=m.cwd, env=m.env(), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            log.close()
            nodes.append(proc)
            _wait(f"{name}'s node", lambda m=m, proc=proc: proc.poll() is not None or m.client.health() is not None)
            assert proc.poll() is None, (m.home / "node.log").read_text()[-3000:]
            continue
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script], cwd=m.cwd, env=m.env(), capture_output=True,
            timeout=STEP_TIMEOUT,
        )
        assert done.returncode == 0, f"{script}\n{done.stdout.decode()}\n{done.stderr.decode()}"
        outputs[name].append(done.stdout.decode())
        if "tdml_blockNumber" in script:
            _wait("b to sync", lambda: _height(b) >= 3 and _height(b) + 2 >= _height(a))

    assert "alice  0x" in outputs["a"][0]
    (job,) = a.client.call("tdml_listJobs")
    assert job["name"] == "digits-mlp" and job["steps"] == 20
    assert (a.cwd / "model.safetensors").stat().st_size > 0
    address = a.extra_env["NODE_ADDRESS"]
    _wait("the registration", lambda: a.client.call("tdml_getAccount", address)["roles"] == ["trainer"])
    assert a.client.call("tdml_getAccount", address)["stake"] == 10_000
