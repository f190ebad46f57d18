"""Test-suite wide settings.

Tests marked ``slow`` start real node processes. They all go to one xdist
group, so under ``pytest -n 2 --dist loadgroup`` they run one after another
on one worker while the other worker takes the fast tests: two 4-node devnets
at once on a 2-core machine would only make each slower and flakier.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(pytest.mark.xdist_group("processes"))
