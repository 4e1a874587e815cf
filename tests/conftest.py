"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from harness import Cluster


@pytest.fixture
def cluster(tmp_path) -> Iterator[Cluster]:
    """A Cluster of real processes in tmp_path; every process is killed afterwards."""
    running = Cluster(tmp_path)
    try:
        yield running
    finally:
        # Shown by pytest only when the test failed.
        print(running.logs())
        running.close()
