"""A real node process's logs: valid logfmt line by line, quiet when idle, its lifecycle told at INFO, stdout clean.

One single-validator node runs for the whole module (starting nodes is what
costs on a small machine): it idles for ``IDLE_SECONDS``, then trains a
short job. Its stdout and stderr go to separate files, so the test sees
exactly what each carries.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tdml_node.app import ADDR_FILE
from tdml_node.config import load_config, write_config
from tdml_node.devnet import Devnet, free_port, submit_job
from tdml_node.work.jobs import get_job
from tests.tdml_node.logfmt_parse import parse_logfmt

pytestmark = pytest.mark.slow

IDLE_SECONDS = 10.0
IDLE_MAX_LINES = 3
"""At INFO an idle one-node chain commits a block a second and says (almost) nothing about it."""


@dataclass
class RunningNode:
    devnet: Devnet
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def lines(self) -> list[str]:
        return self.stderr.read_text(errors="replace").splitlines()


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _read_addr(path: Path) -> dict[str, str] | None:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    base = tmp_path_factory.mktemp("logs")
    devnet = Devnet.create(base / "net", 1)
    home = devnet.nodes[0].home
    stdout, stderr = base / "stdout.txt", base / "stderr.txt"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "tdml_node", "run", "--home", str(home), "--log-level", "info"],
            stdout=out, stderr=err, env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True,
        )
    running = RunningNode(devnet, process, stdout, stderr)
    try:
        _wait(lambda: _read_addr(home / "data" / ADDR_FILE) or process.poll() is not None, 90, "the address file")
        assert process.poll() is None, "\n".join(running.lines()[-30:])
        yield running
    finally:
        _stop(process)


def test_the_address_file_names_the_rpc_server_that_answers(node: RunningNode) -> None:
    addr = _read_addr(node.devnet.nodes[0].home / "data" / ADDR_FILE)
    assert addr is not None and addr["rpc"] == node.devnet.nodes[0].rpc_url
    assert addr["p2p"].endswith(f":{node.devnet.nodes[0].p2p_port}")
    assert node.devnet.nodes[0].client(timeout=5).health() is not None


def test_an_idle_node_is_quiet_at_info(node: RunningNode) -> None:
    client = node.devnet.nodes[0].client(timeout=10)
    before, height0 = len(node.lines()), int(client.call("tdml_blockNumber"))
    time.sleep(IDLE_SECONDS)
    new = node.lines()[before:]
    assert int(client.call("tdml_blockNumber")) > height0, "the chain did not move, so its silence proves nothing"
    assert len(new) <= IDLE_MAX_LINES, "\n".join(new)


def test_a_short_job_is_told_at_info_in_valid_logfmt(node: RunningNode) -> None:
    spec, dataset = get_job("digits-mlp", steps=3)
    client = node.devnet.nodes[0].client(timeout=30)
    job_id = submit_job(client, node.devnet.client_key, node.devnet.genesis.chain_id, spec, dataset)
    _wait(lambda: (client.call("tdml_getJob", job_id) or {}).get("status") == "done", 240, "the job to finish")

    def events() -> list[dict[str, str]]:
        return [parse_logfmt(line) for line in node.lines()]

    _wait(lambda: any(e["msg"] == "job finished" for e in events()), 30, "the job-finished line")
    parsed = events()
    for fields in parsed:
        assert list(fields)[:4] == ["ts", "level", "logger", "msg"], fields
        assert fields["level"] in {"info", "warning", "error"}, fields
    by_msg: dict[str, list[dict[str, str]]] = {}
    for fields in parsed:
        by_msg.setdefault(fields["msg"], []).append(fields)
    assert by_msg["node started"][0]["rpc"] == node.devnet.nodes[0].rpc_url
    for msg in ("job submitted", "job started", "job finished"):
        assert [e["job"] for e in by_msg.get(msg, [])] == [job_id], (msg, by_msg.keys())
    assert by_msg["job finished"][0]["status"] == "done"
    trained = by_msg.get("unit trained", [])
    assert {(e["step"], e["shard"]) for e in trained} == {(str(s), str(k)) for s in range(spec.steps) for k in range(spec.shards)}
    assert "committed" not in by_msg, "per-block lines belong at DEBUG"


def test_stdout_carries_nothing(node: RunningNode) -> None:
    assert node.stdout.read_bytes() == b""


def test_a_single_validator_is_not_warned_about_missing_peers(node: RunningNode) -> None:
    assert not [line for line in node.lines() if "bootstrap" in line or "no peers" in line]


def test_a_node_without_bootstrap_that_cannot_commit_alone_says_so_in_json(tmp_path: Path) -> None:
    devnet = Devnet.create(tmp_path / "net", 2)
    home = devnet.nodes[0].home
    write_config(dataclasses.replace(load_config(home), bootstrap=()))
    err = tmp_path / "stderr.txt"
    with err.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "tdml_node", "run", "--home", str(home), "--log-format", "json"],
            stdout=subprocess.DEVNULL, stderr=stderr, env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True,
        )
    try:
        def warned() -> list[dict[str, Any]]:
            lines = err.read_text(errors="replace").splitlines()
            docs = [json.loads(line) for line in lines if line.endswith("}")]  # the last line may be half written
            return [d for d in docs if d["level"] == "warning" and "no bootstrap peers configured" in d["msg"]]

        found = _wait(lambda: warned() or process.poll() is not None, 90, "the no-bootstrap warning")
        assert found is not True and process.poll() is None, err.read_text()[-3000:]
        assert found[0]["msg"].endswith("pass --bootstrap host:port") and found[0]["height"] == 0
        assert found[0]["logger"] == "tdml.lifecycle" and found[0]["ts"].endswith("Z")
    finally:
        _stop(process)
    for line in err.read_text().splitlines():
        assert isinstance(json.loads(line), dict), line


def test_a_joining_node_reports_its_sync_in_a_few_lines(node: RunningNode, tmp_path: Path) -> None:
    client = node.devnet.nodes[0].client(timeout=10)
    _wait(lambda: int(client.call("tdml_blockNumber")) >= 15, 90, "node 0 to pass height 15")
    home, rpc_port, p2p_port = tmp_path / "late", free_port(), free_port()
    subprocess.run(
        [sys.executable, "-m", "tdml_node", "init", "--home", str(home), "--insecure-dev-key",
         "--rpc-port", str(rpc_port), "--p2p-port", str(p2p_port)],
        check=True, capture_output=True, timeout=120,
    )
    (home / "genesis.bin").write_bytes((node.devnet.nodes[0].home / "genesis.bin").read_bytes())
    err = tmp_path / "stderr.txt"
    with err.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "tdml_node", "run", "--home", str(home), "--dev",
             "--bootstrap", f"127.0.0.1:{node.devnet.nodes[0].p2p_port}"],
            stdout=subprocess.DEVNULL, stderr=stderr, env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True,
        )

    def sync_lines() -> list[dict[str, str]]:
        text = err.read_text(errors="replace")
        whole = text[: text.rfind("\n") + 1]  # a last line still being written waits for the next look
        return [f for f in (parse_logfmt(line) for line in whole.splitlines()) if f["msg"].startswith("sync ")]

    try:
        found = _wait(
            lambda: any(f["msg"] == "sync finished" for f in sync_lines()) or process.poll() is not None,
            120, "the late node to finish syncing",
        )
        assert found and process.poll() is None, err.read_text()[-3000:]
        lines = sync_lines()
    finally:
        _stop(process)
    started, finished = lines[0], next(f for f in lines if f["msg"] == "sync finished")
    assert started["msg"] == "sync started" and started["level"] == "info" and int(started["target"]) >= 15
    assert finished["percent"] == "100" and int(finished["blocks"]) >= 15 and float(finished["blocks_per_s"]) > 0
    assert len(lines) <= 13, lines  # start, at most one per tenth or 5 s, finish: not a line per block
    for line in err.read_text(errors="replace").splitlines():
        assert parse_logfmt(line)["msg"] != "committed"
