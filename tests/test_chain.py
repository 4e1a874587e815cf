"""The replication protocol (mboard.node.chain) over a fake in-memory transport.

Each FakeNode keeps its log as a list of (seq, epoch) and runs the real ChainState,
refuse_handshake and plan_resend; a link moves entries and acks between two of them the
way mboard.node.replication does over gRPC.
"""

from __future__ import annotations

import asyncio

import pytest

from mboard.api import cluster_pb2
from mboard.api import razpravljalnica_pb2 as pb
from mboard.node.chain import (
    CAUGHT_UP_LAG,
    PACE_IN_FLIGHT,
    PACE_S,
    ChainState,
    CommitWaiters,
    Position,
    Resend,
    plan_resend,
    position_in,
    refuse_handshake,
    send_pause,
)
from mboard.node.replication import RecentLog


def config(epoch: int, chain: list[str], learners: list[str] = ()) -> cluster_pb2.ChainConfig:
    info = lambda n: pb.NodeInfo(node_id=n, address=f"127.0.0.1:{5000 + int(n[1:])}")  # noqa: E731
    return cluster_pb2.ChainConfig(
        epoch=epoch, chain=[info(n) for n in chain], learners=[info(n) for n in learners]
    )


class FakeNode:
    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.log: list[tuple[int, int]] = []  # (seq, epoch)
        self.state = ChainState(node_id)

    @property
    def last_seq(self) -> int:
        return self.log[-1][0] if self.log else 0

    def epoch_at(self, seq: int) -> int | None:
        return self.log[seq - 1][1] if 0 < seq <= len(self.log) else None

    def append_as_head(self, count: int) -> None:
        assert self.state.position.is_head
        for _ in range(count):
            self.log.append((self.last_seq + 1, self.state.position.epoch))
        self.state.note_applied(self.last_seq)

    def reply_to(self, handshake: cluster_pb2.Handshake) -> cluster_pb2.HandshakeReply:
        reason = refuse_handshake(self.state.position, handshake)
        if reason:
            return cluster_pb2.HandshakeReply(accepted=False, reason=reason)
        return cluster_pb2.HandshakeReply(
            accepted=True,
            last_seq=self.last_seq,
            last_epoch=self.epoch_at(self.last_seq) or 0,
            committed_seq=self.state.committed_seq,
        )


def link(sender: FakeNode, receiver: FakeNode) -> list[tuple[int, int]] | str:
    """Handshake and resend; return what was sent, or the refusal reason."""
    handshake = cluster_pb2.Handshake(
        epoch=sender.state.position.epoch,
        sender_id=sender.node_id,
        last_seq=sender.last_seq,
        committed_seq=sender.state.committed_seq,
    )
    reply = receiver.reply_to(handshake)
    if not reply.accepted:
        return reply.reason
    plan = plan_resend(reply, sender.last_seq, sender.epoch_at(reply.last_seq))
    if plan.truncate_to is not None:
        del receiver.log[plan.truncate_to :]
        receiver.state.applied_seq = receiver.last_seq
    sent = sender.log[plan.next_seq - 1 :]
    receiver.log.extend(sent)
    if receiver.log:
        receiver.state.note_applied(receiver.last_seq)
    receiver.state.note_predecessor(sender.state.position.epoch, sender.state.committed_seq)
    sender.state.note_successor_ack(receiver.state.ack(), sent_seq=plan.next_seq - 1 + len(sent))
    return sent


def chain_of(*ids: str, epoch: int = 1) -> list[FakeNode]:
    nodes = [FakeNode(i) for i in ids]
    for node in nodes:
        node.state.adopt(config(epoch, list(ids)))
    nodes[-1].state.grant_lease(epoch, until=float("inf"))  # a new chain's tail commits once leased
    return nodes


# ---------------------------------------------------------------- positions


