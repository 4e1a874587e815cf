"""Membership rules of the control plane, with an injected clock (no sleeps, no network)."""

from __future__ import annotations

import pytest

from mboard.control.membership import (
    ChainConfig,
    Membership,
    Node,
    NotHeard,
    NotWaiting,
    Refused,
    Saved,
)
from mboard.storage_errors import StorageFailed

FAILURE_TIMEOUT = 2.0
LEASE = 1.0
N1, N2, N3, N4 = (Node(f"n{i}", f"127.0.0.1:{5000 + i}") for i in range(1, 5))


class Disk:
    """Stands in for the store: keeps every saved state, or refuses while ``full``."""

    def __init__(self) -> None:
        self.saves: list[Saved] = []
        self.full = False

    def __call__(self, state: Saved) -> None:
        if self.full:
            raise StorageFailed("cannot write control.db: database or disk is full (SQLITE_FULL)")
        self.saves.append(state)


def membership(saved: Saved | None = None, started: float = 0.0, persist=None) -> Membership:
    return Membership(
        failure_timeout=FAILURE_TIMEOUT,
        lease=LEASE,
        started=started,
        persist=persist or Disk(),
        saved=saved,
    )


def ids(nodes) -> list[str]:
    return [n.node_id for n in nodes]


def beat(m: Membership, node: Node, now: float, epoch: int | None = None):
    epoch = m.config.epoch if epoch is None else epoch
    return m.heartbeat(
        node.node_id, epoch, applied_seq=0, committed_seq=0, subscribers=0, now=now,
        address=node.address,
    )  # fmt: skip


def chain_of(*nodes: Node, disk: Disk | None = None) -> Membership:
    """A membership whose chain is ``nodes`` in order, built by joins and promotions."""
    m = membership(persist=disk)
    for node in nodes:
        m.register(node, applied_seq=0, now=0)
        if m.config.learners:
            for member in m.config.chain:  # all run this epoch: an old tail's lease is over
                m.confirm(member.node_id, m.config.epoch)
            beat(m, m.config.chain[-1], now=0)  # the tail holds the lease: it may hand over
            assert m.caught_up(m.config.epoch, m.config.chain[-1].node_id, node.node_id)
    for member in m.config.chain:
        m.confirm(member.node_id, m.config.epoch)
    m.unconfirmed.clear()  # a steady chain: its promoted members long since caught up
    assert ids(m.config.chain) == ids(nodes)
    return m


def promote(m: Membership, node: Node, now: float) -> None:
    """``node`` joins and becomes the new tail (the tail holds the lease)."""
    m.register(node, applied_seq=0, now=now)
    assert m.caught_up(m.config.epoch, m.config.chain[-1].node_id, node.node_id)


# ---------------------------------------------------------------- joining


def test_first_node_is_head_and_tail_then_joiners_queue_as_learners():
    m = membership()
    assert m.register(N1, applied_seq=0, now=0)
    assert m.config == ChainConfig(1, (N1,), ())
    assert m.config.role("n1") == "head+tail"
    m.register(N2, applied_seq=0, now=0)
    m.register(N3, applied_seq=0, now=0)
    assert m.config == ChainConfig(3, (N1,), (N2, N3))
    assert m.config.role("n2") == "learner"


def test_learners_are_promoted_in_join_order():
    m = membership()
    for node in (N1, N2, N3):
        m.register(node, applied_seq=0, now=0)
    beat(m, N1, now=0)  # a tail hands over only while it holds the lease
    assert m.caught_up(3, tail_id="n1", learner_id="n2")
    assert m.config == ChainConfig(4, (N1, N2), (N3,))
    m.confirm("n1", 4)  # n1 runs epoch 4, as head: its lease is over
    beat(m, N2, now=0.1)
    assert m.caught_up(4, tail_id="n2", learner_id="n3")
    assert m.config == ChainConfig(5, (N1, N2, N3), ())
    assert [m.config.role(n) for n in ("n1", "n2", "n3")] == ["head", "middle", "tail"]


