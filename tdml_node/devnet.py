"""A local network of node processes: homes, processes, and the job upload, for the devnet, tests and benchmarks.

It makes a throwaway home per node (dev keys, free loopback ports, one
genesis), starts each node as its own process (armed to die with the process
that started it), stops them all at once, and submits a job.
``tdml_node.devnet_live`` builds ``tdml-node devnet``'s run, view and report on it.

This module must never reach into a node's memory: it drives the nodes only
through their RPC, as a user would.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consensus.crypto import Keypair
from consensus.types import Genesis, JobSpec, SignedTransaction
from tdml_node.client import NodeClient
from tdml_node.config import NodeConfig, cookie_file, write_config
from tdml_node.genesis import compose_genesis, write_genesis
from tdml_node.keys import write_key_file

DEFAULT_JOB = "digits-mlp"
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class DevnetError(Exception):
    """The devnet could not start or finish; the message says what happened."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class DevnetNode:
    index: int
    home: Path
    keypair: Keypair
    rpc_port: int
    p2p_port: int
    process: subprocess.Popen[bytes] | None = None
    log_dir: Path | None = None
    """Where the node's log goes; None keeps it in the home, as tests and benchmarks expect."""

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.rpc_port}"

    @property
    def log_path(self) -> Path:
        return self.home / "node.log" if self.log_dir is None else self.log_dir / f"node{self.index}.log"

    def client(self, timeout: float = 30.0) -> NodeClient:
        return NodeClient(self.rpc_url, timeout=timeout, cookie=cookie_file(self.home))


@dataclass
class Devnet:
    """A set of node homes sharing one genesis, and the processes running them."""

    base: Path
    nodes: list[DevnetNode]
    genesis: Genesis
    client_key: Keypair
    extra_args: list[str] = field(default_factory=list)

    @classmethod
    def create(
        cls,
        base: Path,
        count: int,
        *,
        chain_id: str = "tdml-devnet",
        genesis_txs: tuple[SignedTransaction, ...] = (),
        client_key: Keypair | None = None,
        config_overrides: dict[str, Any] | None = None,
        byzantine: dict[int, str] | None = None,
        passive: frozenset[int] = frozenset(),
        log_dir: Path | None = None,
    ) -> Devnet:
        """Homes for ``count`` nodes; all but the ``passive`` ones are registered trainers and validators."""
        base.mkdir(parents=True, exist_ok=True)
        nodes = [
            DevnetNode(i, base / f"node{i}", Keypair.generate(), free_port(), free_port(), log_dir=log_dir)
            for i in range(count)
        ]
        client_key = client_key or Keypair.generate()
        genesis = compose_genesis(
            chain_id,
            [(n.keypair.public_key, f"127.0.0.1:{n.p2p_port}") for n in nodes if n.index not in passive],
            clients=[client_key.public_key],
            transactions=genesis_txs,
        )
        for n in nodes:
            peers = tuple(f"127.0.0.1:{m.p2p_port}" for m in nodes if m is not n)
            config = NodeConfig(
                home=n.home,
                rpc_port=n.rpc_port,
                p2p_port=n.p2p_port,
                bootstrap=peers,
                dev=True,
                byzantine=((byzantine or {})[n.index],) if n.index in (byzantine or {}) else (),
                **(config_overrides or {}),
            )
            write_config(config)
            write_key_file(config.key_file, n.keypair, None, insecure=True)
            write_genesis(config.genesis_file, genesis)
        write_key_file(base / "client_key.json", client_key, None, insecure=True)
        return cls(base, nodes, genesis, client_key)

    def start(self, node: DevnetNode, extra: list[str] | None = None) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        node.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(node.log_path, "ab")  # the child keeps its own copy of the descriptor
        # Its own session keeps the terminal's SIGINT and SIGHUP from reaching the node
        # behind the driver's back: the driver stops its nodes itself, and the
        # parent-death signal covers the case where the driver cannot.
        node.process = subprocess.Popen(
            [sys.executable, "-m", "tdml_node", "run", "--home", str(node.home), *(extra or []), *self.extra_args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent(os.getpid()) if sys.platform == "linux" else None,
        )
        log.close()

    def start_all(self) -> None:
        for node in self.nodes:
            self.start(node)

    def wait_ready(self, timeout: float = 90.0, nodes: list[DevnetNode] | None = None) -> None:
        """Wait until every node (default: all of them) answers ``/health``."""
        deadline = time.monotonic() + timeout
        for node in self.nodes if nodes is None else nodes:
            while True:
                if node.process is not None and node.process.poll() is not None:
                    raise DevnetError(f"node {node.index} exited with {node.process.returncode}:\n{self.log_tail(node)}")
                if is_ready(node):
                    break
                if time.monotonic() > deadline:
                    raise DevnetError(f"node {node.index} did not answer within {timeout:.0f}s:\n{self.log_tail(node)}")
                time.sleep(0.1)

    def stop(self, node: DevnetNode, *, kill: bool = False, timeout: float = 15.0) -> int | None:
        proc = node.process
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
        node.process = None
        return proc.returncode

    def stop_all(self, timeout: float = 15.0) -> None:
        """SIGTERM every node at once, wait for them together, then SIGKILL whichever is still up."""
        procs = [n.process for n in self.nodes if n.process is not None]
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.0, deadline - time.monotonic()))
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        for node in self.nodes:
            node.process = None

    @staticmethod
    def log_tail(node: DevnetNode, lines: int = 30) -> str:
        try:
            return "\n".join(node.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def is_ready(node: DevnetNode) -> bool:
    """Whether the node is up; the one place that decides it, so the signal is easy to change."""
    return node.client(timeout=2).health() is not None


def die_with_parent(parent_pid: int) -> Callable[[], None]:
    """A ``preexec_fn`` that has Linux send the child SIGTERM when the process that started it dies.

    Unlike a pipe to the child, this needs nothing from ``tdml-node run`` and
    still works when the parent is SIGKILLed; SIGTERM is what the node already
    takes as a request to stop cleanly. Linux sends it when the *thread* that
    started the child ends, so nodes are started from the main thread.
    """

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork: no dlopen in the child

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:  # the parent died before the signal was armed
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


@contextlib.contextmanager
def running_devnet(devnet: Devnet) -> Iterator[Devnet]:
    try:
        devnet.start_all()
        devnet.wait_ready()
        yield devnet
    finally:
        devnet.stop_all()


def submit_job(
    client: NodeClient, key: Keypair, chain_id: str, spec: JobSpec, dataset: bytes, *, private: bool = False
) -> str:
    """Upload the dataset (sealed, for a ``private`` job) and post the job with a budget for every unit; its id (hex)."""
    from tdml_node.sdk import submit_spec

    return submit_spec(client, key, spec, dataset, chain_id=chain_id, private=private)
