"""Crash, pause or restart any process of a real cluster under a concurrent write load:
nothing acknowledged is lost or applied twice, no stale read is served, and every node that
comes back converges to the same board.

Each test runs real processes (``cluster`` fixture) and a ``WriteLoad`` through the client
library. The write stall around each SIGKILL is measured and printed (see it with
``pytest -rP``); it is never asserted tightly. ``MBOARD_FAILOVER_TIMINGS=default`` runs the
tests with the control plane's default timings instead of the fast test timings.

The last test injects a seeded series of random faults, with a live subscription too; run
with more episodes it is a soak (see CHAOS_EPISODES).
"""

from __future__ import annotations

import os
import random
import resource
import time
import uuid

import grpc
import pytest
from harness import CONTROL, Cluster, make_room
from load import WriteLoad
from scenario import (
    DEFAULT_TIMINGS,
    NODES,
    RESUMED_ACKS,
    finish,
    report_stall,
    start_chain,
    tail_messages,
    timing,
    wait_acks,
    warm_up,
    write_load,
)
from subscribers import Subscriptions, assert_every_post_once, ids_of

from mboard.api import cluster_pb2
from mboard.api import razpravljalnica_pb2 as pb

pytestmark = pytest.mark.timeout(240)

# Far above the expected stall (about failure_timeout), far below "writes never resume".
MAX_STALL_S = 15.0
# Answers to calls made while a process is frozen arrive once it runs again.
FROZEN_CALL_TIMEOUT = 30.0
# Writes a restarted node misses, so that catching up takes a moment.
CATCH_UP_BACKLOG = 3000


def read_if_fresh(cluster: Cluster, name: str, topic_id: int, load: WriteLoad) -> bool:
    """Read at ``name``: True if served, False if refused with FAILED_PRECONDITION.

    A served read must show the write acknowledged last before the read began
    (linearizable reads: no stale read, ever).
    """
    latest = load.latest_ack()
    assert latest is not None, "no acknowledged write to look for"
    request = pb.GetMessagesRequest(topic_id=topic_id, from_message_id=latest.message.id, limit=1)
    try:
        reply = cluster.board(name).GetMessages(request, timeout=5)
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
            return False
        raise
    shown = [(m.id, m.text) for m in reply.messages]
    assert shown == [(latest.message.id, latest.request.text)], (
        f"stale read at {name}: acknowledged message {latest.message.id} "
        f"({latest.request.text!r}) is missing, the read showed {shown}"
    )
    return True


def serves_reads(cluster: Cluster, name: str) -> bool:
    return cluster.node_status(name, with_digest=False).serving_reads


def assert_membership_kept(
    cluster: Cluster, before: pb.GetClusterStateResponse, control_back_at: float
) -> None:
    """Once the control plane is back (restarted or resumed at ``control_back_at``), every
    member heartbeats in within a failure timeout: same epoch, same chain, nobody removed."""
    failure_timeout = timing("failure_timeout")
    chain = list(before.chain)

    def heard_from_every_member() -> bool:
        ages = {m.node.node_id: m.heartbeat_age_s for m in cluster.control_status().members}
        fresh = all(ages.get(n.node_id, failure_timeout) < failure_timeout / 2 for n in chain)
        return time.monotonic() > control_back_at + failure_timeout and fresh

    cluster.wait_for(heard_from_every_member, what="heartbeats from every member")
    after = cluster.cluster_state()
    assert (after.epoch, list(after.chain)) == (before.epoch, chain), cluster.logs()


# ------------------------------------------------------------------------ crashes


@pytest.mark.parametrize("victim", ["n1", "n2", "n3"], ids=["head", "middle", "tail"])
def test_sigkill_loses_no_acknowledged_write_and_the_node_rejoins(cluster, victim):
    user_id, topic_id = start_chain(cluster)
    survivors = [name for name in NODES if name != victim]
    with write_load(cluster, user_id, topic_id) as load:
        warm_up(cluster, load)
        killed_at = time.monotonic()
        cluster.kill(victim)
        cluster.wait_chain(survivors)
        reconfigured_at = time.monotonic()
        wait_acks(cluster, load, reconfigured_at, f"after {victim} was removed")
        stall = report_stall(f"SIGKILL of {victim}", load, killed_at, time.monotonic())
        assert stall < MAX_STALL_S

        cluster.restart(victim)
        cluster.wait_chain([*survivors, victim])
        wait_acks(cluster, load, time.monotonic(), f"after {victim} rejoined")
    finish(cluster, load, topic_id, NODES)


