"""A small Python client for your own job: submit a spec file and data, follow it, export the model.

    from tdml_node.sdk import Client
    c = Client("http://127.0.0.1:8645", key="client_key.json")
    job = c.submit("job.toml", data="data.npz")
    job.wait(progress=print)
    model = job.export("model.safetensors")

``submit`` parses the spec file, converts the data on this machine
(``tdml_node.work.userdata``), uploads the dataset blob, computes the initial
model root and posts a signed ``SubmitJob``. ``Job.wait`` polls the node until
the job is done (or stalls, or the timeout passes); ``Job.export`` writes the
job's current model as safetensors and returns it loaded with its recorded
preprocessing, ready for raw input.

This module must never hold a node's state or keep a secret beyond the key
pair it was given; it only talks to a node through ``NodeClient``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from consensus import crypto
from consensus.codec import decode_as
from consensus.crypto import Keypair
from consensus.transition import compute_job_id
from consensus.types import JobSpec, KeyShare, PublicKey
from tdml_node.client import NodeClient, make_submit_job
from tdml_node.config import load_config
from tdml_node.keys import read_key_file


class JobFailed(Exception):
    """The job stalled, or did not finish in time."""


@dataclass(frozen=True, slots=True)
class Progress:
    """One look at a job: where it is and its latest metrics (None before the first evaluation)."""

    step: int
    steps: int
    status: str
    train_loss: float | None
    test_accuracy: float | None

    def __str__(self) -> str:
        loss = "—" if self.train_loss is None else f"{self.train_loss:.4f}"
        acc = "—" if self.test_accuracy is None else f"{self.test_accuracy:.3f}"
        return f"step {self.step}/{self.steps} {self.status} loss {loss} test accuracy {acc}"

    @classmethod
    def of(cls, view: dict[str, Any]) -> Progress:
        outcome, evaluation = view.get("lastOutcome") or {}, view.get("lastEval") or {}
        return cls(
            step=int(view["step"]),
            steps=int(view["steps"]),
            status=str(view["status"]),
            train_loss=outcome.get("trainLossFloat"),
            test_accuracy=evaluation.get("testAccuracy"),
        )


def submit_spec(
    node: NodeClient,
    key: Keypair,
    spec: JobSpec,
    dataset: bytes | None,
    budget: int | None = None,
    chain_id: str | None = None,
    *,
    private: bool = False,
    members: Sequence[bytes] | None = None,
) -> str:
    """Upload the dataset (when given; else the node must hold ``spec.dataset``) and post the job; its id (hex).

    Without ``budget``, enough for every unit and its verdicts; without
    ``chain_id``, the node's. ``private``: the dataset goes up as a sealed
    envelope under a fresh key, and the key is sealed to ``members`` (node
    public keys; by default every validator and trainer the node knows), so
    the node, its peers and its RPC users hold only ciphertext.
    """
    from tdml_node.storage import MemoryBlobStore
    from tdml_node.work.executor import TorchExecutor

    shares: tuple[KeyShare, ...] = ()
    if private:
        if dataset is None:
            raise ValueError("a private job is sealed from its dataset: give the dataset's bytes")
        spec, dataset, shares = seal_job(spec, dataset, members if members is not None else job_members(node))
    if dataset is not None:
        node.put_blob(dataset)
    root = TorchExecutor(MemoryBlobStore()).initial_model_root(spec)
    if budget is None:
        budget = spec.steps * spec.shards * (spec.reward_per_unit + 4 * spec.reward_per_verdict)
    if chain_id is None:
        chain_id = str(node.call("tdml_nodeInfo")["chainId"])
    signed = make_submit_job(key, chain_id, node.next_nonce(key), spec, budget, root, key_shares=shares)
    node.send_transaction(signed)
    return "0x" + compute_job_id(signed.tx).hex()


def job_members(node: NodeClient) -> list[bytes]:
    """The node keys of every validator and trainer the node knows: whom a private job is sealed to."""
    keys = [v["publicKey"] for v in node.call("tdml_validators")]
    keys += [t["publicKey"] for t in node.call("tdml_trainers") if t["publicKey"]]
    return sorted({bytes.fromhex(k[2:]) for k in keys})


def seal_job(spec: JobSpec, dataset: bytes, members: Sequence[bytes]) -> tuple[JobSpec, bytes, tuple[KeyShare, ...]]:
    """The private spec, the sealed dataset it names, and the data key sealed to each member."""
    from tdml_node.work.sealed import new_data_key, seal_blob, seal_key

    if not members:
        raise ValueError("a private job needs at least one member to seal its key to")
    data_key = new_data_key()
    envelope = seal_blob(dataset, data_key)
    shares = tuple(KeyShare(PublicKey(m), seal_key(data_key, m)) for m in sorted(set(members)))
    return dataclasses.replace(spec, dataset=crypto.sha256(envelope), private=True), envelope, shares


class Job:
    """A submitted job, by id, on the node of its client."""

    def __init__(self, node: NodeClient, job_id: str) -> None:
        self.node = node
        self.id = job_id

    def view(self) -> dict[str, Any] | None:
        """The node's view of the job (``tdml_getJob``); None until the job is in a block."""
        view: dict[str, Any] | None = self.node.call("tdml_getJob", self.id)
        return view

    def progress(self) -> Progress | None:
        view = self.view()
        return None if view is None else Progress.of(view)

    def wait(
        self, progress: Callable[[Progress], object] | None = None, *, timeout: float = 3600.0, poll: float = 0.5
    ) -> Progress:
        """Block until the job is done; ``progress`` is called whenever the step or the metrics change."""
        deadline = time.monotonic() + timeout
        last: Progress | None = None
        while True:
            current = self.progress()
            if current is not None and current != last:
                last = current
                if progress is not None:
                    progress(current)
            if current is not None and current.status == "done":
                return current
            if current is not None and current.status == "stalled":
                raise JobFailed(f"job {self.id} stalled at step {current.step}")
            if time.monotonic() >= deadline:
                raise JobFailed(f"job {self.id} not done within {timeout:g} s ({last or 'not yet in a block'})")
            time.sleep(poll)

    def spec(self) -> JobSpec:
        raw: str = self.node.call("tdml_getJobSpec", self.id)
        return decode_as(bytes.fromhex(raw.removeprefix("0x")), JobSpec)

    def export(self, path: str | Path) -> nn.Module:
        """Write the job's current model to ``path`` (safetensors) and return it loaded, preprocessing included."""
        from tdml_node.work.export import export_model, load_exported

        view = self.view()
        if view is None:
            raise JobFailed(f"job {self.id} is not on the chain")
        export_model(self.spec(), self.node.get_blob(view["modelRoot"]), path, lambda d: self.node.get_blob(d.hex()))
        model, _ = load_exported(path)
        return model


