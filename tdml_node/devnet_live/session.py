"""One ``tdml-node devnet`` run: start the nodes, submit the job, show it live, report, and always clean up.

The run owns its nodes whatever ends it: the job finishing, an error, or a
signal (SIGINT, SIGTERM, SIGHUP) turns into stopping every node at once with
a bounded wait and removing the throwaway homes; the nodes' parent-death
signal covers a SIGKILL of this process. Elapsed times all come from one
start instant. This module must never reach into a node's memory.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.live import Live

from tdml_node.devnet import Devnet, DevnetError, is_ready, submit_job
from tdml_node.devnet_live.poll import Watcher, job_status, read_node
from tdml_node.devnet_live.stages import stage_plan, with_earlier_trainers
from tdml_node.devnet_live.status import DevnetReport, Snapshot
from tdml_node.devnet_live.view import node_up_line, progress_line, render_view, stages_line

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
STOP_TIMEOUT = 5.0
"""Seconds the nodes get to stop cleanly after SIGTERM before they are SIGKILLed."""
READY_TIMEOUT = 90.0
LINE_EVERY = 3.0
"""Seconds between plain progress lines when the output is not a terminal."""


class Stopped(BaseException):
    """A signal asked the devnet to stop; a BaseException so no ``except Exception`` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextlib.contextmanager
