"""Prometheus metrics, served over HTTP only when ``metrics.listen`` is configured.

Each process plays one role, so the metrics live in the default registry. What a node
counts for every write (``HOT``) is plain numbers that only its event loop updates, read
when Prometheus scrapes; gauges read live state then too.
"""

from __future__ import annotations

import contextlib
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Callable, Iterator

from prometheus_client import REGISTRY, Counter, Gauge, disable_created_metrics, start_http_server
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

disable_created_metrics()  # *_created series only add noise to every scrape

COMMIT_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class HotPathMetrics(Collector):
    """What a node counts for every write, as plain numbers.

    prometheus_client's counters and histograms take a lock on every update, four per
    write: py-spy put them at about 3 % of a busy head's time. Only the node's event loop
    updates these, so they need none; Prometheus's thread reads them when it scrapes.
    """

    def __init__(self) -> None:
        self.writes: Tally[str] = Tally(OK=0)  # by result; OK exported from the start
        self.commits = 0
        self.latency_counts = [0] * (len(COMMIT_LATENCY_BUCKETS) + 1)  # the last: +Inf
        self.latency_sum = 0.0

    def observe_commit_latency(self, seconds: float) -> None:
        self.latency_counts[bisect_left(COMMIT_LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def collect(self) -> Iterator[Metric]:
        writes = CounterMetricFamily(
            "mboard_writes", "Client writes answered by this node as head, by result",
            labels=["result"],
        )  # fmt: skip
        for result, count in sorted(dict(self.writes).items()):  # a copy: the loop adds keys
            writes.add_metric([result], count)
        yield writes
        yield CounterMetricFamily(
            "mboard_commits", "Log entries this node saw become committed", value=self.commits
        )
        cumulative, buckets = 0, []
        bounds = [*map(repr, COMMIT_LATENCY_BUCKETS), "+Inf"]
        for bound, count in zip(bounds, self.latency_counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily(
            "mboard_commit_latency_seconds",
            "From a write's arrival at the head until the chain committed it",
            buckets=buckets,
            sum_value=self.latency_sum,
        )


HOT = HotPathMetrics()
REGISTRY.register(HOT)
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
NODE_ONLY = (HOT, APPLIED_SEQ, COMMITTED_SEQ, PAGE_CACHE_BYTES)


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