def test_positions_along_chain_and_learners():
    cfg = config(7, ["n1", "n2", "n3"], ["n4"])
    roles = {n: position_in(cfg, n) for n in ("n1", "n2", "n3", "n4", "n9")}
    assert [roles[n].role for n in ("n1", "n2", "n3", "n4", "n9")] == [
        "head", "middle", "tail", "learner", "standby",
    ]  # fmt: skip
    assert roles["n1"].predecessor is None and roles["n1"].successor.node_id == "n2"
    assert roles["n3"].successor.node_id == "n4" and roles["n3"].successor_is_learner
    assert roles["n4"].predecessor.node_id == "n3" and roles["n4"].successor is None
    assert position_in(config(1, ["n1"]), "n1").role == "head+tail"
    assert position_in(config(1, [], ["n2"]), "n2").role == "standby"


# ---------------------------------------------------------------- handshake


def test_receiver_refuses_a_sender_that_is_not_its_predecessor():
    position = position_in(config(3, ["n1", "n2", "n3"]), "n3")
    wrong = cluster_pb2.Handshake(epoch=3, sender_id="n1")
    assert "not the predecessor" in refuse_handshake(position, wrong)
    assert refuse_handshake(position, cluster_pb2.Handshake(epoch=3, sender_id="n2")) is None


def test_receiver_refuses_an_old_or_newer_epoch():
    position = position_in(config(3, ["n1", "n2"]), "n2")
    assert "epoch mismatch" in refuse_handshake(
        position, cluster_pb2.Handshake(epoch=2, sender_id="n1")
    )
    assert "epoch mismatch" in refuse_handshake(
        position, cluster_pb2.Handshake(epoch=4, sender_id="n1")
    )


def test_head_has_no_predecessor_and_accepts_nobody():
    position = position_in(config(1, ["n1", "n2"]), "n1")
    assert refuse_handshake(position, cluster_pb2.Handshake(epoch=1, sender_id="n2"))


# ------------------------------------------------------------------ resends


def test_resend_exactly_the_missing_suffix():
    head, tail = chain_of("n1", "n2")
    head.append_as_head(5)
    assert link(head, tail) == [(s, 1) for s in range(1, 6)]
    head.append_as_head(3)
    assert link(head, tail) == [(6, 1), (7, 1), (8, 1)]
    assert link(head, tail) == []  # nothing missing: nothing resent
    assert tail.log == head.log


def test_diverged_receiver_is_truncated_to_its_committed_prefix():
    # n1 was head in epoch 1 and assigned 4..6 that nobody else got; the chain moved on
    # with n2 as head in epoch 2, which assigned its own 4..5.
    reply = cluster_pb2.HandshakeReply(accepted=True, last_seq=6, last_epoch=1, committed_seq=3)
    plan = plan_resend(reply, my_last_seq=5, my_epoch_at=None)
    assert (plan.truncate_to, plan.next_seq) == (3, 4)
    # Same seq, different epoch: also diverged.
    reply = cluster_pb2.HandshakeReply(accepted=True, last_seq=5, last_epoch=1, committed_seq=3)
    assert plan_resend(reply, my_last_seq=5, my_epoch_at=2).truncate_to == 3
    # Same (seq, epoch): logs agree, continue after it.
    assert plan_resend(reply, my_last_seq=9, my_epoch_at=1) == Resend(truncate_to=None, next_seq=6)


def test_former_head_rejoins_and_converges():
    n1, n2, n3 = chain_of("n1", "n2", "n3")
    n1.append_as_head(3)
    link(n1, n2), link(n2, n3)
    n1.append_as_head(2)  # 4, 5 never leave n1: it dies
    for node in (n2, n3):
        node.state.adopt(config(2, ["n2", "n3"]))
    n2.append_as_head(4)  # 4..7 under epoch 2
    link(n2, n3)
    # n1 comes back as a learner behind the tail n3.
    for node in (n2, n3):
        node.state.adopt(config(3, ["n2", "n3"], ["n1"]))
    n1.state.adopt(config(3, ["n2", "n3"], ["n1"]))
    link(n3, n1)
    assert n1.log == n2.log == n3.log
    assert [epoch for _, epoch in n1.log] == [1, 1, 1, 2, 2, 2, 2]