# What a node may write before its "disk" is full: a few seconds of the test load.
FULL_DISK_BYTES = 1_000_000


@pytest.mark.parametrize("victim", ["n1", "n2", "n3"], ids=["head", "middle", "tail"])
def test_a_node_whose_disk_fills_up_stops_and_the_chain_goes_on(cluster, victim):
    """Fail-stop: a node that cannot store what it applies leaves the chain at once, with
    one line saying why, instead of holding up every write (it used to, for good, and log
    a traceback per retry)."""
    user_id, topic_id = start_chain(cluster, max_file_bytes={victim: FULL_DISK_BYTES})
    survivors = [name for name in NODES if name != victim]
    process = cluster.processes[victim]
    with write_load(cluster, user_id, topic_id) as load:
        warm_up(cluster, load)
        cluster.wait_for(lambda: not process.running, what=f"{victim} to stop, its disk full")
        assert process.popen.returncode == 1
        log = process.log()
        assert f"node {victim} stops: cannot write" in log and "Traceback" not in log, log
        last_line = log.rstrip().splitlines()[-1]  # the command's own one line
        assert last_line.startswith(f"error: cannot write {cluster.dir / victim}"), last_line
        cluster.wait_chain(survivors)
        wait_acks(cluster, load, time.monotonic(), f"after {victim} left")
    finish(cluster, load, topic_id, survivors)


