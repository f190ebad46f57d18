"""Storage faults: an unwritable datadir or a full disk gives a clear error and a clean stop, never a half-written block.

How the faults are made:

- An unwritable datadir: ``data/`` is a regular file; or it cannot be
  created or written: ``chmod 0555`` on the home when not root, and (since
  permissions do not stop root) a read-only tmpfs mounted on ``data/`` when
  root, skipped where mounting is not allowed.
- A full disk in a real ``tdml-node run`` process: ``RLIMIT_FSIZE`` set in the
  child before ``exec`` (with ``SIGXFSZ`` ignored), so LevelDB's first write
  past the limit fails with ``EFBIG`` ("File too large"). It works for any
  user. The child's output goes through a pipe to this process, because a log
  file the child wrote itself would fall under the same limit. Where root may
  mount, a second test fills a small tmpfs for a real ``ENOSPC``.
- In-process: the store's LevelDB handle is wrapped so that chosen writes
  raise ``plyvel.IOError``, which hits each write path of the node
  deterministically (the double-sign record, the block commit, a blob).

After each fault the store must hold whole blocks only: the tip's block, its
commit and the state after it, with the state's root equal to the block
header's ``state_root``, and a restart without the fault continues the chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import plyvel
import pytest

from consensus.crypto import Keypair, sha256
from consensus.state import LedgerState
from consensus.transition import compute_block_hash
from consensus.types import (
    PREVOTE,
    Account,
    Address,
    Amount,
    Block,
    BlockBody,
    BlockHeader,
    ChainParams,
    CommitCertificate,
    Genesis,
    Hash32,
    Height,
    PublicKey,
    Round,
    SignedProposal,
    SignedVote,
)
from p2p.messages import GossipPayload
from tdml_node.config import NodeConfig
from tdml_node.devnet import Devnet
from tdml_node.genesis import compose_genesis
from tdml_node.node import Node, NodeHalted, open_node
from tdml_node.rpc import RpcPolicy, RpcServer
from tdml_node.runtime.netlink import NoNetwork
from tdml_node.storage import ChainStore, StorageError

INJECTED = b"IO error: injected: No space left on device"
PARAMS = ChainParams(Amount(1), Amount(1), 5000, 1000, 4)


# ---------------------------------------------------------------------------
# Fault injection in this process


class FailingDB:
    """A LevelDB handle whose writes fail when ``fail_when(keys)`` says so (the rest passes through)."""

    def __init__(self, db: Any, fail_when: Callable[[list[bytes]], bool]) -> None:
        self._db = db
        self.fail_when = fail_when
        self.failures = 0

    def check(self, keys: list[bytes]) -> None:
        if self.fail_when(keys):
            self.failures += 1
            raise plyvel.IOError(INJECTED)

    def write_batch(self, **kwargs: Any) -> _FailingBatch:
        return _FailingBatch(self, self._db.write_batch(**kwargs))

    def put(self, key: bytes, value: bytes, **kwargs: Any) -> None:
        self.check([key])
        self._db.put(key, value, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


class _FailingBatch:
    def __init__(self, owner: FailingDB, batch: Any) -> None:
        self._owner = owner
        self._batch = batch
        self.keys: list[bytes] = []

    def put(self, key: bytes, value: bytes) -> None:
        self.keys.append(key)
        self._batch.put(key, value)

    def delete(self, key: bytes) -> None:
        self.keys.append(key)
        self._batch.delete(key)

    def clear(self) -> None:
        self._batch.clear()

    def write(self) -> None:
        self._owner.check(self.keys)
        self._batch.write()


def _height_key(prefix: bytes, height: int) -> bytes:
    return prefix + height.to_bytes(8, "big")


def assert_whole_tip(store: ChainStore) -> tuple[int, dict[int, str]]:
    """The store holds whole blocks up to its tip and nothing after; returns the tip and block hashes."""
    tip = store.tip()
    assert tip is not None
    hashes: dict[int, str] = {}
    for height in range(1, tip.height + 1):
        block, commit = store.get_block(height), store.get_commit(height)
        assert block is not None and commit is not None, f"block {height} is not whole"
        digest = compute_block_hash(block.header)
        assert commit.block_hash == digest and store.get_height_of(digest) == height
        hashes[height] = "0x" + digest.hex()
    state = store.load_state()
    assert state is not None and state.height == tip.height
    if tip.height:
        tip_block = store.get_block(tip.height)
        assert tip_block is not None and compute_block_hash(tip_block.header) == tip.block_hash
        assert state.root == tip_block.header.state_root, "the stored state is not the tip block's state"
    assert store.get_block(tip.height + 1) is None and store.get_commit(tip.height + 1) is None
    return tip.height, hashes


@dataclass
class RecordingNetwork(NoNetwork):
    """A node alone, noting what it would have sent."""

    sent: list[GossipPayload] = field(default_factory=list)

    async def broadcast(self, payload: GossipPayload, exclude: object = None) -> None:
        self.sent.append(payload)


@dataclass
class FaultyNode:
    node: Node
    store: ChainStore
    db: FailingDB
    network: RecordingNetwork
    task: asyncio.Task[None]


@contextlib.asynccontextmanager
async def faulty_node(home: Path, fail_when: Callable[[list[bytes]], bool]) -> AsyncIterator[FaultyNode]:
    key = Keypair.generate()
    genesis = compose_genesis("faults", [(key.public_key, "")])
    config = NodeConfig(home=home, rpc_port=0, dev=True, block_interval_ms=20)
    store = ChainStore(config.data_dir)
    network = RecordingNetwork()
    try:
        async with open_node(config, key, genesis, store=store, network=network) as node:
            db = FailingDB(store._db, fail_when)
            store._db = db
            task = asyncio.create_task(node.run())
            try:
                yield FaultyNode(node, store, db, network, task)
            finally:
                node.request_stop()
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(30):
                        await task
    finally:
        store.close()


async def test_a_failed_double_sign_record_stops_the_node_before_the_vote_is_sent(tmp_path: Path) -> None:
    def prevote_record_at_height_3(keys: list[bytes]) -> bool:
        return any(k.startswith(b"mpv/") and int.from_bytes(k[4:12], "big") == 3 and k[-1] == 1 for k in keys)

    async with faulty_node(tmp_path, prevote_record_at_height_3) as f:
        with pytest.raises(StorageError, match="No space left"):
            async with asyncio.timeout(30):
                await f.task
        assert isinstance(f.node.fatal, StorageError)  # /health says halted while the process winds down
        sent_h3 = [p for p in f.network.sent if isinstance(p, SignedVote | SignedProposal) and _height_of(p) == 3]
        # The proposal at height 3 was recorded, then sent; the prevote was not recorded, so not sent.
        assert [type(p) for p in sent_h3] == [SignedProposal]
        assert not any(isinstance(p, SignedVote) and p.vote.height == 3 and p.vote.kind == PREVOTE for p in f.network.sent)
        last = f.store.get_meta(b"privval")
        assert last is not None and int.from_bytes(last[:8], "big") == 3 and last[12] == 0
        assert assert_whole_tip(f.store)[0] == 2 == f.node.state.height


def _height_of(payload: SignedVote | SignedProposal) -> int:
    return payload.vote.height if isinstance(payload, SignedVote) else payload.proposal.height


async def test_a_failed_block_commit_halts_and_leaves_the_last_whole_block(tmp_path: Path) -> None:
    block_3 = _height_key(b"b", 3)
    async with faulty_node(tmp_path, lambda keys: block_3 in keys) as f:
        with pytest.raises(NodeHalted, match="No space left"):
            async with asyncio.timeout(30):
                await f.task
        assert isinstance(f.node.fatal, StorageError)
        assert f.db.failures == 1
        assert assert_whole_tip(f.store)[0] == 2 == f.node.state.height


async def test_a_failed_blob_upload_answers_507_and_halts_the_node(tmp_path: Path) -> None:
    async with faulty_node(tmp_path, lambda keys: any(k.startswith(b"x") for k in keys)) as f:
        server = RpcServer(f.node, "127.0.0.1", 0, dev=True, policy=RpcPolicy(tokens=("t",)))
        port = await server.start()
        try:
            async with aiohttp.ClientSession() as http:
                headers = {"Content-Type": "application/octet-stream", "Authorization": "Bearer t"}
                async with http.post(f"http://127.0.0.1:{port}/blob", data=b"a blob", headers=headers) as resp:
                    assert resp.status == 507 and "No space left" in await resp.text()
                async with http.get(f"http://127.0.0.1:{port}/health") as resp:
                    assert resp.status == 503 and (await resp.json())["status"] == "halted"
            async with asyncio.timeout(30):
                await f.task  # a clean stop: nothing raised, the fault is in ``fatal``
            assert isinstance(f.node.fatal, StorageError)
        finally:
            await server.stop()
        assert_whole_tip(f.store)


# ---------------------------------------------------------------------------
# The store's write paths, on their own


def _block(height: int, parent: bytes, state_root: bytes = b"") -> Block:
    body = BlockBody((), (), (), (), (), None)
    header = BlockHeader(
        "c", Height(height), Round(0), Hash32(parent), PublicKey(b"\x01" * 32), sha256(b"body"), Hash32(state_root or sha256(b"root")),
        1000 * height,
    )
    return Block(header, body)


def _prepared_store(path: Path, blobs: list[bytes]) -> tuple[ChainStore, LedgerState]:
    """A store with a genesis, then block 1 whose header's state root is the stored state's."""
    store = ChainStore(path)
    store.init_genesis(Genesis("c", PARAMS, (), (), ()), LedgerState("c", Height(0), Hash32(b"g" * 32), PARAMS))
    state = LedgerState("c", Height(1), Hash32(bytes(32)), PARAMS)  # the root does not cover the tip hash
    block = _block(1, b"g" * 32, state.root)
    digest = compute_block_hash(block.header)
    state = LedgerState("c", Height(1), digest, PARAMS)
    store.commit_block(block, CommitCertificate(Height(1), Round(0), digest, ()), state, blobs)
    return store, state


def _write_genesis(store: ChainStore, blobs: list[bytes]) -> None:
    accounts = {
        Address(sha256(i.to_bytes(4, "big"))[:20]): Account(Amount(i), 0, Amount(0), 0, None, "e" * 128, False)
        for i in range(1, 1500)
    }
    store.init_genesis(Genesis("c", PARAMS, (), (), ()), LedgerState("c", Height(0), Hash32(b"g" * 32), PARAMS, accounts=accounts))


def _write_block(store: ChainStore, blobs: list[bytes]) -> None:
    tip = store.tip()
    assert tip is not None
    block = _block(tip.height + 1, tip.block_hash)
    digest = compute_block_hash(block.header)
    cert = CommitCertificate(block.header.height, Round(0), digest, ())
    store.commit_block(block, cert, LedgerState("c", block.header.height, digest, PARAMS), [os.urandom(300_000)])


def _write_blob(store: ChainStore, blobs: list[bytes]) -> None:
    store.put(os.urandom(300_000))


def _write_meta(store: ChainStore, blobs: list[bytes]) -> None:
    store.write_meta_synced({b"privval": os.urandom(300_000)})


def _delete_blobs(store: ChainStore, blobs: list[bytes]) -> None:
    store.delete_blobs([sha256(d) for d in blobs] + [Hash32(os.urandom(32)) for _ in range(8000)])


WRITE_PATHS: dict[str, Callable[[ChainStore, list[bytes]], None]] = {
    "init_genesis": _write_genesis,
    "commit_block": _write_block,
    "put": _write_blob,
    "write_meta_synced": _write_meta,
    "delete_blobs": _delete_blobs,
}
"""Each write the store offers, sized to fail under ``FSIZE_LIMIT``: (store, blobs in it) -> None."""


def _check_untouched(store: ChainStore, state: LedgerState, blobs: list[bytes], path_name: str) -> None:
    """Nothing of a failed write is in the store: it is as ``_prepared_store`` left it."""
    height, _ = assert_whole_tip(store)
    assert height == 1, f"{path_name}: the tip moved"
    loaded = store.load_state()
    assert loaded is not None and loaded.root == state.root, f"{path_name}: the state changed"
    assert store.get_meta(b"privval") is None, f"{path_name}: a failed metadata write left a value"
    assert all(store.get(sha256(d)) == d for d in blobs), f"{path_name}: a failed delete removed blobs"
    assert len(list(store.iter_blob_digests())) == len(blobs), f"{path_name}: a failed write left a blob behind"


@pytest.mark.parametrize("path_name", sorted(WRITE_PATHS))
def test_every_write_path_turns_a_leveldb_error_into_a_storage_error(tmp_path: Path, path_name: str) -> None:
    blobs = [os.urandom(100) for _ in range(3)]
    store, state = _prepared_store(tmp_path / "db", blobs)
    store._db = FailingDB(store._db, lambda keys: True)
    with pytest.raises(StorageError, match="No space left") as caught:
        WRITE_PATHS[path_name](store, blobs)
    assert "b'" not in str(caught.value)  # LevelDB's bytes message is decoded
    store.close()
    store = ChainStore(tmp_path / "db")
    _check_untouched(store, state, blobs, path_name)
    store.close()


_CHILD = r"""
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from test_storage_faults import WRITE_PATHS
from tdml_node.storage import ChainStore, StorageError
results = {}
for name, write in WRITE_PATHS.items():
    store = ChainStore(Path(sys.argv[1]) / name)
    blobs = [store.get(d) for d in store.iter_blob_digests()]
    try:
        write(store, blobs)
        results[name] = "written"
    except StorageError as exc:
        results[name] = "StorageError: " + str(exc)
    except Exception as exc:
        results[name] = type(exc).__name__ + ": " + str(exc)
    store.close()