def signals_stop() -> Iterator[None]:
    """Turn SIGINT, SIGTERM and SIGHUP into ``Stopped``; later ones are ignored, as the stop is already bounded."""

    def handler(signum: int, frame: FrameType | None) -> None:
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        raise Stopped(signum)

    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Ignore SIGINT, SIGTERM and SIGHUP for a moment, so a second Ctrl-C cannot cut a bounded stop short."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def say(console: Console, message: str) -> None:
    """Print one unwrapped line, unless the terminal is gone (after SIGHUP a write fails with EIO)."""
    with contextlib.suppress(OSError):
        console.print(message, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def shown(console: Console, watcher: Watcher) -> Iterator[None]:
    """The live view on a terminal; otherwise a plain progress line every few seconds."""
    if console.is_terminal:
        live = Live(console=console, get_renderable=lambda: render_view(watcher.snapshot()), refresh_per_second=4)
        live.start()
        watcher.start()
        try:
            yield
        except BaseException:
            watcher.phase = "stopping"  # the view's last frame says why it froze
            raise
        finally:
            with contextlib.suppress(OSError):
                live.refresh()
                live.stop()
        return
    last = [float("-inf")]

    def line(snap: Snapshot) -> None:
        if snap.elapsed - last[0] >= LINE_EVERY:
            last[0] = snap.elapsed
            say(console, progress_line(snap))

    watcher.on_poll = line
    watcher.start()
    yield


def wait_up(devnet: Devnet, watcher: Watcher, console: Console, timeout: float = READY_TIMEOUT) -> None:
    """Wait for every node, printing each one's line as it comes up."""
    deadline = time.monotonic() + timeout
    waiting = list(devnet.nodes)
    while waiting:
        for node in list(waiting):
            if node.process is not None and node.process.poll() is not None:
                raise DevnetError(f"node {node.index} exited with {node.process.returncode}:\n{devnet.log_tail(node)}")
            if is_ready(node):
                waiting.remove(node)
                status = read_node(node, watcher.nodes[node.index])
                say(console, node_up_line(status, f"127.0.0.1:{node.p2p_port}", str(node.log_path)))
        if waiting and time.monotonic() > deadline:
            node = waiting[0]
            raise DevnetError(f"node {node.index} did not answer within {timeout:.0f}s:\n{devnet.log_tail(node)}")
        time.sleep(0.1)


def follow_job(devnet: Devnet, watcher: Watcher, job_id: str, timeout: float) -> Snapshot:
    """Wait until the job is done; returns the snapshot of that moment, which the view then keeps showing."""
    client = devnet.nodes[0].client(timeout=10)
    while True:
        for node in devnet.nodes:
            if node.process is not None and node.process.poll() is not None:
                raise DevnetError(f"node {node.index} exited with {node.process.returncode}:\n{devnet.log_tail(node)}")
        view = client.call("tdml_getJob", job_id)
        if view is not None and view["status"] == "done":
            watcher.refresh()
            job = job_status(view, watcher.plan)
            trained = watcher.job.stages if watcher.job is not None else ()
            final = replace(watcher.snapshot(), phase="done", job=replace(job, stages=with_earlier_trainers(trained, job.stages)))
            watcher.final = final
            return final
        if watcher.clock() - (watcher.job_started or 0.0) > timeout:
            raise DevnetError(f"the job did not finish within {timeout:.0f}s")
        time.sleep(0.25)


def prepare_logs(logs: Path) -> None:
    """One log per node of this run: the previous run's node logs in the same place go."""
    logs.mkdir(parents=True, exist_ok=True)
    for old in logs.glob("node*.log"):
        old.unlink()


def run_devnet(
    *,
    nodes: int,
    job: str,
    steps: int | None,
    text_path: Path | None,
    out: Path,
    data_dir: Path | None,
    logs: Path,
    keep: bool,
    check_reference: bool,
    console: Console,
    timeout: float = 3600.0,
    private: bool = False,
) -> DevnetReport:
    """The whole run; raises ``DevnetError`` when it fails and ``Stopped`` when a signal ends it."""
    start = time.monotonic()
    clock: Callable[[], float] = lambda: time.monotonic() - start  # noqa: E731
    with signals_stop():
        say(console, f"starting {nodes} node(s)…")
        base = data_dir or Path(tempfile.mkdtemp(prefix="tdml-devnet-"))
        keep_homes = keep or data_dir is not None
        prepare_logs(logs)
        devnet = Devnet.create(base, nodes, log_dir=logs.resolve())
        watcher = Watcher(devnet, clock, logs=logs.resolve())
        try:
            devnet.start_all()  # before any thread of ours exists: the children's preexec_fn runs after fork
            say(console, f"node homes in {base}; logs in {logs.resolve()}")
            with shown(console, watcher):
                watcher.phase = f"starting {nodes} node(s), loading the job"
                # The job (torch and its dataset) loads while the nodes boot.
                from tdml_node.work.export import export_model
                from tdml_node.work.jobs import get_job
                from tdml_node.work.partition import stage_layout
                from tdml_node.work.reference import run_reference

                try:
                    spec, dataset = get_job(job, steps=steps, text_path=text_path)
                except ValueError as exc:
                    raise DevnetError(str(exc)) from exc
                watcher.plan = stage_plan(stage_layout(spec), [n.keypair.address for n in devnet.nodes])
                say(console, f"job {spec.name}: {spec.steps} steps × {spec.shards} shards" + stages_line(watcher.plan))
                watcher.phase = f"starting {nodes} node(s)"
                wait_up(devnet, watcher, console)
                watcher.phase = "uploading the dataset"
                if not private:  # a private job's envelope goes to node 0 only; the others fetch the ciphertext
                    for node in devnet.nodes[1:]:
                        node.client().put_blob(dataset)
                watcher.phase = "submitting the job"
                watcher.job_started = clock()
                client = devnet.nodes[0].client()
                job_id = submit_job(client, devnet.client_key, devnet.genesis.chain_id, spec, dataset, private=private)
                watcher.job_id = job_id
                watcher.phase = "training"
                say(console, f"submitted job {job_id}")
                final = follow_job(devnet, watcher, job_id, timeout)
            if not console.is_terminal:
                say(console, progress_line(final))
            blocks = client.call("tdml_blockNumber")
            done = client.call("tdml_getJob", job_id)
            model_root = done["modelRoot"]
            sealed_to = int(done["sealedTo"]) if private else None
            out.parent.mkdir(parents=True, exist_ok=True)
            export_model(spec, client.get_blob(model_root), out, lambda d: client.get_blob(d.hex()))
        finally:
            with signals_held():
                watcher.close(wait=False)
                say(console, f"stopping {nodes} node(s)…")
                stop_started = time.monotonic()
                devnet.stop_all(timeout=STOP_TIMEOUT)
                say(console, f"stopped {nodes} node(s) in {time.monotonic() - stop_started:.1f} s; logs in {logs.resolve()}")
                if not keep_homes:
                    shutil.rmtree(base, ignore_errors=True)
                watcher.close()
        reference_root = None
        if check_reference:
            say(console, "running the single-process reference of the same job…")
            reference_root = "0x" + run_reference(spec, dataset).final_root.hex()
    return DevnetReport(
        job_id=job_id,
        final=final,
        total=clock(),
        blocks=blocks,
        model_root=model_root,
        reference_root=reference_root,
        model_path=out,
        homes=base if keep_homes else None,
        sealed_to=sealed_to,
    )
