"""Fixtures for namespace tests: a topology that is removed whatever the test does."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cand.lab.netns import Topology, netns_available
from tests.conftest import need


@pytest.fixture
def topo() -> Iterator[Topology]:
    why = netns_available()
    need(why is None, why or "")
    t = Topology()
    try:
        yield t
    finally:
        t.close()
