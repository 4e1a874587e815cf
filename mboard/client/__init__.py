"""mboard.client: the async client library used by the CLI, the shell and the benchmarks."""

from mboard.client.core import BoardError, Client

__all__ = ["BoardError", "Client"]
