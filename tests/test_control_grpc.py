"""The real control plane process over gRPC, with fake nodes served from the test."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from google.protobuf import empty_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from harness import CONTROL_DEFAULTS, Cluster

from mboard.api import cluster_pb2, cluster_pb2_grpc
from mboard.api import razpravljalnica_pb2 as pb

FAILURE_TIMEOUT = CONTROL_DEFAULTS["failure_timeout"]


class FakeNode(cluster_pb2_grpc.NodeServicer):
    """Answers PushConfig (remembering the epochs) and Status, nothing else."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.pushed: list[int] = []
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        cluster_pb2_grpc.add_NodeServicer_to_server(self, self._server)
        port = self._server.add_insecure_port("127.0.0.1:0")
        self.info = pb.NodeInfo(node_id=node_id, address=f"127.0.0.1:{port}")
        self._server.start()

    def PushConfig(self, request, context):
        with self._lock:
            self.pushed.append(request.epoch)
        return empty_pb2.Empty()

    def Status(self, request, context):
        return cluster_pb2.NodeStatus(node_id=self.node_id, address=self.info.address)

    def pushed_epochs(self) -> list[int]:
        with self._lock:
            return list(self.pushed)

    def stop(self) -> None:
        self._server.stop(grace=None).wait()


@pytest.fixture
def fake_nodes() -> Iterator[dict[str, FakeNode]]:
    nodes: dict[str, FakeNode] = {}
    yield nodes
    for node in nodes.values():
        node.stop()


def fake(nodes: dict[str, FakeNode], node_id: str) -> FakeNode:
    nodes[node_id] = FakeNode(node_id)
    return nodes[node_id]


def register(cluster: Cluster, node: FakeNode) -> cluster_pb2.RegisterReply:
    request = cluster_pb2.RegisterRequest(node=node.info)
    return cluster.control_stub().Register(request, timeout=2)


def heartbeat(cluster: Cluster, node: FakeNode, epoch: int = 0) -> cluster_pb2.HeartbeatReply:
    request = cluster_pb2.HeartbeatRequest(
        node_id=node.node_id, epoch=epoch, address=node.info.address
    )
    return cluster.control_stub().Heartbeat(request, timeout=2)


def leave(cluster: Cluster, node: FakeNode, epoch: int) -> None:
    request = cluster_pb2.LeaveRequest(node_id=node.node_id, epoch=epoch, address=node.info.address)
    cluster.control_stub().Leave(request, timeout=2)


def ids(nodes) -> list[str]:
    return [n.node_id for n in nodes]


def test_registered_node_becomes_head_and_tail(cluster, fake_nodes):
    cluster.start_control()
    state = cluster.cluster_state()
    assert (state.epoch, list(state.chain)) == (0, [])
    assert state.head == pb.NodeInfo() and state.tail == pb.NodeInfo()

    n1 = fake(fake_nodes, "n1")
    reply = register(cluster, n1)
    assert reply.config.epoch == 1
    assert list(reply.config.chain) == [n1.info]
    assert len(reply.cluster_secret) == 32
    assert reply.heartbeat_interval_s == CONTROL_DEFAULTS["heartbeat_interval"]
    state = cluster.cluster_state()
    assert (state.epoch, state.head, state.tail, list(state.chain)) == (
        1,
        n1.info,
        n1.info,
        [n1.info],
    )

    status = cluster.control_status()
    assert [(m.node.node_id, m.role) for m in status.members] == [("n1", "head+tail")]
    assert status.control_address == cluster.control_address
    assert heartbeat(cluster, n1, epoch=1).lease_s == CONTROL_DEFAULTS["lease"]
    cluster.wait_for(lambda: n1.pushed_epochs() == [1], what="epoch 1 pushed to n1")


