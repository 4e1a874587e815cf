"""Chain replication with real node processes (issue 3).

- Concurrent writers through the client library: every node ends with the same board and
  log, every acknowledged write is at the tail exactly once, ids follow real time.
- A node joining a chain that holds a long log catches up as a learner while writes keep
  being acknowledged, and is promoted to tail only once it caught up.
- A write retried with the same x-request-id at a new head (after a SIGKILL of the old
  one), or after the chain could not commit it in time (UNAVAILABLE), returns the original
  result and is applied once.
"""

from __future__ import annotations

import time
import uuid

import grpc
import pytest
from harness import Cluster
from load import Ack, WriteLoad
from scenario import finish, start_chain, tail_messages, wait_converged

from mboard.api import razpravljalnica_pb2 as pb
from mboard.node.chain import CAUGHT_UP_LAG

pytestmark = pytest.mark.timeout(400)

# Failure detection is not under test in the load tests: a loaded machine must not make the
# control plane remove a busy node in the middle of them.
STEADY_TIMINGS = {"failure_timeout": 10.0, "lease": 5.0}
WRITERS = 24
WRITES = 2000
# The log a joining node has to catch up on. Made by concurrent clients as fast as the
# machine allows; see BACKLOG_SECONDS.
BACKLOG = 20_000
# A bound on making the backlog: on a slow machine the test goes on with what was made by
# then, as long as it is at least MIN_BACKLOG.
BACKLOG_SECONDS = 60.0
MIN_BACKLOG = 5_000
LOAD_SECONDS = 120.0
RPC_TIMEOUT = 10.0


def assert_ids_follow_real_time(acks: list[Ack]) -> None:
    """A write acknowledged before another one was sent has the smaller id."""
    acked_in_order = sorted(acks, key=lambda ack: ack.at)
    done_before = 0  # highest id acknowledged before the current write was sent
    i = 0
    for ack in sorted(acks, key=lambda ack: ack.sent_at):
        while i < len(acked_in_order) and acked_in_order[i].at < ack.sent_at:
            done_before = max(done_before, acked_in_order[i].message.id)
            i += 1
        assert ack.message.id > done_before, (
            f"{ack.request.text} got id {ack.message.id}, but id {done_before} had been "
            "acknowledged before it was sent"
        )


def test_concurrent_writers_leave_every_node_identical(cluster: Cluster) -> None:
    nodes = ["n1", "n2", "n3"]
    user_id, topic_id = start_chain(cluster, nodes, **STEADY_TIMINGS)
    load = WriteLoad(
        cluster.control_address, topic_id, user_id,
        writers=WRITERS, max_writes=WRITES, max_seconds=LOAD_SECONDS, pause=0.0, tag="w",
    )  # fmt: skip
    load.start()
    load.join()  # ends by itself: all WRITES sent, or LOAD_SECONDS passed
    assert load.failures == []  # a healthy chain answers every write
    assert load.ack_count() > WRITERS
    finish(cluster, load, topic_id, nodes)  # same digest and applied_seq everywhere
    statuses = wait_converged(cluster, nodes)
    # One entry per write: the users and topics of start_chain, then every post.
    assert statuses[0].applied_seq == 2 + load.ack_count()
    assert_ids_follow_real_time(load.acks)
    assert cluster.chain() == nodes  # nobody was dropped on the way


def test_joining_node_catches_up_as_a_learner_while_writes_go_on(cluster: Cluster) -> None:
    user_id, topic_id = start_chain(cluster, ["n1", "n2"], **STEADY_TIMINGS)
    backlog = WriteLoad(
        cluster.control_address, topic_id, user_id,
        writers=32, max_writes=BACKLOG, max_seconds=BACKLOG_SECONDS, pause=0.0, tag="backlog",
    )  # fmt: skip
    started = time.monotonic()
    backlog.start()
    backlog.join()
    assert not backlog.failures, f"backlog writes failed: {backlog.failures[:3]}"
    made = cluster.node_status("n2", with_digest=False).applied_seq
    print(f"backlog: {made} entries in {time.monotonic() - started:.0f}s")
    assert made >= MIN_BACKLOG, f"only {made} entries in {BACKLOG_SECONDS:g}s"

    with WriteLoad(
        cluster.control_address, topic_id, user_id, writers=8, max_seconds=LOAD_SECONDS, tag="live"
    ) as load:
        cluster.wait_for(lambda: load.ack_count() >= 20, what="the live load to get going")
        cluster.start_node("n3", wait=False)  # the looks below start at once
        # While n3 is a learner: (when, its applied_seq, the tail's committed_seq then).
        seen_learning: list[tuple[float, int, int]] = []

        def promoted() -> bool:
            chain = cluster.chain()
            # Asked after the chain: if n3 was in the chain then, it had caught up by now.
            status = cluster.node_status("n3", with_digest=False)
            if "n3" in chain or status.role == "tail":
                # Promoted only once it held (nearly) everything the chain had when it joined.
                assert status.applied_seq >= made - CAUGHT_UP_LAG, (chain, status)
            if status.role == "learner":
                tail = cluster.node_status("n2", with_digest=False)
                seen_learning.append((time.monotonic(), status.applied_seq, tail.committed_seq))
            return status.role == "tail" and chain == ["n1", "n2", "n3"]

        cluster.wait_for(
            promoted, timeout=LOAD_SECONDS, what="n3 to catch up and become tail", interval=0.005
        )
        promoted_at = time.monotonic()
        assert seen_learning, "n3 was never seen as a learner"
        # The chain committed entries the learner did not hold yet: commits never wait for
        # it. (It catches up fast, some 20,000 entries in a fraction of a second: hence the
        # quick looks, and a look or two may be all the test gets on a busy machine.)
        assert any(applied < committed for _, applied, committed in seen_learning), seen_learning
        first_at, first_applied, _ = seen_learning[0]
        acked_meanwhile = sum(1 for ack in load.acks if first_at <= ack.at <= promoted_at)
        print(
            f"n3 seen learning {len(seen_learning)} times from seq {first_applied}; "
            f"{acked_meanwhile} writes acknowledged until its promotion "
            f"{promoted_at - first_at:.2f}s later"
        )
        cluster.wait_for(
            lambda: load.acked_since(promoted_at) >= 20,
            what="writes through the chain with its new tail",
        )
    finish(cluster, load, topic_id, ["n1", "n2", "n3"])
    backlog.verify(tail_messages(cluster, topic_id))