@pytest.mark.parametrize(
    ("epoch", "tail_id", "learner_id"),
    [
        (2, "n1", "n2"),  # an old epoch
        (4, "n1", "n2"),  # a future epoch
        (3, "n2", "n2"),  # not the tail
        (3, "n1", "n3"),  # not the first learner
        (3, "n1", "n9"),  # not a learner at all
    ],
)
def test_caught_up_needs_current_epoch_tail_and_first_learner(epoch, tail_id, learner_id):
    m = membership()
    for node in (N1, N2, N3):
        m.register(node, applied_seq=0, now=0)
    beat(m, N1, now=0)  # n1 holds the lease: only the arguments can be wrong
    before = m.config
    assert not m.caught_up(epoch, tail_id, learner_id)
    assert m.config == before


def test_restarted_member_is_removed_and_queued_as_learner_in_one_epoch():
    m = chain_of(N1, N2, N3)
    epoch = m.config.epoch
    moved = Node("n2", "127.0.0.1:6002")  # it may come back on another address
    assert m.register(moved, applied_seq=7, now=1)
    assert m.config == ChainConfig(epoch + 1, (N1, N3), (moved,))


def test_restarted_learner_goes_to_the_back_of_the_queue():
    m = membership()
    for node in (N1, N2, N3):
        m.register(node, applied_seq=0, now=0)
    m.register(N2, applied_seq=0, now=1)
    assert m.config == ChainConfig(4, (N1,), (N3, N2))


def test_restarted_sole_chain_member_stays_the_chain():
    m = membership()
    m.register(N1, applied_seq=0, now=0)
    m.register(N2, applied_seq=0, now=0)
    m.register(N1, applied_seq=0, now=1)
    assert m.config == ChainConfig(3, (N1,), (N2,))


# ---------------------------------------------------------------- failures


def test_silent_member_is_removed_after_failure_timeout():
    m = chain_of(N1, N2)
    epoch = m.config.epoch
    beat(m, N1, now=1.5)
    assert not m.expire(now=FAILURE_TIMEOUT)  # n2 is exactly at the limit, not past it
    assert m.expire(now=FAILURE_TIMEOUT + 0.1)
    assert m.config == ChainConfig(epoch + 1, (N1,), ())
    assert beat(m, N2, now=2.2).unknown
    assert not beat(m, N1, now=2.2).unknown


def test_silence_while_the_control_plane_was_stalled_counts_against_nobody():
    m = chain_of(N1, N2)
    beat(m, N1, now=1.0)  # n2 has been silent since 0
    m.excuse(3.0, now=4.0)  # we heard nothing from 1.0 to 4.0 because we were stopped
    assert not m.expire(now=4.0)
    # Only the stall is excused: n2's second of silence before it still counts.
    assert m.expire(now=3.0 + FAILURE_TIMEOUT + 0.1)
    assert ids(m.config.chain) == ["n1"]
    assert m.expire(now=4.0 + FAILURE_TIMEOUT + 0.1)
    assert ids(m.config.chain) == []


def test_members_failing_together_are_removed_in_one_epoch():
    m = chain_of(N1, N2, N3)
    epoch = m.config.epoch
    beat(m, N2, now=1.0)
    assert m.expire(now=2.5)
    assert m.config == ChainConfig(epoch + 1, (N2,), ())


def test_remove_unknown_node_changes_nothing():
    m = chain_of(N1)
    before = m.config
    assert not m.remove("n9", "left")
    assert m.config == before


def test_learners_are_never_promoted_when_the_chain_dies():
    m = membership()
    m.register(N1, applied_seq=0, now=0)
    m.register(N2, applied_seq=0, now=0)
    assert m.remove("n1", "n1 left")
    assert m.config == ChainConfig(3, (), (N2,))
    # A newcomer cannot restart it: it lacks what n1 committed. n1 can.
    m.register(N3, applied_seq=0, now=1)
    assert m.config == ChainConfig(4, (), (N2, N3))
    m.register(N1, applied_seq=0, now=2)
    assert m.config == ChainConfig(5, (N1,), (N2, N3))


def test_learner_that_reregisters_into_an_empty_chain_waits_for_a_last_member():
    m = membership()
    m.register(N1, applied_seq=0, now=0)
    m.register(N2, applied_seq=0, now=0)
    m.register(N3, applied_seq=0, now=0)
    m.remove("n1", "n1 left")
    m.register(N3, applied_seq=0, now=1)
    assert m.config == ChainConfig(5, (), (N2, N3))


