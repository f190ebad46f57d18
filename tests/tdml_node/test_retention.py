"""Retention: which blobs a node hands back for deletion as a job moves on, a pipeline's stage bundles included."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from consensus.types import Hash32
from tdml_node.storage import Retention

JOB = Hash32(b"\x01" * 32)
DATASET = Hash32(b"\xda" * 32)


def _d(name: str) -> Hash32:
    return Hash32(name.encode().ljust(32, b"."))


def _block(step: int, *, results: tuple[str, ...] = (), root: str | None = None) -> Any:
    """A block's fields retention reads: submissions of ``step`` and the outcome that ends it."""
    subs = [
        SimpleNamespace(submission=SimpleNamespace(job=JOB, step=step, result_digest=_d(r), checkpoint_digests=(), links=None))
        for r in results
    ]
    outcomes = [SimpleNamespace(job=JOB, step=step, model_root=_d(root))] if root else []
    return SimpleNamespace(body=SimpleNamespace(submissions=subs, outcomes=outcomes))


def _state(step: int, root: str, *, pipeline: bool = False) -> Any:
    job = SimpleNamespace(model_root=_d(root), step=step, spec=SimpleNamespace(dataset=DATASET, pipeline=pipeline or None))
    return SimpleNamespace(jobs={JOB: job})


def test_a_plain_jobs_old_results_and_states_expire_and_the_current_state_never_does() -> None:
    r = Retention(keep_steps=1)
    for step in range(4):
        r.record_block(_block(step, results=(f"u{step}",), root=f"root{step + 1}"))
    # At step 4, keeping 1 step back: steps 0 to 2 go (their units, and the states they started from).
    assert r.expired(_state(4, "root4")) == [_d("u0"), _d("root1"), _d("u1"), _d("root2"), _d("u2")]
    assert r.expired(_state(4, "root4")) == []
    assert _d("root4") not in r.expired(_state(9, "root4")) and DATASET not in r.expired(_state(9, "root4"))


def test_a_pipeline_steps_stage_bundles_expire_with_its_root_and_the_current_ones_stay() -> None:
    r = Retention(keep_steps=1)
    for step in range(4):
        # Stage 1 never changes: its bundle is named by every step's root.
        parts = {_d(f"root{step + 1}"): (_d(f"s0@{step + 1}"), _d("s1 unchanged"))}
        r.record_block(_block(step, root=f"root{step + 1}"), parts)
    gone = r.expired(_state(4, "root4"))
    assert set(gone) == {_d("root1"), _d("s0@1"), _d("root2"), _d("s0@2")}
    assert _d("s1 unchanged") not in gone and _d("s0@4") not in gone
    # Once the job ends (and its state is no longer current), the rest goes too.
    assert set(r.expired(SimpleNamespace(jobs={}))) == {
        _d("root3"), _d("s0@3"), _d("s1 unchanged"), _d("root4"), _d("s0@4"),
    }


def test_stage_bundles_a_node_fetched_after_the_commit_expire_too_and_the_current_ones_stay() -> None:
    # A node that takes the model work from the commit holds no new root when it commits: nothing is named
    # then. The stage bundles it fetches later (to train its stage) are read off the root blob at expiry.
    r = Retention(keep_steps=1)
    for step in range(4):
        r.record_block(_block(step, root=f"root{step + 1}"), {})
    held = {_d(f"root{k}"): (_d(f"s1@{k}"),) for k in (1, 2, 4)}  # it trained stage 1 at steps 0, 1 and 3
    reads: list[Hash32] = []

    def parts_of(root: Hash32) -> tuple[Hash32, ...]:
        reads.append(root)
        return held.get(root, ())

    gone = r.expired(_state(4, "root4", pipeline=True), parts_of)
    assert set(gone) == {_d("root1"), _d("s1@1"), _d("root2"), _d("s1@2")}
    assert _d("s1@4") not in gone
    assert set(reads) == {_d("root1"), _d("root2"), _d("root4")}  # the expired roots and the current one
    # A plain job's roots are state bundles, never read for parts.
    r2 = Retention(keep_steps=1)
    for step in range(3):
        r2.record_block(_block(step, root=f"root{step + 1}"), {})
    reads.clear()
    assert r2.expired(_state(3, "root3"), parts_of) == [_d("root1")]
    assert reads == []