def test_when_every_disk_fills_up_the_last_member_goes_on_serving_reads(cluster):
    """The disks fill one after the other (as one shared disk does, in chain order): the
    first two nodes stop, the last one stays to serve reads, and refuses writes until
    there is room again, when it takes them without a restart."""
    limits = {name: FULL_DISK_BYTES * (2 + number) // 2 for number, name in enumerate(NODES)}
    user_id, topic_id = start_chain(cluster, max_file_bytes=limits)
    with write_load(cluster, user_id, topic_id, client_timeout=5.0) as load:
        warm_up(cluster, load)
        cluster.wait_for(
            lambda: [cluster.processes[name].running for name in NODES] == [False, False, True],
            what="n1 and n2 to stop, n3 to go on",
        )
        cluster.wait_for(lambda: load.failures, what="a write refused by n3")
    assert cluster.chain() == ["n3"]
    assert "the chain's last member: it goes on serving reads" in cluster.processes["n3"].log()
    load.verify(tail_messages(cluster, topic_id))  # every acknowledged write, read at n3
    assert any(
        failure.code == grpc.StatusCode.UNAVAILABLE
        and "n3 cannot store writes now" in failure.message
        for failure in load.failures
    ), load.failures
    assert cluster.processes["n3"].running

    make_room(cluster.processes["n3"].popen.pid)
    request = pb.PostMessageRequest(topic_id=topic_id, user_id=user_id, text="room again")
    posted = cluster.wait_for(
        lambda: cluster.board("n3").PostMessage(request, timeout=5), what="n3 to take writes"
    )
    messages = tail_messages(cluster, topic_id)
    load.verify(messages)  # nothing lost, nothing twice
    assert (messages[-1].id, messages[-1].text) == (posted.id, "room again")
    assert "can be written again" in cluster.processes["n3"].log()


def test_a_control_plane_that_cannot_save_changes_nothing_until_it_can(cluster):
    """The control plane saves every configuration before it announces one. While its disk
    is full it says so once, in its log and in ``mboard status``; it changes nothing (a dead
    node stays in the chain, a new one cannot join and is told why) but keeps renewing the
    tail's lease, so reads go on. With room again it catches up by itself."""
    user_id, topic_id = start_chain(cluster)
    post = pb.PostMessageRequest(topic_id=topic_id, user_id=user_id, text="before")
    cluster.board("n1").PostMessage(post, timeout=10)
    control = cluster.processes[CONTROL]
    database = cluster.dir / CONTROL / "control.db"
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)

    def fill_the_disk() -> None:
        """Appends to the WAL fail from now on (EFBIG, as on a full disk). The limit holds
        for every file the process writes: its log must keep room for what it says."""
        wal_size = database.with_name("control.db-wal").stat().st_size
        assert control.log_path.stat().st_size < wal_size // 2
        resource.prlimit(control.popen.pid, resource.RLIMIT_FSIZE, (wal_size, hard))

    def make_room() -> None:
        resource.prlimit(control.popen.pid, resource.RLIMIT_FSIZE, (hard, hard))

    def register_n9() -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as refused:
            n9 = pb.NodeInfo(node_id="n9", address="127.0.0.1:1")
            cluster.control_stub().Register(cluster_pb2.RegisterRequest(node=n9), timeout=10)
        return refused.value

    # A refused change and nothing else: with room again, the problem clears by itself.
    # (Once every member reported the last commit, the floor rises no more: no save.)
    last_seq = cluster.node_status("n1", with_digest=False).applied_seq
    cluster.wait_for(
        lambda: all(m.committed_seq >= last_seq for m in cluster.control_status().members),
        what="every member to report the last commit",
    )
    fill_the_disk()
    refused = register_n9()
    problem = cluster.control_status().storage_problem
    assert problem.startswith(f"cannot write {database}: "), problem
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.details() == f"the control plane {problem}; try again later"
    make_room()
    cluster.wait_for(lambda: not cluster.control_status().storage_problem, what="room noticed")
    assert control.log().count(f"{database} can be written again") == 1

    fill_the_disk()
    epoch = cluster.cluster_state().epoch
    logged = len(control.log())
    cluster.kill("n2")
    cluster.start_node("n4", wait=False)
    cluster.wait_for(
        lambda: "the control plane cannot write" in cluster.processes["n4"].log(),
        what="n4 told why it cannot join",
    )
    lease = timing("lease")
    cluster.wait_for(  # long enough for a removal, and for the tail's lease to run out
        lambda: all(
            m.heartbeat_age_s > 2 * timing("failure_timeout") + lease
            for m in cluster.control_status().members
            if m.node.node_id == "n2"
        ),
        what="n2 silent for two failure timeouts",
    )
    assert cluster.control_status().storage_problem.startswith(f"cannot write {database}: ")
    state = cluster.cluster_state()
    assert (state.epoch, [n.node_id for n in state.chain]) == (epoch, NODES)
    reply = cluster.board("n3").GetMessages(
        pb.GetMessagesRequest(topic_id=topic_id, limit=1), timeout=5
    )
    assert [m.text for m in reply.messages] == ["before"]  # the lease is renewed: reads go on
    log = control.log()[logged:]
    assert log.count(f"cannot write {database}") == 1 and "Traceback" not in log, log

    make_room()
    cluster.wait_chain(["n1", "n3", "n4"])
    assert cluster.control_status().storage_problem == ""
    request = pb.PostMessageRequest(topic_id=topic_id, user_id=user_id, text="room again")
    assert cluster.board("n1").PostMessage(request, timeout=10).text == "room again"


def test_node_killed_while_catching_up_rejoins_later(cluster):
    user_id, topic_id = start_chain(cluster)
    with write_load(cluster, user_id, topic_id, pause=0.0) as load:
        warm_up(cluster, load)
        cluster.kill("n3")
        cluster.wait_chain(["n1", "n2"])
        kill_while_learning(cluster, "n3", load)
        cluster.restart("n3")
        cluster.wait_chain(NODES)
        wait_acks(cluster, load, time.monotonic(), "after n3 rejoined")
    finish(cluster, load, topic_id, NODES)