def test_joiners_queue_as_learners_and_every_config_is_pushed_in_order(cluster, fake_nodes):
    cluster.start_control()
    nodes = [fake(fake_nodes, f"n{i}") for i in range(1, 5)]
    for node in nodes:
        register(cluster, node)
    status = cluster.control_status()
    assert ids(status.config.chain) == ["n1"]
    assert ids(status.config.learners) == ["n2", "n3", "n4"]
    assert heartbeat(cluster, nodes[1]).lease_s == 0  # a learner never gets a lease
    assert heartbeat(cluster, nodes[0]).lease_s > 0  # the tail: it may now hand over

    stub = cluster.control_stub()
    stub.ReportCaughtUp(cluster_pb2.CaughtUpRequest(epoch=4, tail_id="n1", learner_id="n2"))
    stub.ReportCaughtUp(cluster_pb2.CaughtUpRequest(epoch=4, tail_id="n1", learner_id="n3"))
    state = cluster.cluster_state()
    assert (ids(state.chain), state.epoch) == (["n1", "n2"], 5)

    # Each node gets configs in increasing epoch order, ending with the current one.
    for node in nodes:
        cluster.wait_for(
            lambda node=node: node.pushed_epochs()[-1:] == [5], what=f"epoch 5 at {node.node_id}"
        )
        assert node.pushed_epochs() == sorted(set(node.pushed_epochs()))


def test_silent_node_is_removed_after_the_failure_timeout(cluster, fake_nodes):
    cluster.start_control()
    n1, n2 = fake(fake_nodes, "n1"), fake(fake_nodes, "n2")
    register(cluster, n1)
    register(cluster, n2)
    last_beat = time.monotonic()
    heartbeat(cluster, n1)
    cluster.wait_for(lambda: ids(cluster.cluster_state().chain) == [], what="n1 removed")
    assert time.monotonic() - last_beat >= FAILURE_TIMEOUT
    status = cluster.control_status()
    assert ids(status.config.chain) == [] and ids(status.config.learners) == []
    assert heartbeat(cluster, n1).unknown


def test_report_failure_removes_an_unreachable_suspect_at_once(cluster, fake_nodes):
    # A long failure timeout: only the report can explain a quick removal.
    cluster.start_control(failure_timeout=60, lease=1)
    n1, n2, n3 = (fake(fake_nodes, f"n{i}") for i in range(1, 4))
    for node in (n1, n2, n3):
        register(cluster, node)
    stub = cluster.control_stub()

    stub.ReportFailure(cluster_pb2.FailureReport(epoch=3, reporter_id="n1", suspect_id="n2"))
    assert cluster.cluster_state().epoch == 3  # n2 answers: nothing happens

    n2.stop()
    stub.ReportFailure(cluster_pb2.FailureReport(epoch=3, reporter_id="n1", suspect_id="n2"))
    status = cluster.control_status()
    assert status.config.epoch == 4
    assert ids(status.config.learners) == ["n3"]

    stub.Leave(cluster_pb2.LeaveRequest(node_id="n3"))
    assert ids(cluster.control_status().config.learners) == []


def test_restart_keeps_epoch_members_and_secret(cluster, fake_nodes):
    cluster.start_control()
    n1, n2 = fake(fake_nodes, "n1"), fake(fake_nodes, "n2")
    secret = register(cluster, n1).cluster_secret
    register(cluster, n2)
    before = cluster.control_status().config

    cluster.restart("control")
    assert cluster.control_status().config == before
    # Nodes that were members are still known: their heartbeats are not refused.
    assert not heartbeat(cluster, n1).unknown
    n3 = fake(fake_nodes, "n3")
    reply = register(cluster, n3)
    assert reply.config.epoch == before.epoch + 1
    assert reply.cluster_secret == secret


def test_health_and_reflection(cluster):
    cluster.start_control()
    channel = cluster.channel(cluster.control_address)
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "razpravljalnica.ControlPlane", "mboard.cluster.Control"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert {"razpravljalnica.ControlPlane", "mboard.cluster.Control"} <= set(services)


def test_restart_chain_names_what_stops_it(cluster, fake_nodes):
    cluster.start_control()
    stub = cluster.control_stub()

    def restart(node_id: str) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as refused:
            stub.RestartChain(cluster_pb2.RestartChainRequest(node_id=node_id), timeout=2)
        return refused.value

    refused = restart("n1")
    assert refused.code() == grpc.StatusCode.NOT_FOUND
    assert refused.details() == "n1 is not waiting for the chain (waiting: none)"
    register(cluster, fake(fake_nodes, "n1"))
    refused = restart("n1")
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert refused.details() == "the chain is running (head n1): nothing to restart"