def test_epoch_strictly_increases_and_is_persisted_before_it_is_visible():
    saved: list[Saved] = []

    def persist(state: Saved) -> None:
        previous = saved[-1].config if saved else ChainConfig()
        if state.config != previous:  # a new configuration: on disk before it is visible
            assert state.config.epoch > m.config.epoch and m.config == previous
        else:  # saving the lease holder or the commit floor keeps the configuration
            assert state.config == m.config
        saved.append(state)

    m = membership(persist=persist)
    m.register(N1, applied_seq=0, now=0)
    m.register(N2, applied_seq=0, now=0)
    m.register(N3, applied_seq=0, now=0)
    beat(m, N1, now=0)
    m.caught_up(3, "n1", "n2")
    beat(m, N2, now=0.5)  # n2 holds what n1 committed
    m.register(N1, applied_seq=0, now=1)
    m.remove("n3", "n3 left")
    beat(m, N2, now=1.5)
    m.expire(now=10)
    m.register(N4, applied_seq=0, now=11)
    assert any(state.lease_holder == "n2" for state in saved)
    for before, after in zip(saved, saved[1:], strict=False):
        assert after.config.epoch > before.config.epoch or after.config == before.config
    assert saved[-1].config == m.config


def test_failed_persist_leaves_the_configuration_unchanged():
    disk = Disk()
    m = chain_of(N1, N2, disk=disk)
    assert beat(m, N2, now=0).lease_s == LEASE
    m.unconfirmed["n2"] = m.config.epoch  # as if promoted moments ago
    before = (m.config, m.lease_holder, dict(m.unconfirmed))
    disk.full = True
    with pytest.raises(StorageFailed):
        m.register(N3, applied_seq=0, now=0)
    with pytest.raises(StorageFailed):  # n2's id, taken up elsewhere: no longer the holder
        m.register(Node("n2", "127.0.0.1:6002"), applied_seq=0, now=0)
    assert (m.config, m.lease_holder, dict(m.unconfirmed)) == before
    assert m.config.find("n3") is None
    assert beat(m, N3, now=0).unknown


def test_heartbeats_are_answered_while_nothing_can_be_saved():
    """A full disk stops changes, not heartbeats: the tail's lease is renewed (that needs no
    save), a rising commit floor is saved once the disk has room, and a change waits."""
    disk = Disk()
    m = chain_of(N1, N2, disk=disk)
    assert beat(m, N2, now=1.0).lease_s == LEASE
    disk.full = True
    answer = m.heartbeat(
        "n1", m.config.epoch, applied_seq=50, committed_seq=50, subscribers=0, now=2.0,
        address=N1.address,
    )  # fmt: skip
    assert answer.config == m.config and m.committed_floor == 50
    assert beat(m, N2, now=2.1).lease_s == LEASE
    epoch = m.config.epoch
    with pytest.raises(StorageFailed):
        m.remove("n2", "n2 unreachable")
    assert ids(m.config.chain) == ["n1", "n2"] and m.config.epoch == epoch
    disk.full = False
    m.heartbeat(
        "n1", epoch, applied_seq=60, committed_seq=60, subscribers=0, now=3.5, address=N1.address
    )
    assert disk.saves[-1].committed_floor == 60


def test_a_first_lease_is_granted_only_once_it_is_saved():
    disk = Disk()
    m = membership(persist=disk)
    m.register(N1, applied_seq=0, now=0)
    disk.full = True
    assert beat(m, N1, now=0.1).lease_s == 0  # after a restart it could not know of it
    disk.full = False
    assert beat(m, N1, now=0.2).lease_s == LEASE
    assert disk.saves[-1].lease_holder == "n1"


def test_statuses_report_roles_progress_and_heartbeat_age():
    m = membership()
    m.register(N1, applied_seq=0, now=0)
    m.register(N2, applied_seq=3, now=0)
    m.heartbeat("n1", 2, applied_seq=10, committed_seq=9, subscribers=4, now=1.0)
    statuses = {s.node.node_id: s for s in m.statuses(now=1.25)}
    assert statuses["n1"].role == "head+tail"
    assert (statuses["n1"].applied_seq, statuses["n1"].committed_seq) == (10, 9)
    assert statuses["n1"].subscribers == 4
    assert statuses["n1"].heartbeat_age_s == pytest.approx(0.25)
    assert statuses["n2"].role == "learner"
    assert statuses["n2"].applied_seq == 3