def kill_while_learning(cluster: Cluster, name: str, load: WriteLoad, attempts: int = 3) -> None:
    """Restart the removed node ``name`` behind a backlog of writes and SIGKILL it while the
    control plane lists it as a learner (catching up).

    Catching up a few thousand entries takes a fraction of a second: a look that comes too
    late (it is in the chain already) kills it anyway and tries again with a new backlog.
    """
    for _ in range(attempts):
        backlog_from = load.ack_count()
        cluster.wait_for(
            lambda n=backlog_from: load.ack_count() >= n + CATCH_UP_BACKLOG,
            what=f"a backlog of {CATCH_UP_BACKLOG} writes",
        )
        cluster.restart(name, wait=False)

        def stage() -> str | None:
            config = cluster.control_status().config
            if name in [n.node_id for n in config.learners]:
                return "learner"
            return "chain" if name in [n.node_id for n in config.chain] else None

        seen = cluster.wait_for(stage, what=f"{name} to rejoin")
        cluster.kill(name)
        cluster.wait_for(lambda: stage() is None, what=f"{name} to be removed")
        if seen == "learner":
            return
    pytest.fail(f"{name} caught up unseen {attempts} times")


def test_last_node_standing_serves_reads_and_writes(cluster):
    user_id, topic_id = start_chain(cluster)
    with write_load(cluster, user_id, topic_id) as load:
        warm_up(cluster, load)
        cluster.kill("n1")
        cluster.kill("n3")
        cluster.wait_chain(["n2"])
        wait_acks(cluster, load, time.monotonic(), "by n2 alone")
        cluster.wait_for(lambda: read_if_fresh(cluster, "n2", topic_id, load), what="reads at n2")
    finish(cluster, load, topic_id, ["n2"])


def test_total_outage_loses_nothing_when_a_stale_node_restarts_first(cluster):
    user_id, topic_id = start_chain(cluster)
    cluster.kill("n3")
    cluster.wait_chain(["n1", "n2"])
    load = write_load(cluster, user_id, topic_id, max_writes=200).start()
    load.join()  # n3 misses all of these
    assert load.ack_count() > 0
    cluster.kill("n1")
    cluster.kill("n2")
    failure_timeout = timing("failure_timeout")

    def given_up_on_the_chain() -> bool:
        members = cluster.control_status().members
        return all(m.node.node_id == "n3" or m.heartbeat_age_s > failure_timeout for m in members)

    cluster.wait_for(given_up_on_the_chain, what="the control plane to see n1 and n2 fail")
    cluster.restart("n3")
    cluster.wait_for(lambda: cluster.node_status("n3", False).epoch > 0, what="n3 to register")
    assert "n3" not in cluster.chain(), "a node that missed acknowledged writes became the chain"
    cluster.restart("n1")
    cluster.restart("n2")
    cluster.wait_for(lambda: sorted(cluster.chain()) == NODES, what="all three in the chain")
    # Every acknowledged post is one log entry after the user and the topic.
    head = cluster.chain()[0]
    assert cluster.node_status(head, False).applied_seq >= 2 + load.ack_count(), "writes lost"
    finish(cluster, load, topic_id, NODES)


# ------------------------------------------------------------------------- pauses


@pytest.mark.parametrize("victim", ["n2", "n3"], ids=["middle", "tail"])
def test_paused_node_serves_nothing_until_it_has_rejoined(cluster, victim):
    user_id, topic_id = start_chain(cluster)
    survivors = [name for name in NODES if name != victim]
    with write_load(cluster, user_id, topic_id) as load:
        warm_up(cluster, load)
        cluster.pause(victim)
        cluster.wait_chain(survivors)
        wait_acks(cluster, load, time.monotonic(), f"while the removed {victim} is frozen")

        # Asked while the victim is frozen, answered as soon as it runs: before it can have
        # heard that it was removed (a frozen tail still believes it is the tail).
        status = cluster.node_stub(victim).Status.future(
            cluster_pb2.StatusRequest(), timeout=FROZEN_CALL_TIMEOUT
        )
        read = cluster.board(victim).GetMessages.future(
            pb.GetMessagesRequest(topic_id=topic_id), timeout=FROZEN_CALL_TIMEOUT
        )
        write = cluster.board(victim).PostMessage.future(
            pb.PostMessageRequest(topic_id=topic_id, user_id=user_id, text="frozen"),
            timeout=FROZEN_CALL_TIMEOUT,
        )
        cluster.resume(victim)
        assert not status.result().serving_reads
        assert read.exception() is not None, f"the removed {victim} served a read"
        assert read.exception().code() == grpc.StatusCode.FAILED_PRECONDITION
        assert write.exception() is not None, f"the removed {victim} accepted a write"
        assert write.exception().code() == grpc.StatusCode.FAILED_PRECONDITION

        def rejoined_as_serving_tail() -> bool:
            serving = read_if_fresh(cluster, victim, topic_id, load)
            role = cluster.node_status(victim, with_digest=False).role
            assert not serving or role == "tail", f"{victim} served a read as {role}"
            return serving and cluster.chain() == [*survivors, victim]

        cluster.wait_for(rejoined_as_serving_tail, what=f"{victim} to rejoin and serve reads")
        wait_acks(cluster, load, time.monotonic(), f"after {victim} rejoined")
    finish(cluster, load, topic_id, NODES)
    assert "frozen" not in {m.text for m in tail_messages(cluster, topic_id)}