def test_a_node_back_after_the_chain_was_restarted_drops_what_the_new_head_lacks():
    # n1 committed 9 entries; n2 had 6 of them when both went down, and the operator
    # restarted the chain from n2 (mboard restart-chain). When n1 comes back behind it, its
    # 7..9 are no longer the chain's, committed or not: n2 writes its own 7..9.
    n1, n2 = FakeNode("n1"), FakeNode("n2")
    n1.state.adopt(config(1, ["n1"]))
    n1.state.grant_lease(1, until=float("inf"))
    n1.append_as_head(9)
    assert n1.state.committed_seq == 9
    n2.log = n1.log[:6]
    n2.state.note_applied(6)
    for node in (n1, n2):
        node.state.adopt(config(5, ["n2"], ["n1"]))
    n2.state.grant_lease(5, until=float("inf"))
    link(n2, n1)
    assert n1.log == n2.log == [(seq, 1) for seq in range(1, 7)]
    n2.append_as_head(3)
    link(n2, n1)
    assert n1.log == n2.log and [epoch for _, epoch in n1.log[6:]] == [5, 5, 5]


# -------------------------------------------------------- prefix and commit


def test_prefix_invariant_and_commit_only_at_the_tail():
    n1, n2, n3 = chain_of("n1", "n2", "n3")
    for round_ in range(5):
        n1.append_as_head(10)
        link(n1, n2)  # n2 now holds more than n3: nothing new is committed yet
        assert n1.state.committed_seq == 10 * round_
        link(n2, n3)  # the tail applied: committed, and the ack travels up
        link(n1, n2)  # carries n2's ack (relayed from n3) back to the head
        for upstream, downstream in ((n1, n2), (n2, n3)):
            assert downstream.log == upstream.log[: len(downstream.log)]
        assert n3.state.committed_seq == n3.last_seq == 10 * (round_ + 1)
        assert n1.state.committed_seq == n3.last_seq


def test_committed_seq_never_goes_back():
    state = ChainState("n2")
    state.adopt(config(1, ["n1", "n2"]))
    state.grant_lease(1, until=10.0)
    state.note_applied(10)
    assert state.committed_seq == 10
    state.note_successor_ack(cluster_pb2.Ack(applied_seq=3, committed_seq=3), sent_seq=3)
    state.note_predecessor(1, 2)
    assert state.committed_seq == 10


def test_learner_acks_do_not_commit_but_report_caught_up():
    tail = ChainState("n1")
    tail.adopt(config(2, ["n1"], ["n2"]))
    tail.grant_lease(2, until=10.0)
    tail.note_applied(1000)
    advanced = tail.note_successor_ack(
        cluster_pb2.Ack(applied_seq=10, committed_seq=10), sent_seq=10
    )
    assert not advanced and not tail.learner_caught_up() and tail.committed_seq == 1000
    near = 1000 - CAUGHT_UP_LAG
    tail.note_successor_ack(cluster_pb2.Ack(applied_seq=near, committed_seq=near), sent_seq=near)
    assert tail.learner_caught_up()


def test_a_middle_acks_new_commit_points_and_a_learner_its_progress_too():
    middle = ChainState("n2")
    middle.adopt(config(1, ["n1", "n2", "n3"]))
    middle.note_applied(5)
    first = middle.ack_to_send(None)
    assert (first.applied_seq, first.committed_seq) == (5, 0)
    middle.note_applied(9)
    assert middle.ack_to_send(first) is None  # applied alone: nothing the head uses
    middle.note_successor_ack(cluster_pb2.Ack(applied_seq=7, committed_seq=7), sent_seq=7)
    assert middle.ack_to_send(first).committed_seq == 7

    learner = ChainState("n4")
    learner.adopt(config(2, ["n1", "n2", "n3"], ["n4"]))
    learner.note_applied(5)
    sent = learner.ack_to_send(None)
    learner.note_applied(9)
    assert learner.ack_to_send(sent).applied_seq == 9  # the tail watches it catch up