# ---------------------------------------------------------------- leases


def test_only_the_tail_gets_a_lease():
    m = membership()
    m.register(N1, applied_seq=0, now=0)
    m.register(N2, applied_seq=0, now=0)
    m.register(N3, applied_seq=0, now=0)
    beat(m, N1, now=0)
    m.caught_up(3, "n1", "n2")
    m.confirm("n1", m.config.epoch)
    assert beat(m, N1, now=0.1).lease_s == 0  # head
    assert beat(m, N3, now=0.1).lease_s == 0  # learner
    assert beat(m, N4, now=0.1).lease_s == 0  # not a member
    assert beat(m, N2, now=0.1).lease_s == LEASE  # tail


def test_tail_keeps_its_lease_when_the_epoch_changes_around_it():
    m = chain_of(N1)
    assert beat(m, N1, now=0.0).lease_s == LEASE
    m.register(N2, applied_seq=0, now=0.1)  # a learner joins: n1 stays the tail
    assert beat(m, N1, now=0.2).lease_s == LEASE


def test_new_tail_waits_until_the_old_tails_lease_has_run_out():
    m = chain_of(N1)
    leased_epoch = m.config.epoch
    assert beat(m, N1, now=5.0).lease_s == LEASE
    promote(m, N2, now=5.1)
    assert beat(m, N1, now=5.2, epoch=leased_epoch).lease_s == 0  # no longer the tail
    assert beat(m, N2, now=5.5).lease_s == 0
    assert beat(m, N2, now=5.0 + LEASE - 0.01).lease_s == 0
    assert beat(m, N2, now=5.0 + LEASE).lease_s == LEASE


def test_a_sole_tail_whose_id_another_process_takes_keeps_the_new_one_waiting():
    m = chain_of(N1)
    assert beat(m, N1, now=5.0).lease_s == LEASE
    elsewhere = Node("n1", "127.0.0.1:6001")  # the old n1 did not answer the probe: slow
    m.register(elsewhere, applied_seq=0, now=5.5)
    assert m.config.chain == (elsewhere,)
    assert beat(m, N1, now=5.6).unknown  # the old run: not the member any more
    assert beat(m, elsewhere, now=5.6).lease_s == 0  # the old run's lease may still run
    assert beat(m, elsewhere, now=5.0 + LEASE - 0.01).lease_s == 0
    assert beat(m, elsewhere, now=5.0 + LEASE).lease_s == LEASE


def test_a_tails_id_taken_elsewhere_does_not_end_the_old_runs_lease():
    m = chain_of(N1, N2)
    assert beat(m, N2, now=5.0).lease_s == LEASE
    elsewhere = Node("n2", "127.0.0.1:6002")
    m.register(elsewhere, applied_seq=0, now=5.5)
    assert ids(m.config.chain) == ["n1"] and m.config.learners == (elsewhere,)
    m.confirm("n2", m.config.epoch)  # the new process applied the epoch: not the old one
    assert beat(m, N1, now=5.6).lease_s == 0
    assert beat(m, N1, now=5.0 + LEASE).lease_s == LEASE


def test_a_removed_tail_keeps_its_lease_unless_it_left():
    # Unreachable is not dead: the new tail waits until the lease has run out ...
    m = chain_of(N1, N2)
    assert beat(m, N2, now=5.0).lease_s == LEASE
    m.remove("n2", "unreachable")
    assert beat(m, N1, now=5.1).lease_s == 0
    assert beat(m, N1, now=5.0 + LEASE).lease_s == LEASE
    # ... but a node that left dropped its lease first: not a moment.
    m = chain_of(N1, N2)
    assert beat(m, N2, now=5.0).lease_s == LEASE
    m.remove("n2", "left", serves_no_reads=True)
    assert beat(m, N1, now=5.1).lease_s == LEASE


def test_a_learner_is_promoted_only_behind_a_tail_that_holds_the_lease():
    # n3 (leased tail) was removed but may live on; n2, the tail now, waits for the lease.
    # A learner promoted behind n2 would commit at once: not before n2 holds the lease.
    m = chain_of(N1, N2, N3)
    beat(m, N3, now=5.0)
    m.remove("n3", "unreachable")
    m.register(N4, applied_seq=0, now=5.1)
    assert not m.caught_up(m.config.epoch, "n2", "n4")
    assert beat(m, N2, now=5.0 + LEASE).lease_s == LEASE
    assert m.caught_up(m.config.epoch, "n2", "n4")