def test_a_frozen_node_replaced_under_its_id_serves_nothing_when_it_wakes_and_stops(cluster):
    user_id, topic_id = start_chain(cluster)
    with write_load(cluster, user_id, topic_id) as load:
        warm_up(cluster, load)
        cluster.pause("n3")
        cluster.wait_chain(["n1", "n2"])
        # A new node takes the frozen one's id (another address, empty data): it catches up
        # and becomes the tail under that id.
        cluster.start_node("n3-again", id="n3")
        cluster.wait_for(
            lambda: cluster.chain() == NODES and serves_reads(cluster, "n3-again"),
            what="the new n3 serving as the tail",
        )
        wait_acks(cluster, load, time.monotonic(), "with the new n3 as the tail")
        frozen = cluster.processes["n3"].popen
        cluster.resume("n3")

        # Its heartbeats are not the member's: no lease, so no read, however stale; asked
        # to register again, it is refused while the new n3 lives, and stops.
        def stopped() -> bool:
            try:
                read_if_fresh(cluster, "n3", topic_id, load)
            except grpc.RpcError as error:  # going down, or gone
                assert error.code() in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
            return frozen.poll() is not None

        cluster.wait_for(stopped, what="the woken n3 to stop")
        assert frozen.returncode == 1
        last_line = (cluster.dir / "n3.log").read_text().splitlines()[-1]
        assert last_line.endswith(
            f"refused node n3: node id n3 is taken by a live node at {cluster.address('n3-again')}"
            ": give this node another id, or stop that one first"
        ), last_line
        wait_acks(cluster, load, time.monotonic(), "after the woken n3 stopped")
    finish(cluster, load, topic_id, ["n1", "n2", "n3-again"])


def test_paused_head_acknowledges_nothing_after_waking_and_is_truncated(cluster):
    user_id, topic_id = start_chain(cluster)
    with write_load(cluster, user_id, topic_id) as load:
        warm_up(cluster, load)
        cluster.pause("n1")
        cluster.wait_chain(["n2", "n3"])
        # Clients time out on the frozen head and move to the new one. Many commits there
        # queue many acks on n2's end of its old stream from n1, which n1 reads when it wakes.
        wait_acks(cluster, load, time.monotonic(), "by the new head n2", count=400)

        # n1 takes this write as soon as it runs again, still believing it is the head: it
        # must never acknowledge it, since the chain moved on without n1.
        stale = cluster.board("n1").PostMessage.future(
            pb.PostMessageRequest(topic_id=topic_id, user_id=user_id, text="stale-head"),
            timeout=FROZEN_CALL_TIMEOUT,
            metadata=(("x-request-id", str(uuid.uuid4())),),
        )
        cluster.resume("n1")
        error = stale.exception()
        assert error is not None, f"the former head acknowledged a lost write: {stale.result()}"
        assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.FAILED_PRECONDITION)

        cluster.wait_chain(["n2", "n3", "n1"])
        wait_acks(cluster, load, time.monotonic(), "after n1 rejoined")
    # Convergence includes n1: whatever it took while it believed it was the head is gone.
    finish(cluster, load, topic_id, NODES)
    assert "stale-head" not in {m.text for m in tail_messages(cluster, topic_id)}