def test_a_tail_in_place_of_removed_nodes_commits_only_once_it_holds_a_lease():
    # n3, the tail, was removed while it may still live (cut off) and serve reads under its
    # lease. The control plane leases n2 only once that lease is over: until then n2 must
    # acknowledge nothing, or a client could read from n3 without seeing its write.
    middle = ChainState("n2")
    middle.adopt(config(1, ["n1", "n2", "n3"]))
    middle.note_applied(10)
    middle.note_successor_ack(cluster_pb2.Ack(applied_seq=6, committed_seq=6), sent_seq=6)
    middle.adopt(config(2, ["n1", "n2"]))
    assert middle.awaiting_lease and middle.committed_seq == 6
    assert not middle.note_applied(12)
    assert middle.committed_seq == 6
    assert not middle.grant_lease(epoch=1, until=10.0)  # a lease for an older epoch
    assert middle.grant_lease(epoch=2, until=10.0)
    assert middle.committed_seq == 12 and not middle.awaiting_lease
    assert middle.note_applied(13) and middle.committed_seq == 13


def test_a_promoted_learner_commits_at_once():
    # Its predecessor is the old tail, which holds everything it has: no reader can miss it.
    learner = ChainState("n3")
    learner.adopt(config(2, ["n1", "n2"], ["n3"]))
    learner.note_applied(10)
    learner.adopt(config(3, ["n1", "n2", "n3"]))
    assert not learner.awaiting_lease and learner.committed_seq == 10


def test_a_learner_that_missed_the_old_tails_removal_waits_for_a_lease():
    learner = ChainState("n3")
    learner.adopt(config(2, ["n1", "n2"], ["n3"]))  # learning from n2
    learner.adopt(config(5, ["n1", "n3"]))  # epochs 3 and 4 (promote, drop n2) never reached it
    assert learner.awaiting_lease


def test_a_learner_that_missed_epochs_waits_for_a_lease_even_behind_the_old_tail():
    # In the epochs it missed, another node may have been tail and served reads.
    learner = ChainState("n3")
    learner.adopt(config(2, ["n1", "n2"], ["n3"]))
    learner.adopt(config(5, ["n1", "n2", "n3"]))  # promoted behind n2, epochs 3 and 4 missed
    assert learner.awaiting_lease
    assert "lease" in learner.refuse_read(now=1.0)


def test_a_tail_that_missed_epochs_waits_for_a_lease():
    # Meanwhile n3 may have been promoted, leased, and removed while still alive.
    tail = ChainState("n2")
    tail.adopt(config(1, ["n1", "n2"]))
    tail.grant_lease(1, until=10.0)
    tail.note_predecessor(1, 0)
    tail.adopt(config(2, ["n1", "n2"], ["n4"]))  # the next epoch, still tail: no wait
    assert not tail.awaiting_lease and tail.refuse_read(now=1.0) is None
    tail.adopt(config(5, ["n1", "n2"]))
    assert tail.awaiting_lease
    # Nor does it serve reads on its old lease: what it applies now is not committed.
    assert "lease" in tail.refuse_read(now=1.0)
    tail.grant_lease(5, until=10.0)
    assert tail.refuse_read(now=1.0) is None


def test_a_new_learner_starts_with_nothing_acknowledged():
    # Acks of the learner before it count for nothing: else a new one looks caught up at once.
    tail = ChainState("n1")
    tail.adopt(config(1, ["n1"], ["n2"]))
    tail.note_applied(500)
    tail.note_successor_ack(cluster_pb2.Ack(applied_seq=500), sent_seq=500)
    assert tail.learner_caught_up()
    tail.adopt(config(2, ["n1"], ["n3"]))  # n2 left; n3 joins behind the tail
    assert tail.successor_applied_seq == 0 and not tail.learner_caught_up()


def test_a_tail_waiting_for_its_lease_takes_no_commit_point_from_its_learner():
    tail = ChainState("n2")
    tail.adopt(config(1, ["n1", "n2", "n3"]))
    tail.note_applied(10)
    tail.adopt(config(2, ["n1", "n2"], ["n4"]))
    assert not tail.note_successor_ack(
        cluster_pb2.Ack(applied_seq=10, committed_seq=10), sent_seq=10
    )
    assert tail.committed_seq == 0


def test_the_first_node_of_a_chain_commits_once_leased():
    state = ChainState("n1")
    state.adopt(config(1, ["n1"]))
    assert state.awaiting_lease and not state.note_applied(1)
    assert state.grant_lease(1, until=10.0) and state.committed_seq == 1


# -------------------------------------------------------------------- reads