def test_new_tail_gets_a_lease_once_the_old_tail_confirmed_the_new_epoch():
    m = chain_of(N1)
    beat(m, N1, now=5.0)
    promote(m, N2, now=5.1)
    assert beat(m, N2, now=5.2).lease_s == 0
    beat(m, N1, now=5.3, epoch=m.config.epoch)  # n1 now runs the new epoch
    assert beat(m, N2, now=5.4).lease_s == LEASE


def test_a_successful_push_counts_as_confirmation():
    m = chain_of(N1)
    leased_epoch = m.config.epoch
    beat(m, N1, now=5.0)
    promote(m, N2, now=5.1)
    m.confirm("n1", leased_epoch)  # the epoch its lease is for: the lease may still run
    assert beat(m, N2, now=5.2).lease_s == 0
    m.confirm("n1", m.config.epoch)
    assert beat(m, N2, now=5.2).lease_s == LEASE


def test_confirming_an_epoch_it_was_still_tail_in_does_not_end_the_lease():
    m = chain_of(N1)
    beat(m, N1, now=5.0)
    m.register(N2, applied_seq=0, now=5.1)  # n1 is still the tail and keeps its lease
    beat(m, N1, now=5.2, epoch=m.config.epoch - 1)
    stale_epoch = m.config.epoch
    assert m.caught_up(stale_epoch, "n1", "n2")
    m.confirm("n1", stale_epoch)  # a late push ack for the epoch n1 was still the tail in
    assert beat(m, N2, now=5.3).lease_s == 0


def test_removed_tail_blocks_the_next_tail_until_its_lease_ran_out():
    m = chain_of(N1, N2)
    assert beat(m, N2, now=5.0).lease_s == LEASE
    m.remove("n2", "n2 unreachable")  # perhaps only cut off: it may still serve reads
    assert beat(m, N1, now=5.5).lease_s == 0
    assert beat(m, N1, now=6.0).lease_s == LEASE


def test_a_tail_that_never_held_the_lease_hands_over_to_nobody():
    m = chain_of(N1)
    beat(m, N1, now=5.0)
    promote(m, N2, now=5.1)  # behind n1, which holds the lease
    assert beat(m, N2, now=5.2).lease_s == 0  # n1's lease still runs
    m.register(N3, applied_seq=0, now=5.3)
    assert not m.caught_up(m.config.epoch, "n2", "n3")  # n3 would commit before n2 may
    assert beat(m, N2, now=6.0).lease_s == LEASE
    assert m.caught_up(m.config.epoch, "n2", "n3")


# ---------------------------------------------------------------- restart


def test_restart_keeps_the_epoch_and_never_reissues_one():
    disk = Disk()
    m = chain_of(N1, N2, disk=disk)
    after = membership(saved=disk.saves[-1], started=100.0)
    assert after.config == m.config
    after.register(N3, applied_seq=0, now=100.0)
    assert after.config.epoch == m.config.epoch + 1


def test_restart_treats_persisted_members_as_alive_for_a_failure_timeout():
    disk = Disk()
    chain_of(N1, N2, disk=disk)
    after = membership(saved=disk.saves[-1], started=100.0)
    assert not after.expire(now=100.0 + FAILURE_TIMEOUT)
    beat(after, N1, now=101.0)
    assert after.expire(now=100.0 + FAILURE_TIMEOUT + 0.1)
    assert ids(after.config.chain) == ["n1"]


def test_restart_keeps_leasing_to_the_tail_that_already_held_the_lease():
    disk = Disk()
    m = chain_of(N1, N2, disk=disk)
    assert beat(m, N2, now=0.0).lease_s == LEASE
    after = membership(saved=disk.saves[-1], started=100.0)
    assert beat(after, N2, now=100.0).lease_s == LEASE