def test_long_texts_cross_the_links_and_the_pages_within_grpc_message_limits(
    cluster: Cluster,
) -> None:
    """A log of long texts: 400 posts of 4096 four-byte characters, some 6.5 MB. A learner
    catches up on it, though 500 entries would be one stream message over gRPC's 4 MiB;
    and a page of the page maximum (1000) comes in pieces a default client accepts."""
    user_id, topic_id = start_chain(cluster, ["n1"], **STEADY_TIMINGS)
    text = "\N{GRINNING FACE}" * 4096
    head = cluster.board("n1")
    posted = [
        head.PostMessage(
            pb.PostMessageRequest(topic_id=topic_id, user_id=user_id, text=text),
            timeout=RPC_TIMEOUT,
        ).id
        for _ in range(400)
    ]
    cluster.start_node("n2")
    cluster.wait_chain(["n1", "n2"])
    tail = cluster.board("n2")  # over a channel with gRPC's default message limits
    pages, start = [], 0
    while page := tail.GetMessages(
        pb.GetMessagesRequest(topic_id=topic_id, from_message_id=start, limit=0),
        timeout=RPC_TIMEOUT,
    ).messages:
        pages.append([message.id for message in page])
        start = page[-1].id + 1
    assert [id_ for page in pages for id_ in page] == posted
    assert len(pages) > 1  # one page would be 6.5 MB: the client would refuse it


def test_retry_at_a_new_head_returns_the_original_result(cluster: Cluster) -> None:
    user_id, topic_id = start_chain(cluster, ["n1", "n2", "n3"])
    post = pb.PostMessageRequest(topic_id=topic_id, user_id=user_id, text="before the crash")
    create = pb.CreateUserRequest(name="Carol")
    ids = {"PostMessage": str(uuid.uuid4()), "CreateUser": str(uuid.uuid4())}

    def call(node: str, method: str, request) -> object:
        metadata = (("x-request-id", ids[method]),)
        return getattr(cluster.board(node), method)(request, timeout=RPC_TIMEOUT, metadata=metadata)

    posted = call("n1", "PostMessage", post)
    carol = call("n1", "CreateUser", create)  # acknowledged: committed at the tail
    cluster.kill("n1")
    cluster.wait_chain(["n2", "n3"])
    applied = cluster.node_status("n2", with_digest=False).applied_seq

    def retried(method: str, request) -> object:
        # The new head may take a moment to learn it is the head (FAILED_PRECONDITION).
        return cluster.wait_for(
            lambda: call("n2", method, request), what=f"{method} retried at the new head n2"
        )

    assert retried("PostMessage", post) == posted
    assert retried("CreateUser", create) == carol  # not ALREADY_EXISTS: it was not re-run
    assert cluster.node_status("n2", with_digest=False).applied_seq == applied
    texts = [m.text for m in tail_messages(cluster, topic_id)]
    assert texts.count(post.text) == 1
    # The new head goes on from there, with new ids.
    fresh = cluster.board("n2").PostMessage(post, timeout=RPC_TIMEOUT)
    assert fresh.id > posted.id
    with pytest.raises(grpc.RpcError) as taken:
        cluster.board("n2").CreateUser(create, timeout=RPC_TIMEOUT)
    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
    wait_converged(cluster, ["n2", "n3"])


def test_write_not_committed_in_time_is_unavailable_and_safe_to_retry(cluster: Cluster) -> None:
    # The frozen tail must stay in the chain: far longer failure timeout than write timeout.
    nodes = ["n1", "n2", "n3"]
    user_id, topic_id = start_chain(cluster, nodes, failure_timeout=60.0, lease=5.0)
    post = pb.PostMessageRequest(topic_id=topic_id, user_id=user_id, text="while frozen")
    metadata = (("x-request-id", str(uuid.uuid4())),)
    head = cluster.board("n1")

    cluster.pause("n3")  # the head and the middle apply the post: it is not committed
    try:
        with pytest.raises(grpc.RpcError) as timed_out:
            head.PostMessage(post, timeout=60, metadata=metadata)
        # A retry finds the entry in the log, and waits for its commit all the same.
        with pytest.raises(grpc.RpcError) as retried_frozen:
            head.PostMessage(post, timeout=60, metadata=metadata)
    finally:
        cluster.resume("n3")
    for refused in (timed_out, retried_frozen):
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "same x-request-id" in refused.value.details()

    def retry() -> pb.Message:
        return head.PostMessage(post, timeout=RPC_TIMEOUT, metadata=metadata)

    # The head applied it before it gave up waiting: the retry waits for that entry's commit.
    posted = cluster.wait_for(retry, what="the retried write to be acknowledged")
    assert posted.text == post.text
    assert retry() == posted
    assert [m.text for m in tail_messages(cluster, topic_id)].count(post.text) == 1
    statuses = wait_converged(cluster, nodes)
    assert statuses[0].applied_seq == 3  # user, topic, and the post once