def test_tail_reads_need_a_lease_in_the_current_epoch():
    state = ChainState("n1")
    state.adopt(config(1, ["n1"]))
    assert "lease" in state.refuse_read(now=0.0)
    state.grant_lease(epoch=1, until=10.0)
    assert state.refuse_read(now=5.0) is None
    assert "lease" in state.refuse_read(now=10.0)
    state.grant_lease(epoch=0, until=99.0)  # an old epoch's lease counts for nothing
    assert "lease" in state.refuse_read(now=11.0)


def test_non_tail_never_serves_reads():
    state = ChainState("n1")
    state.adopt(config(1, ["n1", "n2"]))
    state.grant_lease(epoch=1, until=10.0)
    assert state.refuse_read(now=1.0) == "not the tail"


def test_promoted_learner_waits_for_what_the_old_tail_committed():
    new_tail = ChainState("n2")
    new_tail.adopt(config(2, ["n1"], ["n2"]))
    new_tail.note_applied(90)
    new_tail.adopt(config(3, ["n1", "n2"]))
    new_tail.grant_lease(epoch=3, until=100.0)
    assert "predecessor" in new_tail.refuse_read(now=1.0)  # not heard from n1 in epoch 3
    new_tail.note_predecessor(sender_epoch=2, committed_seq=95)
    assert "predecessor" in new_tail.refuse_read(now=1.0)  # an epoch-2 word is too old
    new_tail.note_predecessor(sender_epoch=3, committed_seq=95)
    assert "predecessor" in new_tail.refuse_read(now=1.0)  # has 90, the old tail committed 95
    new_tail.note_applied(95)
    assert new_tail.refuse_read(now=1.0) is None


def test_a_tail_that_stays_tail_keeps_serving_across_epochs():
    state = ChainState("n3")
    state.adopt(config(1, ["n1", "n2", "n3"]))
    state.note_predecessor(1, 0)
    state.grant_lease(1, until=10.0)
    assert state.refuse_read(now=1.0) is None
    state.adopt(config(2, ["n2", "n3"]))  # the head died; n3 is still tail
    assert state.refuse_read(now=1.0) is None


def test_adopt_ignores_old_configs():
    state = ChainState("n1")
    assert state.adopt(config(2, ["n1"])) is not None
    assert state.adopt(config(2, ["n1", "n2"])) is None
    assert state.adopt(config(1, ["n1", "n2"])) is None
    assert state.position == Position(2, "head+tail", None, None, successor_is_learner=False)


# ------------------------------------------------------------------ waiters


def test_commit_waiters_resolve_in_order_once_committed():
    async def scenario():
        waiters = CommitWaiters()
        futures = [waiters.wait(seq, reached_seq=2) for seq in (5, 1, 3, 4)]
        assert [f.done() for f in futures] == [False, True, False, False]
        waiters.advance(3)
        assert [f.done() for f in futures] == [False, True, True, False]
        waiters.advance(5)
        assert all(f.done() for f in futures) and len(waiters) == 0

    asyncio.run(scenario())


def test_commit_waiters_give_up_after_their_timeout():
    async def scenario():
        waiters = CommitWaiters("committed", 0.05, give_up=LookupError)
        first, second, reached = waiters.wait(5, 0, "retry"), waiters.wait(6, 0), waiters.wait(3, 0)
        waiters.advance(3)  # before its deadline: it does not fail later
        with pytest.raises(LookupError, match=r"^not committed within 0.05s; retry$"):
            await asyncio.wait_for(first, 10)
        with pytest.raises(LookupError, match=r"; try again$"):
            await asyncio.wait_for(second, 10)
        assert reached.result() is None
        later = waiters.wait(7, 0)  # the timer went quiet: a new wait starts it again
        with pytest.raises(LookupError):
            await asyncio.wait_for(later, 10)
        waiters.advance(7)  # no harm to those that gave up
        assert len(waiters) == 0

    asyncio.run(scenario())