def test_restart_withholds_leases_from_a_tail_not_yet_cleared():
    disk = Disk()
    m = chain_of(N1, disk=disk)
    beat(m, N1, now=0.0)
    promote(m, N2, now=0.1)  # n2 is the tail, but n1 may still hold a lease
    after = membership(saved=disk.saves[-1], started=100.0)
    # Whatever n1 was granted before the restart is unknown: wait out a full lease.
    beat(after, N1, now=100.1)
    assert beat(after, N2, now=100.1).lease_s == 0
    assert beat(after, N2, now=100.0 + LEASE).lease_s == LEASE


def test_tail_change_after_restart_waits_for_earlier_leases():
    disk = Disk()
    m = chain_of(N1, N2, disk=disk)
    beat(m, N2, now=0.0)
    after = membership(saved=disk.saves[-1], started=100.0)
    after.remove("n2", "n2 left")
    assert beat(after, N1, now=100.5).lease_s == 0
    assert beat(after, N1, now=100.0 + LEASE).lease_s == LEASE


# ------------------------------------------------------ a tail promoted moments ago


def test_a_tail_promoted_moments_ago_is_not_left_heading_the_chain():
    m = chain_of(N1, N2)
    beat(m, N2, now=0)  # n2 holds the lease: it may hand over to a learner
    promote(m, N3, now=1)  # n3 may still be receiving the last of what n2 committed
    m.remove("n1", "failed")
    assert ids(m.config.chain) == ["n2", "n3"]
    m.remove("n2", "failed")  # n3 would head the chain with a log missing commits
    assert m.config.chain == () and ids(m.config.learners) == ["n3"]
    assert m.survivors == ("n2",)
    m.register(N2, applied_seq=0, now=5)
    assert ids(m.config.chain) == ["n2"] and ids(m.config.learners) == ["n3"]


def test_a_promoted_tail_that_holds_the_commits_may_head_the_chain():
    m = chain_of(N1)
    beat(m, N1, now=0)
    promote(m, N2, now=1)
    m.heartbeat("n2", m.config.epoch, 0, 0, subscribers=0, now=2, holds_committed=False)
    m.heartbeat("n2", m.config.epoch - 1, 0, 0, subscribers=0, now=2, holds_committed=True)
    assert "n2" in m.unconfirmed  # not yet, and not for an older configuration
    m.heartbeat("n2", m.config.epoch, 0, 0, subscribers=0, now=3, holds_committed=True)
    m.remove("n1", "failed")
    assert ids(m.config.chain) == ["n2"]


def test_a_tail_promoted_moments_ago_cannot_restart_the_chain_either():
    m = chain_of(N1, N2)
    beat(m, N2, now=0)
    promote(m, N3, now=1)
    m.expire(now=FAILURE_TIMEOUT + 2)  # all three cut off at once
    assert m.config.chain == () and m.survivors == ("n1", "n2")
    m.register(N3, applied_seq=0, now=10)
    assert m.config.chain == ()


def test_no_promotion_behind_a_tail_that_has_not_confirmed():
    m = chain_of(N1)
    beat(m, N1, now=0)
    promote(m, N2, now=1)
    m.confirm("n1", m.config.epoch)  # n1, no longer the tail, dropped its lease
    m.heartbeat("n2", m.config.epoch, 0, 0, subscribers=0, now=1.5, holds_committed=False)
    assert m.lease_holder == "n2"
    m.register(N3, applied_seq=0, now=2)
    assert not m.caught_up(m.config.epoch, "n2", "n3")
    m.heartbeat("n2", m.config.epoch, 0, 0, subscribers=0, now=2.5, holds_committed=True)
    assert m.caught_up(m.config.epoch, "n2", "n3")


def test_after_a_restart_every_member_but_the_head_confirms_again():
    disk = Disk()
    chain_of(N1, N2, N3, disk=disk)
    m = membership(saved=disk.saves[-1], started=20)
    m.heartbeat("n2", m.config.epoch, 0, 0, subscribers=0, now=20.5, holds_committed=True)
    m.remove("n1", "failed")
    assert ids(m.config.chain) == ["n2", "n3"]  # n2 confirmed; n3 (not yet) is not the head
    m.remove("n2", "failed")
    assert m.config.chain == () and ids(m.config.learners) == ["n3"]


def test_its_predecessor_restarting_does_not_leave_it_heading_the_chain():
    m = chain_of(N1)
    beat(m, N1, now=0)
    promote(m, N2, now=1)
    m.register(N1, applied_seq=0, now=2)  # n1 restarted before its failure was noticed
    assert ids(m.config.chain) == ["n1"] and ids(m.config.learners) == ["n2"]


