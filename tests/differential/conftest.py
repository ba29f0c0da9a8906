"""The shared harness fixture of the differential suites (profiles: profiles.py)."""

from collections.abc import Iterator

import pytest

from tests.differential.harness import Harness
from tests.recording import RecordingBackend, answer_echo


@pytest.fixture
def harness() -> Iterator[Harness]:
    """One balancer in front of one recording backend, for all the examples of one test (a
    connection left poisoned by a known defect must not spill into another test)."""
    running = Harness(RecordingBackend(answer_echo))
    yield running
    running.close()
