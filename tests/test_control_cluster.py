"""The control plane with real nodes: joins, failures, rejoins and its own restart."""

from __future__ import annotations

import json
import shutil
import signal
import time

from harness import Cluster
from test_client_e2e import mboard

from mboard.api import razpravljalnica_pb2 as pb


def serves_reads(cluster: Cluster, name: str) -> bool:
    return cluster.node_status(name, with_digest=False).serving_reads


def test_nodes_join_in_order_and_only_the_tail_serves_reads(cluster):
    cluster.start_chain(["n1", "n2", "n3"])
    status = cluster.control_status()
    assert [(m.node.node_id, m.role) for m in status.members] == [
        ("n1", "head"),
        ("n2", "middle"),
        ("n3", "tail"),
    ]
    cluster.wait_for(lambda: serves_reads(cluster, "n3"), what="a lease at the tail n3")
    assert not serves_reads(cluster, "n1") and not serves_reads(cluster, "n2")


def test_killed_node_is_removed_and_rejoins_as_the_tail(cluster):
    cluster.start_chain(["n1", "n2", "n3"])
    cluster.kill("n2", signal.SIGKILL)
    cluster.wait_chain(["n1", "n3"])
    cluster.restart("n2")
    cluster.wait_chain(["n1", "n3", "n2"])
    cluster.wait_for(lambda: serves_reads(cluster, "n2"), what="a lease at the new tail n2")


def test_paused_tail_is_replaced_and_comes_back_after_resuming(cluster):
    cluster.start_chain(["n1", "n2"])
    cluster.pause("n2")
    cluster.wait_chain(["n1"])
    cluster.wait_for(lambda: serves_reads(cluster, "n1"), what="a lease at the new tail n1")
    cluster.resume("n2")
    cluster.wait_chain(["n1", "n2"])


def test_control_plane_restart_keeps_the_running_chain(cluster):
    # Nodes reconnect with gRPC's backoff (1 s, then 1.6 s, ...): give them the time.
    failure_timeout = 4.0
    cluster.start_control(failure_timeout=failure_timeout)
    for name in ("n1", "n2", "n3"):
        cluster.start_node(name)
    before = cluster.wait_chain(["n1", "n2", "n3"])
    cluster.restart("control")
    restarted = time.monotonic()
    # Watch for longer than the failure timeout: the members heartbeat back in, nobody is
    # removed and no epoch is spent.
    while time.monotonic() < restarted + failure_timeout + 1:
        state = cluster.cluster_state()
        assert (state.epoch, list(state.chain)) == (before.epoch, list(before.chain))
        time.sleep(0.1)
    assert all(m.heartbeat_age_s < failure_timeout for m in cluster.control_status().members)
    cluster.wait_for(lambda: serves_reads(cluster, "n3"), what="a lease at the tail n3")


def test_members_restarting_in_any_order_rebuild_the_chain(cluster):
    # A long failure timeout: the restarted members are re-registrations, not new joins.
    cluster.start_control(failure_timeout=30, lease=1)
    for name in ("n1", "n2", "n3"):
        cluster.start_node(name)
    cluster.wait_chain(["n1", "n2", "n3"])
    for name in ("n1", "n2", "n3"):
        cluster.kill(name)
    # Who becomes head depends on how fast the deaths are noticed (a neighbour's report or
    # the timeout); what matters is that every member gets back into one chain.
    for name in ("n3", "n1", "n2"):
        cluster.restart(name)
        cluster.wait_for(lambda n=name: cluster.node_status(n, False).epoch > 0, what=name)
    cluster.wait_for(lambda: len(cluster.chain()) == 3, timeout=10, what="all three in the chain")
    assert sorted(cluster.chain()) == ["n1", "n2", "n3"]


def test_a_last_member_back_without_its_data_waits_for_the_operator(cluster):
    cluster.start_chain(["n1", "n2"])
    head = cluster.board("n1")
    user = head.CreateUser(pb.CreateUserRequest(name="ann"))
    topic = head.CreateTopic(pb.CreateTopicRequest(name="t"))
    for n in range(5):
        head.PostMessage(pb.PostMessageRequest(topic_id=topic.id, user_id=user.id, text=f"{n}"))
    # The control plane hears of the commit point with the heartbeats.
    cluster.wait_for(
        lambda: all(m.committed_seq == 7 for m in cluster.control_status().members),
        what="the commit point reported",
    )
    cluster.stop("n2")  # the tail leaves, then the head: n1 is the chain's last member
    cluster.wait_chain(["n1"])
    cluster.stop("n1")
    shutil.rmtree(cluster.dir / "n1")  # ...and comes back with an empty disk

    cluster.restart("n2")
    cluster.restart("n1")

    def registered():
        config = cluster.control_status().config
        members = {n.node_id for n in [*config.chain, *config.learners]}
        return config if members == {"n1", "n2"} else None

    config = cluster.wait_for(registered, what="n1 and n2 registered")
    # As head, n1 would make n2 drop the 7 entries it holds to match its empty log.
    assert list(config.chain) == []
    assert cluster.node_status("n2", with_digest=False).applied_seq == 7

    # `mboard status` shows the operator who holds what...
    status = mboard("status", "--control", cluster.control_address, "--json")
    rows = {row["node_id"]: row for row in json.loads(status.stdout)["nodes"]}
    assert {name: (row["role"], row["applied_seq"]) for name, row in rows.items()} == {
        "n1": ("standby", 0),
        "n2": ("standby", 7),
    }
    # ...who gives up on n1's data and restarts the chain from n2, which has it all.
    restart = ["restart-chain", "--control", cluster.control_address]
    result = mboard(*restart, "n2")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "restarted the chain from n2 at seq 7\n"
    cluster.wait_chain(["n2", "n1"])  # n1 may be promoted just short of n2's log: wait

    def converged():
        statuses = [cluster.node_status(name) for name in ("n2", "n1")]
        return statuses if [s.applied_seq for s in statuses] == [7, 7] else None

    head, tail = cluster.wait_for(converged, what="n1 caught up with n2")
    assert head.digest == tail.digest

    again = mboard(*restart, "n1")
    assert again.returncode == 1
    assert (
        again.stderr
        == "error: FAILED_PRECONDITION: the chain is running (head n2): nothing to restart\n"
    )