# --------------------------------------------------------------- total outage


def test_after_a_total_outage_only_a_last_member_restarts_the_chain():
    disk = Disk()
    m = chain_of(N1, N2, N3, disk=disk)
    m.remove("n3", "failed")  # n1, n2 go on committing without n3
    m.expire(now=FAILURE_TIMEOUT + 1)  # then n1 and n2 fall silent together
    assert m.config.chain == () and set(m.survivors) == {"n1", "n2"}

    m.register(N3, applied_seq=0, now=10)  # stale: left before the last writes
    assert m.config.chain == () and ids(m.config.learners) == ["n3"]
    m.register(N2, applied_seq=0, now=11)  # a last member: holds every committed write
    assert ids(m.config.chain) == ["n2"] and ids(m.config.learners) == ["n3"]
    assert m.survivors == ()
    assert disk.saves[-1].survivors == ()


def test_survivors_outlive_a_control_plane_restart():
    disk = Disk()
    m = chain_of(N1, N2, disk=disk)
    m.expire(now=FAILURE_TIMEOUT + 1)
    assert disk.saves[-1].survivors == ("n1", "n2")

    restarted = membership(saved=disk.saves[-1], started=20)
    restarted.register(N3, applied_seq=0, now=20)
    assert restarted.config.chain == ()
    restarted.register(N1, applied_seq=0, now=21)
    assert ids(restarted.config.chain) == ["n1"]


def test_a_last_member_that_lost_its_data_does_not_restart_the_chain():
    disk = Disk()
    m = chain_of(N1, N2, disk=disk)
    m.heartbeat("n1", m.config.epoch, applied_seq=20, committed_seq=20, subscribers=0, now=1)
    m.expire(now=FAILURE_TIMEOUT + 2)
    assert set(m.survivors) == {"n1", "n2"} and disk.saves[-1].committed_floor == 20

    # n1 comes back with an empty data directory: as head it would make n2 drop its log.
    m.register(N1, applied_seq=0, now=10)
    assert m.config.chain == () and ids(m.config.learners) == ["n1"]
    m.register(N2, applied_seq=20, now=11)
    assert ids(m.config.chain) == ["n2"] and ids(m.config.learners) == ["n1"]


def test_a_sole_member_back_without_its_data_before_it_was_missed_waits():
    m = chain_of(N1)
    m.heartbeat("n1", m.config.epoch, applied_seq=5, committed_seq=5, subscribers=0, now=1)
    m.register(N1, applied_seq=0, now=2)  # restarted on an empty disk, not yet expired
    assert m.config.chain == () and m.survivors == ("n1",)
    m.register(N1, applied_seq=5, now=3)  # its data restored
    assert ids(m.config.chain) == ["n1"] and m.survivors == ()


def test_the_operator_restarts_a_stalled_chain_from_a_waiting_node():
    disk = Disk()
    m = chain_of(N1, disk=disk)
    m.heartbeat("n1", m.config.epoch, applied_seq=9, committed_seq=9, subscribers=0, now=1)
    m.remove("n1", "n1 left", serves_no_reads=True)
    m.register(N2, applied_seq=6, now=2)  # left the chain earlier: not a last member
    m.register(N1, applied_seq=0, now=3)  # the last member, back without its data
    m.register(N3, applied_seq=4, now=4)
    assert m.config.chain == ()

    disk.full = True  # nothing changes until the restart is saved
    before = (m.config, m.committed_floor, m.survivors, dict(m.unconfirmed))
    with pytest.raises(StorageFailed):
        m.restart_from("n2")
    assert (m.config, m.committed_floor, m.survivors, dict(m.unconfirmed)) == before
    disk.full = False
    assert m.restart_from("n2")
    assert ids(m.config.chain) == ["n2"] and ids(m.config.learners) == ["n1", "n3"]
    # n2's log is the chain's now: a later outage measures against it, not against seq 9.
    assert m.committed_floor == 6 and m.survivors == ()
    assert (disk.saves[-1].config, disk.saves[-1].committed_floor) == (m.config, 6)
    # n3 still reports the commit point of the log it is about to give up.
    m.heartbeat("n3", m.config.epoch, applied_seq=4, committed_seq=9, subscribers=0, now=5)
    m.heartbeat("n2", m.config.epoch - 1, applied_seq=6, committed_seq=9, subscribers=0, now=5)
    assert m.committed_floor == 6
    m.heartbeat("n2", m.config.epoch, applied_seq=8, committed_seq=8, subscribers=0, now=6)
    assert m.committed_floor == 8


