"""A real node process against a control plane faked in the test: what the node's heartbeats
tell the control plane, and how it counts the read lease a heartbeat's reply grants."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
import pytest
from harness import Cluster, free_port

from mboard.api import cluster_pb2, cluster_pb2_grpc
from mboard.api import razpravljalnica_pb2 as pb


class FakeControl(cluster_pb2_grpc.ControlServicer):
    """Registers anyone into ``config`` and answers every heartbeat with it; ``answer(n)``
    says how to answer the n-th heartbeat (from 0): (lease_s, seconds to wait first). Once
    ``forget`` is set, heartbeats are answered as from a node it does not know."""

    def __init__(
        self,
        config: cluster_pb2.ChainConfig,
        heartbeat_interval_s: float,
        answer: Callable[[int], tuple[float, float]] = lambda _n: (0.0, 0.0),
    ) -> None:
        self.config = config
        self.heartbeat_interval_s = heartbeat_interval_s
        self.answer = answer
        self.forget = False
        self._beats: list[tuple[cluster_pb2.HeartbeatRequest, float]] = []  # (request, answered)
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        cluster_pb2_grpc.add_ControlServicer_to_server(self, self._server)
        self.address = f"127.0.0.1:{self._server.add_insecure_port('127.0.0.1:0')}"
        self._server.start()

    def Register(self, request, context):
        return cluster_pb2.RegisterReply(
            config=self.config, heartbeat_interval_s=self.heartbeat_interval_s
        )

    def Heartbeat(self, request, context):
        with self._lock:
            lease_s, delay = self.answer(len(self._beats))
        time.sleep(delay)  # a slow control plane, on purpose
        with self._lock:
            self._beats.append((request, time.monotonic()))
        if self.forget:
            return cluster_pb2.HeartbeatReply(config=self.config, unknown=True)
        return cluster_pb2.HeartbeatReply(config=self.config, lease_s=lease_s)

    def heartbeats(self) -> list[tuple[cluster_pb2.HeartbeatRequest, float]]:
        with self._lock:
            return list(self._beats)

    def stop(self) -> None:
        self._server.stop(grace=None).wait()


@pytest.fixture
def fake_control() -> Iterator[Callable[..., FakeControl]]:
    started: list[FakeControl] = []

    def start(*args, **kwargs) -> FakeControl:
        started.append(FakeControl(*args, **kwargs))
        return started[-1]

    yield start
    for control in started:
        control.stop()


def node_info(node_id: str, address: str | None = None) -> pb.NodeInfo:
    # Without an address: a node that never sends anything (nothing listens there).
    return pb.NodeInfo(node_id=node_id, address=address or f"127.0.0.1:{free_port()}")


def test_a_promoted_learner_says_it_lacks_the_commits_until_it_has_them(
    cluster: Cluster, fake_control
) -> None:
    # n2 is promoted behind p1, which never sends it a word: n2 cannot know what p1
    # committed, so it must not tell the control plane it holds it (or it may head the chain).
    p1 = node_info("p1")
    config = cluster_pb2.ChainConfig(epoch=2, chain=[p1], learners=[node_info("n2")])
    control = fake_control(config, heartbeat_interval_s=0.2)
    address = cluster.start_node("n2", control=control.address)
    control.config = cluster_pb2.ChainConfig(epoch=3, chain=[p1, node_info("n2", address)])

    def beats_in_epoch_3() -> list[cluster_pb2.HeartbeatRequest] | None:
        beats = [request for request, _ in control.heartbeats() if request.epoch == 3]
        return beats if len(beats) >= 3 else None

    beats = cluster.wait_for(beats_in_epoch_3, what="heartbeats in epoch 3")
    assert [beat.holds_committed for beat in beats] == [False] * len(beats)


def test_a_lease_counts_from_when_the_heartbeat_was_sent(cluster: Cluster, fake_control) -> None:
    # The first heartbeat is answered 1.5 s late with a 2.5 s lease, later ones with none:
    # the control plane counts on the node serving no reads 2.5 s after it SENT it.
    control = fake_control(
        cluster_pb2.ChainConfig(epoch=1, chain=[node_info("n1")]),
        heartbeat_interval_s=3.0,  # the heartbeat's deadline too: longer than the delay
        answer=lambda n: (2.5, 1.5) if n == 0 else (0.0, 0.0),
    )
    cluster.start_node("n1", control=control.address)
    cluster.wait_for(lambda: cluster.node_status("n1", False).serving_reads, what="the lease")
    answered_at = control.heartbeats()[0][1]
    # Until an instant, not a condition: 1.75 s after the answer the lease counted from the
    # send (about 3.25 s ago) is over, one counted from the answer would still run.
    time.sleep(max(0.0, answered_at + 1.75 - time.monotonic()))
    assert not cluster.node_status("n1", False).serving_reads


def test_a_node_the_control_plane_no_longer_knows_stops_serving_reads_at_once(
    cluster: Cluster, fake_control
) -> None:
    # A long lease, then "unknown" (say another process took the node's id): the control
    # plane counts this node out, so it must not go on serving reads on the old lease.
    control = fake_control(
        cluster_pb2.ChainConfig(epoch=1, chain=[node_info("n1")]),
        heartbeat_interval_s=0.2,
        answer=lambda _n: (60.0, 0.0),
    )
    cluster.start_node("n1", control=control.address)
    cluster.wait_for(lambda: cluster.node_status("n1", False).serving_reads, what="the lease")
    control.forget = True
    cluster.wait_for(
        lambda: not cluster.node_status("n1", False).serving_reads,
        timeout=20,  # a third of the lease: only dropping it can explain the end
        what="the node to stop serving reads",
    )