print(json.dumps(results))
"""

FSIZE_LIMIT = 128 * 1024


def _limit_file_size(limit: int) -> Callable[[], None]:
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def _child_env() -> dict[str, str]:
    # No bytecode caches: they are files too, and would meet the size limit.
    return dict(os.environ, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")


@pytest.mark.slow
def test_every_write_path_fails_cleanly_on_a_real_file_size_limit(tmp_path: Path) -> None:
    """Real LevelDB under RLIMIT_FSIZE: every write path raises StorageError and leaves the store whole."""
    prepared: dict[str, tuple[LedgerState, list[bytes]]] = {}
    for name in WRITE_PATHS:
        blobs = [os.urandom(100) for _ in range(3)]
        store, state = _prepared_store(tmp_path / name, blobs)
        prepared[name] = (state, blobs)
        store.close()
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=120,
        env=_child_env(),
        preexec_fn=_limit_file_size(FSIZE_LIMIT),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, outcome in results.items():
        assert outcome.startswith("StorageError: cannot write") and "File too large" in outcome, (name, outcome)
    for name, (state, blobs) in prepared.items():
        store = ChainStore(tmp_path / name)
        _check_untouched(store, state, blobs, name)
        store.close()


# ---------------------------------------------------------------------------
# A real node process


@dataclass
class NodeProcess:
    proc: subprocess.Popen[bytes]
    lines: list[str]
    reader: threading.Thread

    def output(self) -> str:
        return "".join(self.lines)


def start_node(home: Path, *, fsize_limit: int | None = None) -> NodeProcess:
    """``tdml-node run`` with its output piped to this process (so no file of its own holds the log)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tdml_node", "run", "--home", str(home)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=_child_env(),
        start_new_session=True,
        preexec_fn=_limit_file_size(fsize_limit) if fsize_limit else None,
    )
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.append(raw.decode("utf-8", "replace"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return NodeProcess(proc, lines, reader)


def wait_exit(np: NodeProcess, timeout: float) -> int | None:
    try:
        return np.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def stop_node(np: NodeProcess) -> int:
    """SIGTERM (then SIGKILL), reap, and collect the rest of the output."""
    if np.proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(np.proc.pid, signal.SIGTERM)
        try:
            np.proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(np.proc.pid, signal.SIGKILL)
            np.proc.wait(10)
    np.reader.join(10)
    if np.proc.stdout is not None:
        np.proc.stdout.close()
    return np.proc.returncode


@contextlib.contextmanager
def running(np: NodeProcess) -> Iterator[NodeProcess]:
    try:
        yield np
    finally:
        stop_node(np)


def one_node_home(base: Path) -> tuple[Devnet, Path]:
    devnet = Devnet.create(base, 1, config_overrides={"block_interval_ms": 50})
    return devnet, devnet.nodes[0].home


def assert_clean_failure(np: NodeProcess, code: int | None, *phrases: str) -> None:
    out = np.output()
    assert code == 2, f"exit status {code}:\n{out[-3000:]}"
    for phrase in phrases:
        assert phrase in out, f"{phrase!r} not in the log:\n{out[-3000:]}"
    assert "Traceback" not in out, out[-3000:]


def _can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None


@contextlib.contextmanager
def tmpfs(path: Path, size: str, *, read_only: bool = False) -> Iterator[None]:
    """A tmpfs on ``path`` for the duration (skips the test where mounting is not allowed)."""
    if not _can_mount():
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, timeout=30)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


@pytest.mark.slow
def test_a_datadir_that_is_a_file_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    _, home = one_node_home(tmp_path / "net")
    (home / "data").write_text("not a directory")
    with running(start_node(home)) as np:
        code = wait_exit(np, 90)
    assert_clean_failure(np, code, "cannot open the database", "File exists")


@pytest.mark.slow
def test_an_unwritable_datadir_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    _, home = one_node_home(tmp_path / "net")
    if os.geteuid() != 0:
        home.chmod(0o555)  # data/ cannot be created
        try:
            with running(start_node(home)) as np:
                code = wait_exit(np, 90)
        finally:
            home.chmod(0o755)
        assert_clean_failure(np, code, "cannot open the database", "Permission denied")
    else:
        with tmpfs(home / "data", "1m", read_only=True), running(start_node(home)) as np:
            code = wait_exit(np, 90)
        assert_clean_failure(np, code, "cannot open the database", "Read-only file system")


def _run_until_the_disk_is_full(np: NodeProcess, *phrases: str) -> None:
    with running(np):
        code = wait_exit(np, 120)
    assert_clean_failure(np, code, "node halted", *phrases)


def _whole_store(home: Path) -> tuple[int, dict[int, str]]:
    """Open the store (LevelDB replays its log, so the disk needs room again) and check its tip."""
    store = ChainStore(home / "data")
    try:
        tip, hashes = assert_whole_tip(store)
    finally:
        store.close()
    assert tip >= 1, "the node failed before its first block; the limit is too small to test a failure mid-run"
    return tip, hashes


def _restart_and_continue(devnet: Devnet, tip: int, hashes: dict[int, str]) -> None:
    node = devnet.nodes[0]
    with running(start_node(node.home)) as np:
        client = node.client(timeout=5)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and (client.health() or {}).get("height", -1) < tip + 3:
            assert np.proc.poll() is None, np.output()[-3000:]
            time.sleep(0.1)
        assert client.call("tdml_blockNumber") >= tip + 3, np.output()[-3000:]
        for height, digest in hashes.items():
            assert client.call("tdml_getBlockByNumber", height, False)["hash"] == digest
    assert np.proc.returncode == 0, np.output()[-3000:]


@pytest.mark.slow
def test_a_full_disk_stops_the_node_cleanly_and_a_restart_continues(tmp_path: Path) -> None:
    devnet, home = one_node_home(tmp_path / "net")
    _run_until_the_disk_is_full(start_node(home, fsize_limit=FSIZE_LIMIT), "File too large")
    assert devnet.nodes[0].client(timeout=1).health() is None  # the process is gone
    tip, hashes = _whole_store(home)
    _restart_and_continue(devnet, tip, hashes)


@pytest.mark.slow
def test_a_really_full_disk_stops_the_node_cleanly_and_a_restart_continues(tmp_path: Path) -> None:
    devnet, home = one_node_home(tmp_path / "net")
    data = home / "data"
    with tmpfs(data, "256k"):
        _run_until_the_disk_is_full(start_node(home), "No space left on device")
        subprocess.run(["mount", "-o", "remount,size=64m", str(data)], check=True, capture_output=True, timeout=30)
        tip, hashes = _whole_store(home)
        _restart_and_continue(devnet, tip, hashes)