def test_commit_waiters_still_give_up_on_a_later_event_loop():
    waiters = CommitWaiters("committed", 0.05, give_up=LookupError)

    async def leave_one_waiting() -> None:
        waiters.wait(9, 0)  # the loop ends with its timer still armed

    async def wait_again() -> None:
        with pytest.raises(LookupError):
            await asyncio.wait_for(waiters.wait(10, 0), 10)

    asyncio.run(leave_one_waiting())
    asyncio.run(wait_again())


@pytest.mark.parametrize("lag", [0, CAUGHT_UP_LAG])
def test_caught_up_only_when_successor_is_a_learner(lag):
    tail = ChainState("n2")
    tail.adopt(config(1, ["n1", "n2"]))
    tail.note_applied(500)
    ack = cluster_pb2.Ack(applied_seq=500 - lag, committed_seq=0)
    assert tail.note_successor_ack(ack, sent_seq=500) is False and not tail.learner_caught_up()


def test_learner_promotion_is_asked_for_when_its_predecessor_becomes_tail():
    # n2 was itself a learner behind n1, streaming to its own learner n3. When n1 goes, n2
    # becomes tail; n3 sends no new ack, yet n2 must see at once that n3 can be promoted.
    n2 = ChainState("n2")
    n2.adopt(config(4, ["n1"], ["n2", "n3"]))
    n2.note_applied(300)
    n2.note_successor_ack(cluster_pb2.Ack(applied_seq=300, committed_seq=300), sent_seq=300)
    assert not n2.learner_caught_up()  # not the tail yet
    n2.adopt(config(5, ["n2"], ["n3"]))
    assert n2.learner_caught_up()


def test_a_busy_link_paces_small_messages_but_never_a_lone_writer_or_a_backlog():
    assert send_pause(3, False, PACE_IN_FLIGHT + 1) == PACE_S  # busy: the next message waits
    assert send_pause(1, False, 1) == 0.0  # one writer: its entry's successor goes at once
    assert send_pause(3, False, PACE_IN_FLIGHT) == 0.0
    assert send_pause(500, True, 5_000) == 0.0  # a backlog streams at full speed
    assert send_pause(0, False, 5_000) == 0.0  # a commit point or epoch alone: no entries
    assert send_pause(3, False, -5_000) == 0.0  # a learner far behind the tail's commit point


def test_the_links_memory_of_recent_entries_keeps_within_its_bytes() -> None:
    recent = RecentLog(max_bytes=1_000)
    for seq in range(1, 11):
        recent.append(seq, bytes([seq]) * 300)
    assert len(recent) == 3  # 900 bytes: a fourth would be 1,200
    assert recent.get(8, 5) == [bytes([seq]) * 300 for seq in (8, 9, 10)]
    assert recent.get(7, 5) is None  # forgotten: the link reads the log table
    recent.append(12, b"x")  # a gap: what is held no longer ends where the log does
    assert recent.get(10, 1) is None and recent.get(12, 1) == [b"x"]


def test_a_commit_point_beyond_our_log_is_not_ours():
    # n2 learned from a chain that committed 9 while it held 6; then the operator restarted
    # the chain from it (mboard restart-chain): its seq 7 will be a new, different entry.
    n2 = ChainState("n2")
    n2.adopt(config(4, ["n1"], ["n2"]))
    n2.note_applied(6)
    n2.note_predecessor(sender_epoch=4, committed_seq=9)
    assert n2.committed_seq == 6
    n2.adopt(config(9, ["n2"]))
    assert n2.awaiting_lease
    assert not n2.note_applied(7) and n2.committed_seq == 6


def test_truncation_takes_back_what_was_committed_beyond_it():
    n3 = ChainState("n3")
    n3.adopt(config(1, ["n1", "n2", "n3"]))
    n3.grant_lease(epoch=1, until=10.0)
    n3.note_applied(8)
    assert n3.committed_seq == 8
    n3.begin_truncation(6)  # the chain was restarted from a node whose log ends at 6
    assert (n3.applied_seq, n3.committed_seq) == (6, 6)


