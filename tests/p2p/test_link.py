"""A link's send queue, back-pressure and ending, over a stand-in connection."""

from __future__ import annotations

import asyncio

import pytest
from p2p_fixtures import FakeConnection, make_link

from p2p.link import REASON_SLOW, Link
from p2p.messages import Goodbye, PeersRequest, decode_frame

pytestmark = pytest.mark.timeout(10)


def fake(link: Link) -> FakeConnection:
    assert isinstance(link.conn, FakeConnection)
    return link.conn


async def test_the_writer_sends_in_order_and_closes_after_the_goodbye() -> None:
    link, _ = make_link()
    link.writer = asyncio.create_task(link.write_loop())
    link.enqueue(b"one")
    link.send(PeersRequest())
    link.close("bye")
    link.enqueue(b"too late")  # nothing is queued once the link is ending
    await asyncio.wait_for(link.writer, 5)
    assert fake(link).sent[0] == b"one"
    assert [decode_frame(f) for f in fake(link).sent[1:]] == [PeersRequest(), Goodbye("bye")]
    assert fake(link).closed and link.queued_bytes == 0


async def test_nothing_is_sent_before_the_handshake() -> None:
    link, _ = make_link(established=False)
    link.send(PeersRequest())
    assert not link.queue


@pytest.mark.parametrize(("max_frames", "max_bytes", "fit"), [(3, 1000, 3), (100, 25, 2)], ids=["frames", "bytes"])
async def test_a_frame_that_overflows_the_queue_ends_the_link_and_tells_the_network(
    max_frames: int, max_bytes: int, fit: int
) -> None:
    slow: list[Link] = []
    link, _ = make_link(max_frames=max_frames, max_bytes=max_bytes, on_slow=slow.append)
    link.runner = asyncio.create_task(asyncio.sleep(60))
    for _ in range(fit):
        link.enqueue(b"x" * 10)
    assert not slow and link.queued_bytes == 10 * fit
    link.enqueue(b"x" * 10)
    assert slow == [link]
    assert link.ending and link.session.is_closed and link.session.close_reason == REASON_SLOW
    assert list(link.queue) == [None] and link.queued_bytes == 0  # what was queued is dropped
    await asyncio.sleep(0)
    assert link.runner.cancelled()  # the writer may be stuck: the connection's task is cancelled


async def test_forced_frames_bypass_the_bound() -> None:
    slow: list[Link] = []
    link, _ = make_link(max_frames=1, on_slow=slow.append)
    for _ in range(5):
        link.enqueue(b"session reply", force=True)
    assert len(link.queue) == 5 and not slow


async def test_aclose_cancels_a_writer_stuck_on_a_peer_that_reads_nothing() -> None:
    link, _ = make_link(dial_addr="127.0.0.1:30001")
    fake(link).gate.clear()
    link.writer = asyncio.create_task(link.write_loop())
    link.enqueue(b"never delivered")
    link.close("shutting down", clean=True)
    record = await asyncio.wait_for(link.aclose(timeout=0.1), 5)
    assert link.writer.cancelled() and fake(link).closed
    assert record.remote == "127.0.0.1:30001" and record.reason == "shutting down"
    assert not record.by_peer and not record.was_established
    assert record.node_id == link.sort_key.hex() != ""
    assert link.clean_close


async def test_a_clean_close_is_recorded_even_when_the_link_is_already_ending() -> None:
    link, _ = make_link()
    link.end_writer()
    link.close("banned", clean=True)
    assert link.clean_close and list(link.queue) == [None]  # no Goodbye after the end marker
