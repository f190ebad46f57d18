"""When a stand-in checker steps in for a designated one."""

from __future__ import annotations

from tdml_node.duties import standin_due

A, B, ME = b"a" * 32, b"b" * 32, b"m" * 32


def test_a_stand_in_waits_while_every_designated_checker_is_connected() -> None:
    assert not standin_due(1.0, 60.0, 3.0, (A, B), frozenset({A, B, ME}))


def test_a_stand_in_steps_in_after_the_wait_whoever_is_connected() -> None:
    assert standin_due(3.0, 60.0, 3.0, (A, B), frozenset({A, B, ME}))


def test_a_stand_in_steps_in_at_once_for_a_designated_checker_that_is_not_connected() -> None:
    assert standin_due(0.0, 60.0, 3.0, (A, B), frozenset({A, ME}))


def test_a_node_that_just_started_waits_for_its_peers_to_connect() -> None:
    assert not standin_due(0.0, 1.0, 3.0, (A, B), frozenset({ME}))
    assert standin_due(0.0, 3.0, 3.0, (A, B), frozenset({ME}))

