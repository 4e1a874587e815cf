"""What operators rely on: a graceful stop shrinks the chain at once, and grpc.health.v1
answers SERVING only for a node that is in the chain (so caught up)."""

from __future__ import annotations

import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from harness import Cluster
from scenario import finish, report_stall, start_chain, wait_acks, warm_up, write_load

from mboard.api import razpravljalnica_pb2 as pb

# Long enough that a shrink within it cannot be the failure detector's doing.
SLOW_FAILURE_TIMEOUT = 10.0
STATUS = health_pb2.HealthCheckResponse


def health(cluster: Cluster, name: str) -> int:
    stub = health_pb2_grpc.HealthStub(cluster.channel(cluster.address(name)))
    return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status


def first_watched(cluster: Cluster, address: str) -> int:
    """The first status Health.Watch streams (standard tools watch as well as check)."""
    stub = health_pb2_grpc.HealthStub(cluster.channel(address))
    stream = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=5)
    try:
        return next(stream).status
    finally:
        stream.cancel()


def role(cluster: Cluster, name: str) -> str | None:
    members = cluster.control_status().members
    return next((m.role for m in members if m.node.node_id == name), None)


def test_sigterm_on_the_middle_shrinks_the_chain_at_once_and_loses_nothing(cluster):
    user_id, topic_id = start_chain(
        cluster, failure_timeout=SLOW_FAILURE_TIMEOUT, lease=SLOW_FAILURE_TIMEOUT / 2
    )
    with write_load(cluster, user_id, topic_id) as load:
        warm_up(cluster, load)
        stopped_at = time.monotonic()
        assert cluster.stop("n2") == 0, cluster.logs()
        cluster.wait_chain(["n1", "n3"], timeout=SLOW_FAILURE_TIMEOUT / 2)
        shrunk_after = time.monotonic() - stopped_at
        wait_acks(cluster, load, time.monotonic(), "after n2 left")
        stall = report_stall("SIGTERM of the middle", load, stopped_at, time.monotonic())
    print(f"chain shrank {shrunk_after * 1000:.0f} ms after SIGTERM")
    assert stall < SLOW_FAILURE_TIMEOUT / 2
    finish(cluster, load, topic_id, ["n1", "n3"])


def test_sigterm_on_the_head_under_load_fails_no_write(cluster):
    # Writes in flight at the head when it stops end with a status the client retries at
    # the new head (with the same request id), not with CANCELLED.
    user_id, topic_id = start_chain(
        cluster, failure_timeout=SLOW_FAILURE_TIMEOUT, lease=SLOW_FAILURE_TIMEOUT / 2
    )
    with write_load(cluster, user_id, topic_id, writers=16, pause=0.0) as load:
        warm_up(cluster, load)
        assert cluster.stop("n1") == 0, cluster.logs()
        cluster.wait_chain(["n2", "n3"], timeout=SLOW_FAILURE_TIMEOUT / 2)
        wait_acks(cluster, load, time.monotonic(), "after the head left")
    finish(cluster, load, topic_id, ["n2", "n3"])


def test_health_is_serving_only_in_the_chain(cluster):
    # A long failure timeout: n1 stays in the chain while it is paused below.
    cluster.start_control(failure_timeout=30, lease=1)
    cluster.start_node("n1")
    cluster.wait_chain(["n1"])
    board = cluster.board("n1")
    user = board.CreateUser(pb.CreateUserRequest(name="health"), timeout=10)
    topic = board.CreateTopic(pb.CreateTopicRequest(name="health"), timeout=10)
    for i in range(20):
        board.PostMessage(pb.PostMessageRequest(topic_id=topic.id, user_id=user.id, text=f"{i}"))
    assert health(cluster, "n1") == STATUS.SERVING

    # Before joining: the control plane cannot hear it.
    cluster.pause("control")
    try:
        cluster.start_node("n2")
        assert health(cluster, "n2") == STATUS.NOT_SERVING
        # While catching up: n1, which would stream it the log, is stopped.
        cluster.pause("n1")
    finally:
        cluster.resume("control")
    try:
        cluster.wait_for(lambda: role(cluster, "n2") == "learner", what="n2 as a learner")
        assert health(cluster, "n2") == STATUS.NOT_SERVING
    finally:
        cluster.resume("n1")

    # In the chain: caught up and promoted.
    cluster.wait_chain(["n1", "n2"])
    cluster.wait_for(lambda: health(cluster, "n2") == STATUS.SERVING, what="n2 SERVING")
    assert health(cluster, "n1") == STATUS.SERVING
    assert first_watched(cluster, cluster.address("n2")) == STATUS.SERVING


def test_control_plane_serves_health(cluster):
    cluster.start_control()
    stub = health_pb2_grpc.HealthStub(cluster.channel(cluster.control_address))
    try:
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    except grpc.RpcError as error:
        raise AssertionError(f"health check failed: {error}") from error
    assert reply.status == STATUS.SERVING
    assert first_watched(cluster, cluster.control_address) == STATUS.SERVING
