"""The devnet's view is a pure function of a snapshot: render made-up snapshots and read the text."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from rich.console import Console

from consensus import pipeline
from consensus.crypto import Keypair
from tdml_node.devnet_live.poll import job_status
from tdml_node.devnet_live.stages import stage_plan, with_earlier_trainers
from tdml_node.devnet_live.status import (
    DevnetReport,
    JobStatus,
    NodeStatus,
    Snapshot,
    compute_eta,
    compute_rate,
    role_of,
)
from tdml_node.devnet_live.view import progress_line, render_view, report_table, stages_line
from tdml_node.work.jobs import get_job
from tdml_node.work.partition import stage_layout

NODES = (
    NodeStatus(0, "validator+trainer", "running", "http://127.0.0.1:40001", 101, 57, 3, 12, 11, 1),
    NodeStatus(1, "validator+trainer", "syncing", "http://127.0.0.1:40002", 102, 50, 3, 9, 9, 0),
    NodeStatus(2, "validator", "exited 2", "http://127.0.0.1:40003", 103, 12, 0, 0, 0, 0),
    NodeStatus(3, "-", "starting", "http://127.0.0.1:40004", 104),
)
JOB = JobStatus("digits-mlp", step=30, steps=120, status="running", train_loss=1.23456, test_accuracy=0.8)
SNAP = Snapshot(elapsed=25.0, phase="training", nodes=NODES, job=JOB, job_started=10.0, logs=Path("/tmp/logs"))


def _text(renderable: object, width: int = 140) -> str:
    console = Console(record=True, width=width, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_rate_and_eta_come_from_the_one_clock() -> None:
    assert compute_rate(SNAP) == 30 / 15
    assert compute_eta(SNAP) == 90 / 2
    before = Snapshot(elapsed=3.0, phase="starting", nodes=NODES)
    assert compute_rate(before) is None and compute_eta(before) is None
    first = Snapshot(elapsed=12.0, phase="training", nodes=NODES, job=JobStatus("j", 0, 10, "running"), job_started=10.0)
    assert compute_rate(first) is None


def test_the_live_view_shows_progress_figures_every_node_and_the_logs() -> None:
    text = _text(render_view(SNAP))
    assert "step 30/120" in text and "2.00 steps/s" in text and "ETA 0:45" in text
    assert "elapsed 25.0 s" in text and "training" in text and "logs: /tmp/logs" in text
    assert "━" in text  # the progress bar itself
    for header in ("role", "state", "height", "peers", "trained", "verified", "rejected", "rpc"):
        assert header in text
    rows = {int(m.group(1)): m.group(0) for m in re.finditer(r"^\s*│?\s*(\d) .*$", text, re.M)}
    assert set(rows) == {0, 1, 2, 3}
    assert all(n.rpc_url in rows[n.index] and n.state in rows[n.index] for n in NODES)
    assert re.search(r"validator\+trainer\s*│\s*running\s*│\s*57\s*│\s*3\s*│\s*12\s*│\s*11\s*│\s*1\s", rows[0])


def test_the_view_before_the_job_has_every_node_starting() -> None:
    snap = Snapshot(elapsed=0.4, phase="starting 4 node(s)", nodes=tuple(NodeStatus(i, "-", "starting", f"u{i}") for i in range(4)))
    text = _text(render_view(snap))
    assert "starting 4 node(s)" in text and "waiting for the job" in text and text.count("starting") == 5


def test_the_plain_line_carries_the_same_figures() -> None:
    line = progress_line(SNAP)
    assert line.startswith("[   25.0s] training: step 30/120  2.00 steps/s  ETA 0:45")
    assert "n0:running/h57/p3/t12/v11/r1" in line and "n2:exited=2/" in line and "n3:starting/h-/" in line


def test_the_report_uses_the_final_snapshot_clock_and_names_the_logs() -> None:
    done = Snapshot(elapsed=70.0, phase="done", nodes=NODES, job=JobStatus("digits-mlp", 120, 120, "done"), job_started=10.0, logs=Path("/tmp/logs"))
    report = DevnetReport("0xabc", done, 81.5, 240, "0x01", "0x01", Path("m.safetensors"), None)
    text = _text(report_table(report), width=200)
    assert re.search(r"elapsed\s*│ 70\.0 s \(nodes up and job submitted at 10\.0 s, training 60\.0 s\)", text)
    assert re.search(r"total\s*│ 81\.5 s", text)
    assert "2.00 steps/s" in text and "20 / 1" in text and "equal bit for bit" in text
    assert "/tmp/logs" in text and "removed" in text
    assert "sealed" not in text  # a public job's report says nothing of sealing
    private = DevnetReport("0xabc", done, 81.5, 240, "0x01", "0x01", Path("m.safetensors"), None, sealed_to=4)
    assert re.search(r"data\s*│ private: sealed, its key sealed to 4 nodes", _text(report_table(private), width=200))


def test_roles_in_one_word() -> None:
    assert role_of(["trainer", "validator"], True) == "validator+trainer"
    assert role_of([], True) == "validator"
    assert role_of(["trainer"], False) == "trainer"
    assert role_of([], False) == "observer"


def test_a_pipeline_job_shows_its_stages_with_layers_trainers_and_memory_live_and_in_the_report() -> None:
    spec = get_job("digits-mlp-pipeline")[0]
    addresses = [Keypair.from_seed(bytes([i + 1]) * 32).address for i in range(4)]
    plan = stage_plan(stage_layout(spec), addresses)
    assert plan is not None and [(s.first_layer, s.last_layer) for s in plan.stages] == [(0, 0), (1, 1), (2, 2), (3, 3)]
    assert 0 < max(s.estimated_mb for s in plan.stages) < plan.whole_model_mb
    assert stage_plan(stage_layout(get_job("digits-mlp")[0]), addresses) is None
    # Shard k's units of every stage go to node (k + stage) % 4; one unit of the step accepted.
    assignment = ["0x00"] * pipeline.units_per_step(spec)
    for k in range(spec.shards):
        for pos in range(pipeline.units_per_shard(spec)):
            stage = pipeline.place_of(spec, pipeline.unit_index(spec, k, pos)).stage
            assignment[pipeline.unit_index(spec, k, pos)] = "0x" + addresses[(k + stage) % 4].hex()
    accepted: list[str | None] = [None] * len(assignment)
    accepted[0] = "0x01"
    view = {"name": spec.name, "step": 3, "steps": 100, "status": "active", "assignment": assignment, "accepted": accepted}
    job = job_status(view, plan)
    assert (job.units_accepted, job.units) == (1, 28)
    assert [s.trainers for s in job.stages] == [(0, 1, 2, 3)] * 4
    nodes = tuple(dataclasses.replace(n, peak_rss_mb=300.0 + n.index) for n in NODES)
    snap = dataclasses.replace(SNAP, job=job, nodes=nodes)
    text = _text(render_view(snap), width=200)
    assert "units 1/28" in text and "memory (est.)" in text and "peak MiB" in text and "303" in text
    assert re.search(r"3\s*│\s*layer 3\s*│\s*n0,n1,n2,n3\s*│", text)
    assert progress_line(snap).endswith("S0:n0,n1,n2,n3 S1:n0,n1,n2,n3 S2:n0,n1,n2,n3 S3:n0,n1,n2,n3")
    report = DevnetReport("0xabc", snap, 81.5, 240, "0x01", "0x01", Path("m.safetensors"), None)
    text = _text(report_table(report), width=220)
    assert re.search(r"stage 2\s*│ layer 2, trained by n0,n1,n2,n3, \d+\.\d\d MiB estimated", text)
    assert "n3 303 MiB" in text and "equal bit for bit" in text
    assert "in 4 stages: layer 0" in stages_line(plan)


def test_a_finished_pipeline_job_still_names_who_trained_each_stage() -> None:
    spec = get_job("digits-mlp-pipeline")[0]
    addresses = [Keypair.from_seed(bytes([i + 1]) * 32).address for i in range(4)]
    plan = stage_plan(stage_layout(spec), addresses)
    assert plan is not None
    dealt = ["0x" + addresses[pipeline.place_of(spec, u).stage].hex() for u in range(pipeline.units_per_step(spec))]
    during = job_status({"name": "p", "step": 5, "steps": 9, "status": "active", "assignment": dealt, "accepted": [None] * 28}, plan)
    done = job_status({"name": "p", "step": 9, "steps": 9, "status": "done", "assignment": [], "accepted": []}, plan)
    assert [s.trainers for s in done.stages] == [()] * 4
    assert [s.trainers for s in with_earlier_trainers(during.stages, done.stages)] == [(0,), (1,), (2,), (3,)]
    assert "units" not in progress_line(dataclasses.replace(SNAP, job=done))