class Client:
    """A node's URL and the paying account's key; ``key`` is a key file (or a ``Keypair``).

    Uploading a dataset needs the node's RPC token: ``token``, or
    ``home``, a local node's home whose cookie file holds the current one.
    """

    def __init__(
        self,
        url: str,
        *,
        key: str | Path | Keypair,
        passphrase: str | None = None,
        token: str | None = None,
        home: str | Path | None = None,
        timeout: float = 30.0,
    ) -> None:
        cookie = None if home is None else load_config(Path(home).expanduser()).rpc_cookie_file
        self.node = NodeClient(url, timeout=timeout, token=token, cookie=cookie)
        if isinstance(key, Keypair):
            self.key = key
        else:
            self.key = read_key_file(Path(key), passphrase, allow_insecure=True)

    def submit(
        self, spec: str | Path, data: str | Path | None = None, *, budget: int | None = None, private: bool = False
    ) -> Job:
        """Submit the job of a spec file on ``data`` (a .npz, .csv or text file; None: the spec names a blob).

        ``private``: the data is sealed to the network's validators and trainers (``submit_spec``).
        """
        from tdml_node.work.specfile import parse_spec_file
        from tdml_node.work.userdata import prepare_job

        job_spec, dataset = prepare_job(parse_spec_file(spec), data)
        return Job(self.node, submit_spec(self.node, self.key, job_spec, dataset, budget, private=private))

    def job(self, job_id: str) -> Job:
        return Job(self.node, job_id)
