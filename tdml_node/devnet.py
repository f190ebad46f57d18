"""``tdml-node devnet``: a local network of node processes that trains a job end to end.

It makes a throwaway home per node (dev keys, free loopback ports, one
genesis), starts each node as its own process, uploads the job's dataset,
submits the job, shows live progress, and ends with a report, the exported
model, and a bit-for-bit comparison with the single-process reference run.

This module must never reach into a node's memory: it drives the nodes only
through their RPC, as a user would.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from consensus.crypto import Keypair
from consensus.types import Genesis, JobSpec, SignedTransaction
from tdml_node.client import NodeClient, make_submit_job
from tdml_node.config import NodeConfig, cookie_file, write_config
from tdml_node.genesis import compose_genesis, write_genesis
from tdml_node.keys import write_key_file

DEFAULT_JOB = "digits-mlp"


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

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.rpc_port}"

    @property
    def log_path(self) -> Path:
        return self.home / "node.log"

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
    ) -> Devnet:
        """Homes for ``count`` nodes; all but the ``passive`` ones are registered trainers and validators."""
        base.mkdir(parents=True, exist_ok=True)
        nodes = [
            DevnetNode(i, base / f"node{i}", Keypair.generate(), free_port(), free_port()) for i in range(count)
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
        log = open(node.log_path, "ab")  # the child keeps its own copy of the descriptor
        node.process = subprocess.Popen(
            [sys.executable, "-m", "tdml_node", "run", "--home", str(node.home), *(extra or []), *self.extra_args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
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
                if node.client(timeout=2).health() is not None:
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

    def stop_all(self) -> None:
        for node in self.nodes:
            self.stop(node)

    @staticmethod
    def log_tail(node: DevnetNode, lines: int = 30) -> str:
        try:
            return "\n".join(node.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@contextlib.contextmanager
def running_devnet(devnet: Devnet) -> Iterator[Devnet]:
    try:
        devnet.start_all()
        devnet.wait_ready()
        yield devnet
    finally:
        devnet.stop_all()


@dataclass
class DevnetReport:
    job_id: str
    steps: int
    blocks: int
    seconds: float
    train_loss: float | None
    test_accuracy: float | None
    model_root: str
    reference_root: str | None
    model_path: Path | None
    units_accepted: int
    units_rejected: int

    @property
    def matches_reference(self) -> bool | None:
        return None if self.reference_root is None else self.reference_root == self.model_root


def submit_job(client: NodeClient, key: Keypair, chain_id: str, spec: JobSpec, dataset: bytes) -> str:
    """Upload the dataset and post the job; returns the job id (hex)."""
    from tdml_node.storage import MemoryBlobStore
    from tdml_node.work.executor import TorchExecutor

    client.put_blob(dataset)
    root = TorchExecutor(MemoryBlobStore()).initial_model_root(spec)
    budget = spec.steps * spec.shards * (spec.reward_per_unit + 4 * spec.reward_per_verdict)
    signed = make_submit_job(key, chain_id, client.next_nonce(key), spec, budget, root)
    client.send_transaction(signed)
    from consensus.transition import compute_job_id

    return "0x" + compute_job_id(signed.tx).hex()


def follow_job(
    devnet: Devnet, job_id: str, *, console: Console, timeout: float, poll: float = 0.25
) -> dict[str, Any]:
    """Show live progress until the job is done; returns its final RPC view."""
    client = devnet.nodes[0].client()
    started = time.monotonic()
    last_print = 0.0
    interactive = console.is_terminal
    view: dict[str, Any] | None = None
    with Live(console=console, refresh_per_second=8, transient=False) if interactive else contextlib.nullcontext() as live:
        while True:
            for node in devnet.nodes:
                if node.process is not None and node.process.poll() is not None:
                    raise DevnetError(f"node {node.index} exited:\n{devnet.log_tail(node)}")
            view = client.call("tdml_getJob", job_id)
            height = client.call("tdml_blockNumber")
            elapsed = time.monotonic() - started
            if view is not None:
                table = _progress_table(devnet, view, height, elapsed)
                if live is not None:
                    live.update(table)
                elif elapsed - last_print >= 5:
                    last_print = elapsed
                    console.print(_progress_line(view, height, elapsed))
                if view["status"] == "done":
                    return view
            if elapsed > timeout:
                raise DevnetError(f"the job did not finish within {timeout:.0f}s")
            time.sleep(poll)


def _records(devnet: Devnet) -> tuple[int, int]:
    client = devnet.nodes[0].client()
    accepted = rejected = 0
    for node in devnet.nodes:
        rec = client.call("tdml_getTrainer", "0x" + node.keypair.address.hex())
        accepted += rec["unitsVerified"]
        rejected += rec["unitsRejected"]
    return accepted, rejected


def _progress_table(devnet: Devnet, view: dict[str, Any], height: int, elapsed: float) -> Table:
    table = Table(title=f"TDML devnet — {len(devnet.nodes)} node(s) — job {view['name']}", show_header=False)
    last = view.get("lastOutcome") or {}
    last_eval = view.get("lastEval") or {}
    accepted, rejected = _records(devnet)
    peers = devnet.nodes[0].client().call("tdml_nodeInfo")["peers"]
    rows = [
        ("height", str(height)),
        ("step", f"{view['step']} / {view['steps']}"),
        ("train loss", _fmt(last.get("trainLossFloat"))),
        ("test accuracy", _fmt(last_eval.get("testAccuracy"), pct=True)),
        ("units verified / rejected", f"{accepted} / {rejected}"),
        ("peers (node 0)", str(peers)),
        ("elapsed", f"{elapsed:.1f} s"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table


def _progress_line(view: dict[str, Any], height: int, elapsed: float) -> str:
    last = view.get("lastOutcome") or {}
    last_eval = view.get("lastEval") or {}
    return (
        f"[{elapsed:6.1f}s] height {height} step {view['step']}/{view['steps']} "
        f"loss {_fmt(last.get('trainLossFloat'))} test acc {_fmt(last_eval.get('testAccuracy'), pct=True)}"
    )


def _fmt(value: float | None, pct: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.2f}%" if pct else f"{value:.4f}"


def run_devnet(
    *,
    nodes: int,
    job: str,
    steps: int | None,
    text_path: Path | None,
    out: Path,
    data_dir: Path | None,
    keep: bool,
    check_reference: bool,
    console: Console,
    timeout: float = 3600.0,
) -> DevnetReport:
    from tdml_node.work.export import export_model
    from tdml_node.work.jobs import get_job
    from tdml_node.work.reference import run_reference

    spec, dataset = get_job(job, steps=steps, text_path=text_path)
    base = data_dir or Path(tempfile.mkdtemp(prefix="tdml-devnet-"))
    console.print(f"devnet: {nodes} node(s) in {base}; job {spec.name}: {spec.steps} steps × {spec.shards} shards")
    devnet = Devnet.create(base, nodes)
    try:
        with running_devnet(devnet):
            client = devnet.nodes[0].client()
            for node in devnet.nodes[1:]:
                node.client().put_blob(dataset)
            started = time.monotonic()
            job_id = submit_job(client, devnet.client_key, devnet.genesis.chain_id, spec, dataset)
            console.print(f"submitted job {job_id}")
            view = follow_job(devnet, job_id, console=console, timeout=timeout)
            seconds = time.monotonic() - started
            blocks = client.call("tdml_blockNumber")
            accepted, rejected = _records(devnet)
            model_root = view["modelRoot"]
            state_bytes = client.get_blob(model_root)
            out.parent.mkdir(parents=True, exist_ok=True)
            export_model(spec, state_bytes, out)
    finally:
        if not keep and data_dir is None:
            shutil.rmtree(base, ignore_errors=True)
    reference_root = None
    if check_reference:
        console.print("running the single-process reference of the same job…")
        reference_root = "0x" + run_reference(spec, dataset).final_root.hex()
    last = view.get("lastOutcome") or {}
    last_eval = view.get("lastEval") or last
    return DevnetReport(
        job_id=job_id,
        steps=view["step"],
        blocks=blocks,
        seconds=seconds,
        train_loss=last.get("trainLossFloat"),
        test_accuracy=(last_eval or {}).get("testAccuracy"),
        model_root=model_root,
        reference_root=reference_root,
        model_path=out,
        units_accepted=accepted,
        units_rejected=rejected,
    )


def print_report(report: DevnetReport, console: Console) -> None:
    table = Table(title="devnet report", show_header=False)
    rows = [
        ("job", report.job_id),
        ("steps", str(report.steps)),
        ("blocks", str(report.blocks)),
        ("time", f"{report.seconds:.1f} s ({report.steps / max(report.seconds, 1e-9):.1f} steps/s)"),
        ("final train loss", _fmt(report.train_loss)),
        ("test accuracy", _fmt(report.test_accuracy, pct=True)),
        ("units verified / rejected", f"{report.units_accepted} / {report.units_rejected}"),
        ("model state root", report.model_root),
        ("reference run", {None: "not run", True: "equal bit for bit", False: "DIFFERS"}[report.matches_reference]),
        ("exported model", str(report.model_path)),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
