"""Steps the cluster tests share: start a chain, run a write load, wait for it, and check
that every node converged to the same board holding every acknowledged write once.

``MBOARD_FAILOVER_TIMINGS=default`` makes ``start_chain`` use the control plane's default
timings instead of the harness's fast test timings.
"""

from __future__ import annotations

import asyncio
import os

from harness import CONTROL_DEFAULTS, WAIT_TIMEOUT, Cluster
from load import WriteLoad, read_all_messages

from mboard.api import cluster_pb2
from mboard.api import razpravljalnica_pb2 as pb
from mboard.api import razpravljalnica_pb2_grpc as pb_grpc
from mboard.client import Client
from mboard.config import ControlConfig

NODES = ["n1", "n2", "n3"]
DEFAULT_TIMINGS = {
    key: getattr(ControlConfig(), key) for key in ("heartbeat_interval", "failure_timeout", "lease")
}
# Writes acknowledged before a failure, and again after it (started after the change).
WARM_UP_ACKS = 100
RESUMED_ACKS = 50


def timings() -> dict:
    """The control plane's timings for this run: the harness's fast ones unless asked."""
    return dict(DEFAULT_TIMINGS) if os.environ.get("MBOARD_FAILOVER_TIMINGS") == "default" else {}


def timing(key: str) -> float:
    return {**CONTROL_DEFAULTS, **timings()}[key]


def start_chain(
    cluster: Cluster,
    names: list[str] = NODES,
    max_file_bytes: dict[str, int] | None = None,
    **control,
) -> tuple[int, int]:
    """Start a control plane and ``names`` as one chain; return (user id, topic id)."""
    cluster.start_chain(names, control={**timings(), **control}, max_file_bytes=max_file_bytes)
    return asyncio.run(_create_user_and_topic(cluster.control_address))


async def _create_user_and_topic(control: str) -> tuple[int, int]:
    async with Client(control, timeout=WAIT_TIMEOUT) as client:
        user = await client.create_user("writer")
        topic = await client.create_topic("failures")
    return user.id, topic.id


def write_load(cluster: Cluster, user_id: int, topic_id: int, **options) -> WriteLoad:
    return WriteLoad(cluster.control_address, topic_id, user_id, **options)


def wait_acks(
    cluster: Cluster, load: WriteLoad, since: float, what: str, count: int = RESUMED_ACKS
) -> None:
    """Wait until ``count`` writes started at or after ``since`` were acknowledged."""
    cluster.wait_for(
        lambda: load.acked_since(since) >= count,
        what=lambda: f"{count} writes acknowledged {what} (got {load.acked_since(since)})",
    )


def warm_up(cluster: Cluster, load: WriteLoad) -> None:
    cluster.wait_for(
        lambda: load.ack_count() >= WARM_UP_ACKS, what=f"{WARM_UP_ACKS} writes before the fault"
    )


def wait_converged(cluster: Cluster, names: list[str]) -> list[cluster_pb2.NodeStatus]:
    """Wait until ``names`` hold the same board (digest) at the same, fully committed seq."""
    seen: list[cluster_pb2.NodeStatus] = []

    def converged() -> list[cluster_pb2.NodeStatus] | None:
        seen[:] = [cluster.node_status(name) for name in names]
        same = len({(s.applied_seq, s.digest) for s in seen}) == 1
        committed = all(s.committed_seq == s.applied_seq for s in seen)
        return list(seen) if same and committed else None

    def describe() -> str:
        rows = [f"{s.node_id}: {s.role} applied={s.applied_seq} committed={s.committed_seq} "
                f"digest={s.digest[:12]}" for s in seen]  # fmt: skip
        return f"{names} to converge; last seen: {rows}"

    return cluster.wait_for(converged, what=describe)


def tail_messages(cluster: Cluster, topic_id: int) -> list[pb.Message]:
    """The topic's full content, read page by page at the current tail."""

    def read() -> list[pb.Message]:
        tail = cluster.cluster_state().tail  # by address: a process name need not be its id
        return read_all_messages(pb_grpc.MessageBoardStub(cluster.channel(tail.address)), topic_id)

    return cluster.wait_for(read, what=f"reading topic {topic_id} at the tail")


def finish(cluster: Cluster, load: WriteLoad, topic_id: int, names: list[str]) -> None:
    """After the load stopped: every write was acknowledged in time, the nodes converge and
    the tail holds every acknowledged write exactly once."""
    assert not load.failures, f"writes not acknowledged: {load.failures[:5]}"
    wait_converged(cluster, names)
    load.verify(tail_messages(cluster, topic_id))


def report_stall(what: str, load: WriteLoad, fault_at: float, resumed_at: float) -> float:
    stall = load.longest_gap(fault_at, resumed_at)
    timing = "default" if timings() else "test"
    print(f"write stall after {what} ({timing} timings): {stall * 1000:.0f} ms")
    return stall
