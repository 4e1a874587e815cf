"""Prometheus metrics, served over HTTP only when ``metrics.listen`` is configured.

Each process plays one role, so the metrics live in the default registry. Counters and
the histogram are updated on the hot paths (about a microsecond each); gauges read live
state only when Prometheus scrapes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from prometheus_client import (
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)

disable_created_metrics()  # *_created series only add noise to every scrape

WRITES = Counter(
    "mboard_writes", "Client writes answered by this node as head, by result", ["result"]
)
# Exported as 0 from the start, not only after the first write; kept for the hot path.
WRITES_OK = WRITES.labels("OK")
COMMITS = Counter("mboard_commits", "Log entries this node saw become committed")
COMMIT_LATENCY = Histogram(
    "mboard_commit_latency_seconds",
    "From a write's arrival at the head until the chain committed it",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
APPLIED_SEQ = Gauge("mboard_applied_seq", "Highest log seq applied by this node")
COMMITTED_SEQ = Gauge("mboard_committed_seq", "Highest log seq this node knows is committed")
REPLICATION_LAG = Gauge(
    "mboard_replication_lag_entries",
    "Node: entries applied here but not committed yet; control: head's applied minus tail's",
)
SUBSCRIBERS = Gauge("mboard_subscribers", "Subscription streams (node: served here; control: all)")
PAGE_CACHE_BYTES = Gauge(
    "mboard_page_cache_bytes", "Newest messages kept in memory for pages (page_cache_mb)"
)
EPOCH = Gauge("mboard_epoch", "Configuration epoch (node: applied; control: issued)")
RECONFIGURATIONS = Counter(
    "mboard_reconfigurations", "Configuration changes (node: applied; control: issued)"
)
HEARTBEAT_MISSES = Counter(
    "mboard_heartbeat_misses",
    "Node: calls to the control plane that failed; control: members expired for silence",
)


# What only a node measures: the control plane does not export them (they would read 0).
NODE_ONLY = (WRITES, COMMITS, COMMIT_LATENCY, APPLIED_SEQ, COMMITTED_SEQ, PAGE_CACHE_BYTES)


def serve(
    listen: str | None, gauges: dict[Gauge, Callable[[], float]], exclude: tuple = ()
) -> None:
    """Start the HTTP endpoint on ``listen`` (host:port) if set; bind gauges to live state.
    The ``exclude``d metrics are not exported."""
    if not listen:
        return
    for metric in exclude:
        with contextlib.suppress(KeyError):  # already gone (a second server in one process)
            REGISTRY.unregister(metric)
    for gauge, read in gauges.items():
        gauge.set_function(read)
    host, port = listen.rsplit(":", 1)
    try:
        start_http_server(int(port), addr=host.strip("[]"))
    except OSError as exc:
        raise OSError(f"metrics endpoint cannot listen on {listen}: {exc.strerror or exc}") from exc