def test_a_rising_commit_floor_is_saved_now_and_then():
    disk = Disk()
    m = chain_of(N1, disk=disk)
    epoch = m.config.epoch
    m.heartbeat("n1", epoch, applied_seq=0, committed_seq=0, subscribers=0, now=9.0)  # leased
    saves = len(disk.saves)
    m.heartbeat("n1", epoch, applied_seq=5, committed_seq=5, subscribers=0, now=10.0)
    assert len(disk.saves) == saves + 1 and disk.saves[-1].committed_floor == 5
    m.heartbeat("n1", epoch, applied_seq=9, committed_seq=9, subscribers=0, now=10.5)
    assert len(disk.saves) == saves + 1  # at most one save a second
    m.heartbeat("n1", epoch, applied_seq=9, committed_seq=9, subscribers=0, now=11.0)
    assert len(disk.saves) == saves + 1  # nothing new
    m.heartbeat("n1", epoch, applied_seq=12, committed_seq=12, subscribers=0, now=11.2)
    assert len(disk.saves) == saves + 2 and disk.saves[-1].committed_floor == 12

    # Site power loss: the control plane comes back too, and n1 with an emptied disk.
    restarted = membership(saved=disk.saves[-1], started=50)
    restarted.register(N1, applied_seq=0, now=50)
    assert restarted.config.chain == ()


def test_the_floor_counts_only_commits_a_member_holds():
    m = chain_of(N1)  # a learner told commits beyond its log reports them as it joins
    m.heartbeat("n1", m.config.epoch, applied_seq=6, committed_seq=9, subscribers=0, now=1)
    assert m.committed_floor == 6


def test_the_operator_must_pick_the_longest_log_and_one_we_heard_of():
    disk = Disk()
    m = chain_of(N1, disk=disk)
    m.remove("n1", "n1 failed")
    m.register(N2, applied_seq=6, now=2)
    m.register(N3, applied_seq=8, now=3)
    with pytest.raises(Refused, match=r"n3 holds more \(8 entries against 6\)"):
        m.restart_from("n2")

    restarted = membership(saved=disk.saves[-1], started=20)  # knows n2, n3: not their logs
    with pytest.raises(NotHeard, match="not heard from n2, n3 yet"):
        restarted.restart_from("n3")
    for node_id, applied_seq in (("n2", 6), ("n3", 8)):
        restarted.heartbeat(node_id, 0, applied_seq, 0, subscribers=0, now=21)
    assert restarted.restart_from("n3") and ids(restarted.config.chain) == ["n3"]


def test_restarting_the_chain_is_refused_while_it_runs_or_for_a_stranger():
    m = chain_of(N1, N2)
    with pytest.raises(Refused, match="head n1"):
        m.restart_from("n2")
    m.expire(now=FAILURE_TIMEOUT + 1)
    m.register(N3, applied_seq=0, now=10)
    with pytest.raises(NotWaiting, match=r"n4 is not waiting for the chain \(waiting: n3\)"):
        m.restart_from("n4")
    assert m.config.chain == ()


def test_the_commit_floor_outlives_a_control_plane_restart():
    disk = Disk()
    m = chain_of(N1, disk=disk)
    m.heartbeat("n1", m.config.epoch, applied_seq=7, committed_seq=7, subscribers=0, now=1)
    m.remove("n1", "n1 left", serves_no_reads=True)

    restarted = membership(saved=disk.saves[-1], started=20)
    restarted.register(N1, applied_seq=3, now=20)
    assert restarted.config.chain == ()
    restarted.register(N1, applied_seq=7, now=21)
    assert ids(restarted.config.chain) == ["n1"]


def test_a_sole_member_that_restarts_stays_the_chain():
    m = chain_of(N1)
    m.register(N1, applied_seq=0, now=1)
    assert ids(m.config.chain) == ["n1"] and m.survivors == ()