# ------------------------------------------------------------------ control plane


def test_chain_keeps_writing_without_the_control_plane_and_reads_stop_safely(cluster):
    user_id, topic_id = start_chain(cluster)
    before = cluster.cluster_state()
    with write_load(cluster, user_id, topic_id) as load:
        warm_up(cluster, load)
        cluster.kill("control")
        killed_at = time.monotonic()
        wait_acks(cluster, load, killed_at, "on the unchanged chain without control")
        # The tail serves reads only while they are fresh, and stops once its lease ran out.
        cluster.wait_for(
            lambda: not read_if_fresh(cluster, "n3", topic_id, load),
            what="the tail to stop serving reads without a lease",
        )
        # Down for several failure timeouts: the nodes retry all along, and must reach the
        # restarted control plane within a failure timeout (or it removes them all).
        cluster.wait_for(
            lambda: (
                time.monotonic() > killed_at + 4 * timing("failure_timeout")
                and load.acked_since(killed_at) >= 2 * RESUMED_ACKS
            ),
            what="writes while the control plane is down",
        )
        assert not serves_reads(cluster, "n3")

        cluster.restart("control")
        assert_membership_kept(cluster, before, time.monotonic())
        cluster.wait_for(
            lambda: read_if_fresh(cluster, "n3", topic_id, load),
            what="reads at the tail once the restarted control plane grants a lease",
        )
        # The restarted control plane relearned the members: it still handles a failure.
        cluster.kill("n2")
        cluster.wait_chain(["n1", "n3"])
        assert cluster.cluster_state().epoch > before.epoch
        wait_acks(cluster, load, time.monotonic(), "after n2 failed")
    finish(cluster, load, topic_id, ["n1", "n3"])


def test_frozen_control_plane_blames_no_member_for_its_own_silence(cluster):
    user_id, topic_id = start_chain(cluster)
    before = cluster.cluster_state()
    failure_timeout = timing("failure_timeout")
    with write_load(cluster, user_id, topic_id) as load:
        warm_up(cluster, load)
        cluster.pause("control")
        paused_at = time.monotonic()
        # Frozen well past the failure timeout (a starved or stopped process), while the
        # chain goes on committing writes without it.
        cluster.wait_for(
            lambda: (
                time.monotonic() > paused_at + 2 * failure_timeout
                and load.acked_since(paused_at) >= RESUMED_ACKS
            ),
            what="writes while the control plane is frozen",
        )
        cluster.resume("control")
        assert_membership_kept(cluster, before, time.monotonic())
    finish(cluster, load, topic_id, NODES)


def test_default_timings_do_not_flap_under_load(cluster):
    user_id, topic_id = start_chain(cluster, **DEFAULT_TIMINGS)
    before = cluster.cluster_state()
    load = write_load(cluster, user_id, topic_id, max_seconds=10.0).start()
    load.join()
    after = cluster.cluster_state()
    assert load.ack_count() > 0
    assert (after.epoch, list(after.chain)) == (before.epoch, list(before.chain)), cluster.logs()
    finish(cluster, load, topic_id, NODES)


# ------------------------------------------------------------------ random faults

# A seeded series of faults; more episodes (or other seeds) make the test a soak, e.g.
# MBOARD_CHAOS_EPISODES=150 MBOARD_CHAOS_SEED=7 pytest tests/test_failures.py -k random
CHAOS_SEED = int(os.environ.get("MBOARD_CHAOS_SEED", "1"))
CHAOS_EPISODES = int(os.environ.get("MBOARD_CHAOS_EPISODES", "16"))
# How long a fault lasts: a process stays stopped (or down) this long. A fault's length,
# not a wait for anything: every wait for the cluster is on a condition with a deadline.
FAULT_S = (0.2, 3.0)
HEAL_TIMEOUT = 90.0  # generous: a loaded 2-core machine, and restarts of Python processes


def _hold(rng: random.Random) -> None:
    time.sleep(rng.uniform(*FAULT_S))