def test_register_without_an_id_or_address_is_refused(cluster):
    cluster.start_control()
    for info in (pb.NodeInfo(address="127.0.0.1:1"), pb.NodeInfo(node_id="n1")):
        with pytest.raises(grpc.RpcError) as refused:
            cluster.control_stub().Register(cluster_pb2.RegisterRequest(node=info), timeout=2)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "node.node_id and node.address" in refused.value.details()
    assert cluster.control_status().config == cluster_pb2.ChainConfig()


def test_a_stale_leave_does_not_end_the_lease_of_the_nodes_new_run(cluster, fake_nodes):
    # Long timings: only the Leave could explain a lease for n1.
    cluster.start_control(failure_timeout=60, lease=30)
    n1, n2 = fake(fake_nodes, "n1"), fake(fake_nodes, "n2")
    register(cluster, n1)
    register(cluster, n2)
    assert heartbeat(cluster, n1, epoch=2).lease_s > 0
    cluster.control_stub().ReportCaughtUp(
        cluster_pb2.CaughtUpRequest(epoch=2, tail_id="n1", learner_id="n2"), timeout=2
    )
    cluster.wait_for(lambda: heartbeat(cluster, n2, epoch=3).lease_s > 0, what="lease for n2")
    n2.stop()  # it hears no more pushes: only its Leave could say its lease is over
    # A Leave n2 sent in epoch 2, arriving late: its run that holds the lease never left.
    cluster.control_stub().Leave(cluster_pb2.LeaveRequest(node_id="n2", epoch=2), timeout=2)
    assert ids(cluster.cluster_state().chain) == ["n1"]
    assert heartbeat(cluster, n1, epoch=4).lease_s == 0


def test_an_id_a_live_node_holds_is_refused_to_a_node_elsewhere(cluster, fake_nodes):
    cluster.start_control(failure_timeout=60)
    member = fake(fake_nodes, "n1")
    epoch = register(cluster, member).config.epoch
    assert heartbeat(cluster, member, epoch).lease_s > 0
    second = fake_nodes["second n1"] = FakeNode("n1")  # the same id, another address
    with pytest.raises(grpc.RpcError) as refused:
        register(cluster, second)
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert refused.value.details() == (
        f"node id n1 is taken by a live node at {member.info.address}: "
        "give this node another id, or stop that one first"
    )
    # Its heartbeats get no lease and count for nothing, its Leave removes no one.
    reply = heartbeat(cluster, second, epoch)
    assert (reply.unknown, reply.lease_s) == (True, 0)
    leave(cluster, second, epoch)
    status = cluster.control_status()
    assert status.config.epoch == epoch
    assert [m.node for m in status.members] == [member.info]
    assert heartbeat(cluster, member, epoch).lease_s > 0


def test_an_id_whose_node_is_gone_may_register_from_elsewhere(cluster, fake_nodes):
    cluster.start_control(failure_timeout=60)
    old = fake(fake_nodes, "n1")
    register(cluster, old)
    old.stop()  # still a member: only the failure timeout (a minute) would remove it
    new = fake_nodes["n1 elsewhere"] = FakeNode("n1")
    epoch = register(cluster, new).config.epoch
    assert [m.node for m in cluster.control_status().members] == [new.info]
    assert heartbeat(cluster, new, epoch).lease_s > 0
    # The old run, were it only stopped for a while: not the member any more.
    reply = heartbeat(cluster, old, epoch)
    assert (reply.unknown, reply.lease_s) == (True, 0)


def test_a_probe_answered_by_another_node_is_no_sign_of_life(cluster, fake_nodes):
    cluster.start_control(failure_timeout=60)
    n1, n2 = fake(fake_nodes, "n1"), fake(fake_nodes, "n2")
    register(cluster, n1)
    register(cluster, n2)
    # n2's address now answers as some other node: n2 itself is gone.
    n2.node_id = "n9"
    cluster.control_stub().ReportFailure(
        cluster_pb2.FailureReport(epoch=2, reporter_id="n1", suspect_id="n2"), timeout=2
    )
    assert ids(cluster.control_status().config.learners) == []
