"""The shared harness fixture of the differential suites (profiles: profiles.py)."""

from collections.abc import Iterator

import pytest

from tests.differential.harness import Harness, RecordingBackend


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    """One balancer in front of one recording backend, for every example of a module."""
    running = Harness(RecordingBackend())
    yield running
    running.close()
