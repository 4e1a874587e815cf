"""Shared pytest fixtures."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
from harness import Cluster


def pytest_configure() -> None:
    # Tests end child processes with Ctrl+C (SIGINT). Run in the background by a shell without
    # job control (`pytest &` in a script), pytest inherits SIGINT ignored, and so would every
    # child it starts: they would never see the Ctrl+C.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


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