def _kill_node(cluster: Cluster, rng: random.Random) -> None:
    victim = rng.choice(NODES)
    cluster.kill(victim)
    if rng.random() < 0.5:  # sometimes back before the control plane noticed
        cluster.wait_for(lambda: victim not in cluster.chain(), HEAL_TIMEOUT, f"{victim} removed")
    cluster.restart(victim)


def _stop_node(cluster: Cluster, rng: random.Random) -> None:
    victim = rng.choice(NODES)
    assert cluster.stop(victim) == 0  # SIGTERM: it leaves the chain, then exits
    cluster.restart(victim)


def _pause_node(cluster: Cluster, rng: random.Random) -> None:
    victim = rng.choice(NODES)
    cluster.pause(victim)
    _hold(rng)
    cluster.resume(victim)


def _kill_one_pause_another(cluster: Cluster, rng: random.Random) -> None:
    killed, paused = rng.sample(NODES, 2)
    cluster.kill(killed)
    cluster.pause(paused)
    _hold(rng)
    cluster.resume(paused)
    cluster.restart(killed)


def _kill_two_nodes(cluster: Cluster, rng: random.Random) -> None:
    first, second = rng.sample(NODES, 2)
    cluster.kill(first)
    _hold(rng)
    cluster.kill(second)
    cluster.restart(first)
    cluster.restart(second)


def _kill_control(cluster: Cluster, rng: random.Random) -> None:
    cluster.kill("control")
    _hold(rng)
    cluster.restart("control")


def _pause_control(cluster: Cluster, rng: random.Random) -> None:
    cluster.pause("control")
    _hold(rng)
    cluster.resume("control")


FAULTS = [
    _kill_node, _kill_node, _stop_node, _pause_node, _pause_node, _kill_one_pause_another,
    _kill_two_nodes, _kill_control, _pause_control,
]  # fmt: skip


def _healed(cluster: Cluster, load: WriteLoad, follower: Subscriptions, fault: str) -> None:
    """All three nodes are back in the chain, writes go on, and the subscription got them."""
    cluster.wait_for(
        lambda: sorted(cluster.chain()) == NODES, HEAL_TIMEOUT, f"all nodes back after {fault}"
    )
    since = time.monotonic()
    cluster.wait_for(
        lambda: load.acked_since(since) >= RESUMED_ACKS,
        HEAL_TIMEOUT,
        f"{RESUMED_ACKS} writes acknowledged after {fault}",
    )
    latest = load.latest_ack().message.id
    cluster.wait_for(
        lambda: latest in ids_of(follower.events()),
        HEAL_TIMEOUT,
        f"the subscription to deliver post {latest} after {fault}",
    )


@pytest.mark.timeout(120 + 60 * CHAOS_EPISODES)
def test_random_faults_lose_nothing_and_every_replica_converges(cluster):
    """Random crashes, freezes and stops of nodes and of the control plane, one or two at a
    time, under a write load and a live subscription (the old head's dropped entries,
    rejoins while another node catches up, a control plane down during a failover, ...).
    After each the chain heals; at the end every node holds the same board with every
    acknowledged write once, and the subscription got every acknowledged post once, in
    order."""
    rng = random.Random(CHAOS_SEED)
    user_id, topic_id = start_chain(cluster)
    seconds = 60.0 + 60.0 * CHAOS_EPISODES
    with Subscriptions(cluster.control_address, user_id, [topic_id]) as follower:
        load = write_load(cluster, user_id, topic_id, max_seconds=seconds, max_writes=10**7)
        with load:
            warm_up(cluster, load)
            for episode in range(CHAOS_EPISODES):
                fault = rng.choice(FAULTS)
                print(f"seed {CHAOS_SEED} episode {episode}: {fault.__name__}")
                fault(cluster, rng)
                _healed(cluster, load, follower, f"episode {episode} ({fault.__name__})")
        finish(cluster, load, topic_id, NODES)
        acked = {ack.message.id for ack in load.acks}
        cluster.wait_for(
            lambda: acked <= ids_of(follower.events()), HEAL_TIMEOUT, "every post delivered"
        )
    assert follower.errors == []
    assert_every_post_once(follower.events(), load)