def test_acks_count_only_what_the_successor_can_hold_of_our_log():
    # n2, a former head, holds 1000 entries; only the first 500 are the chain's. Until the
    # tail's truncate reaches it, it acks all 1000: that must not make it look caught up.
    tail = ChainState("n1")
    tail.adopt(config(5, ["n1"], ["n2"]))
    tail.grant_lease(5, until=10.0)
    tail.note_applied(1000)
    tail.note_successor_ack(cluster_pb2.Ack(applied_seq=1000, committed_seq=500), sent_seq=500)
    assert tail.successor_applied_seq == 500 and not tail.learner_caught_up()
    tail.note_successor_ack(cluster_pb2.Ack(applied_seq=1000, committed_seq=500), sent_seq=1000)
    assert tail.learner_caught_up()

    # Nor does a commit point count beyond what we sent.
    head = ChainState("n1")
    head.adopt(config(1, ["n1", "n2"]))
    head.note_applied(10)
    assert head.note_successor_ack(cluster_pb2.Ack(applied_seq=10, committed_seq=10), sent_seq=6)
    assert head.committed_seq == 6


def test_truncation_forgets_what_the_successor_acked_beyond_it():
    n2 = ChainState("n2")
    n2.adopt(config(3, ["n1"], ["n2", "n3"]))
    n2.note_applied(300)
    n2.note_successor_ack(cluster_pb2.Ack(applied_seq=300, committed_seq=0), sent_seq=300)
    n2.begin_truncation(200)
    assert n2.successor_applied_seq == 200


def test_a_node_still_dropping_entries_acks_nothing_and_serves_no_reads():
    n2 = ChainState("n2")
    n2.adopt(config(3, ["n1", "n2"]))
    n2.grant_lease(3, until=10.0)
    n2.note_applied(300)
    n2.note_predecessor(sender_epoch=3, committed_seq=0)  # its read barrier
    n2.begin_truncation(200)  # the writer still rebuilds the board
    assert n2.ack_to_send(None) is None
    assert "dropping entries" in n2.refuse_read(now=1.0)
    n2.end_truncation(200)
    assert n2.ack_to_send(None).applied_seq == 200 and n2.refuse_read(now=1.0) is None


def test_a_promoted_learner_holds_the_commits_once_it_has_its_predecessors_in_this_epoch():
    n2 = ChainState("n2")
    n2.adopt(config(2, ["n1"], ["n2"]))
    n2.note_applied(90)
    n2.note_predecessor(sender_epoch=2, committed_seq=90)
    n2.adopt(config(3, ["n1", "n2"]))
    assert not n2.holds_committed()  # n1 may have committed more before it heard of epoch 3
    n2.note_predecessor(sender_epoch=3, committed_seq=95)
    assert not n2.holds_committed()
    n2.note_applied(95)
    assert n2.holds_committed()


def test_a_promoted_learner_says_so_once_it_holds_the_commits():
    n2 = ChainState("n2")
    n2.adopt(config(2, ["n1"], ["n2"]))
    n2.note_applied(90)
    n2.note_predecessor(sender_epoch=2, committed_seq=90)
    assert not n2.newly_confirmed()  # a learner has nothing to confirm
    n2.adopt(config(3, ["n1", "n2"]))
    assert not n2.newly_confirmed()
    n2.note_predecessor(sender_epoch=3, committed_seq=92)
    assert not n2.newly_confirmed()
    n2.note_applied(92)
    assert n2.newly_confirmed()
    assert not n2.newly_confirmed()  # once per promotion
    n2.adopt(config(4, ["n2"]))  # n1 removed: a head, but not newly promoted
    assert n2.holds_committed() and not n2.newly_confirmed()


def test_a_promoted_learner_still_says_so_after_another_configuration():
    n2 = ChainState("n2")
    n2.adopt(config(2, ["n1"], ["n2"]))
    n2.adopt(config(3, ["n1", "n2"]))
    n2.adopt(config(4, ["n1", "n2"], ["n3"]))  # a learner joins before n2 confirmed
    n2.note_predecessor(sender_epoch=4, committed_seq=0)
    assert n2.newly_confirmed()
    n2.adopt(config(5, ["n1", "n2"]))
    assert not n2.newly_confirmed()  # n2 confirmed already: nothing new


def test_a_head_holds_the_commits():
    n1 = ChainState("n1")
    n1.adopt(config(1, ["n1", "n2"]))
    assert n1.holds_committed()
