"""Live subscriptions against real node processes (issue 5).

- the original's scenario 2: one client subscribes (the `mboard client subscribe` command and
  the library), another posts, likes, updates and deletes; every event arrives once, in order,
  in the original client's words; a stream resumed with from_sequence has no gap and no
  duplicate, from any point;
- bad tokens (forged, tampered, expired, another node, user or topic) and malformed requests
  are refused and stream nothing;
- 60 streams from one process, joining during a write load, spread over a 3-node chain and
  each get every post exactly once (the replay and the live events meet without gap or overlap);
- a history of several replay pages, while posts go on: the snapshot and a from_sequence
  replay each meet the live events without gap or overlap;
- a subscriber that stops reading is cut off while the others and the writes go on;
- a post the tail has not applied (it is frozen) is streamed by no node, live or replayed;
- under a write load, the node serving a subscription (or the head) is SIGKILLed: the library
  resumes on another node (or stays) and delivers every acknowledged post exactly once, in
  seq order.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import grpc
import pytest
from harness import Cluster
from load import WriteLoad
from subscribers import (
    CLIENT_TIMEOUT,
    RPC_TIMEOUT,
    Subscriptions,
    assert_every_post_once,
    ids_of,
    seqs,
)

from mboard.api import razpravljalnica_pb2 as pb
from mboard.api import razpravljalnica_pb2_grpc as pb_grpc
from mboard.client import Client
from mboard.client.commands import event as event_line
from mboard.node.subscriptions import REPLAY_PAGE, sign_token
from mboard.up import mboard_command

pytestmark = pytest.mark.timeout(300)

T = TypeVar("T")
# Generous, for a loaded machine: a call's whole budget, retries and failovers included.
EVENTS_TIMEOUT = 60.0
SECRET = "test cluster secret"
BANNER = "Subscribed to topics [1]. Waiting for events (Ctrl+C to stop)..."


# ------------------------------------------------------------------ helpers


def with_client(cluster: Cluster, action: Callable[[Client], Awaitable[T]]) -> T:
    """Run ``action(client)`` with a library client (it retries until the chain serves)."""

    async def main() -> T:
        async with Client(cluster.control_address, timeout=CLIENT_TIMEOUT) as client:
            return await action(client)

    return asyncio.run(main())


def start_chain(cluster: Cluster, node_ids: Sequence[str], **node_overrides: object) -> None:
    cluster.start_chain(node_ids, control={"secret": SECRET}, **node_overrides)


def start_forum(cluster: Cluster, node_ids: Sequence[str]) -> None:
    """A chain of ``node_ids`` with user 1 (Alice) and topic 1 (General)."""
    start_chain(cluster, node_ids)

    async def setup(client: Client) -> None:
        await client.create_user("Alice")
        await client.create_topic("General")

    with_client(cluster, setup)


def subscribers_per_node(cluster: Cluster, node_ids: Sequence[str]) -> dict[str, int]:
    """Each node's own count of the streams it serves (Node.Status)."""
    return {n: cluster.node_status(n, with_digest=False).subscribers for n in node_ids}


def wait_subscribers(cluster: Cluster, node_ids: Sequence[str], total: int) -> dict[str, int]:
    """Wait until the nodes serve ``total`` streams between them; return the count per node."""

    def settled() -> dict[str, int] | None:
        loads = subscribers_per_node(cluster, node_ids)
        return loads if sum(loads.values()) == total else None

    return cluster.wait_for(
        settled,
        EVENTS_TIMEOUT,
        lambda: f"{total} streams on {node_ids} (now {subscribers_per_node(cluster, node_ids)})",
    )


def grant(cluster: Cluster, user_id: int, topic_ids: Sequence[int]) -> pb.SubscriptionNodeResponse:
    """A token and a node from the head's GetSubscriptionNode."""
    request = pb.SubscriptionNodeRequest(user_id=user_id, topic_id=list(topic_ids))
    head = cluster.chain()[0]
    return cluster.board(head).GetSubscriptionNode(request, timeout=RPC_TIMEOUT)


def subscribe_request(
    granted: pb.SubscriptionNodeResponse,
    user_id: int,
    topic_ids: Sequence[int],
    from_sequence: int = 0,
) -> pb.SubscribeTopicRequest:
    return pb.SubscribeTopicRequest(
        topic_id=list(topic_ids),
        user_id=user_id,
        subscribe_token=granted.subscribe_token,
        from_sequence=from_sequence,
    )


class RawStream:
    """One SubscribeTopic call made by hand (sync gRPC), read by a thread once ``read()`` is
    called: until then the client accepts only what gRPC flow control lets in."""

    def __init__(
        self,
        address: str,
        request: pb.SubscribeTopicRequest,
        options: Sequence[tuple[str, object]] = (),
    ) -> None:
        self._channel = grpc.insecure_channel(address, options=list(options))
        self._call = pb_grpc.MessageBoardStub(self._channel).SubscribeTopic(request)
        self._events: list[pb.MessageEvent] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.error: grpc.RpcError | None = None
        self.ended = threading.Event()

    def headers_within(self, timeout: float) -> bool:
        """Whether the stream's initial metadata arrived within ``timeout`` seconds."""
        arrived = threading.Event()
        waiter = threading.Thread(
            target=lambda: (self._call.initial_metadata(), arrived.set()), daemon=True
        )
        waiter.start()  # ends by itself once the call does (close cancels it)
        return arrived.wait(timeout)

    def read(self) -> RawStream:
        self._thread = threading.Thread(target=self._read, name="raw-subscription")
        self._thread.start()
        return self

    def _read(self) -> None:
        try:
            for event in self._call:
                with self._lock:
                    self._events.append(event)
        except grpc.RpcError as error:
            self.error = error
        finally:
            self.ended.set()

    @property
    def events(self) -> list[pb.MessageEvent]:
        with self._lock:
            return list(self._events)

    @property
    def code(self) -> grpc.StatusCode | None:
        return self.error.code() if self.error else None

    def close(self) -> None:
        self._call.cancel()
        if self._thread:
            self._thread.join(RPC_TIMEOUT)
            assert not self._thread.is_alive(), "the stream reader did not stop"
        self._channel.close()

    def __enter__(self) -> RawStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# ------------------------------------------------- scenario 2 and from_sequence


def test_each_event_arrives_once_in_order_and_resumes_without_gap(cluster: Cluster) -> None:
    start_chain(cluster, ["n1", "n2", "n3"])

    async def setup(client: Client) -> None:
        await client.create_user("Alice")  # seq 1
        await client.create_user("Bob")  # seq 2
        await client.create_topic("General")  # seq 3
        await client.create_topic("Random")  # seq 4
        await client.post(1, 1, "Hello everyone!")  # seq 5: replayed as the current state

    with_client(cluster, setup)
    out, err = cluster.dir / "cli-subscriber.out", cluster.dir / "cli-subscriber.err"
    # Through a shell only to keep stdout and stderr apart; exec: SIGINT reaches mboard.
    command = mboard_command("client", "--control", cluster.control_address, "subscribe", "2", "1")
    redirect = f'exec "$@" >{shlex.quote(str(out))} 2>{shlex.quote(str(err))}'
    cli = cluster.spawn("cli-subscriber", ["sh", "-c", redirect, "sh", *command])
    replayed = "[POST] Seq=5, Msg ID=1, User=1, Text=Hello everyone!, Likes=0"

    def cli_lines() -> list[str]:
        return out.read_text().splitlines() if out.exists() else []

    with Subscriptions(cluster.control_address, 2, [1, 2]) as library:
        # The replay is read after the stream registered: from here on nothing is missed.
        cluster.wait_for(
            lambda: cli_lines() == [BANNER, replayed] and len(library.events()) == 1,
            EVENTS_TIMEOUT,
            lambda: f"the replayed post (CLI {cli_lines()}, library {library.events()})",
        )

        async def writes(client: Client) -> None:
            await client.post(1, 1, "New message")  # seq 6, message 2
            await client.post(2, 2, "Elsewhere")  # seq 7, message 3, the other topic
            await client.like(1, 2, 2)  # seq 8
            await client.like(1, 2, 2)  # liked again: no change, no event
            await client.update(1, 2, 1, "Edited message")  # seq 9
            await client.delete(1, 2, 1)  # seq 10
            await client.post(1, 2, "Bye")  # seq 11, message 4

        with_client(cluster, writes)
        general = [
            replayed,
            "[POST] Seq=6, Msg ID=2, User=1, Text=New message, Likes=0",
            "[LIKE] Seq=8, Msg ID=2, User=1, Text=New message, Likes=1",
            "[UPDATE] Seq=9, Msg ID=2, User=1, Text=Edited message, Likes=1",
            "[DELETE] Seq=10, Msg ID=2, User=1, Text=Edited message, Likes=1",
            "[POST] Seq=11, Msg ID=4, User=2, Text=Bye, Likes=0",
        ]
        both = [*general[:2], "[POST] Seq=7, Msg ID=3, User=2, Text=Elsewhere, Likes=0"]
        both += general[2:]

        def library_lines() -> list[str]:
            return [event_line(e) for e in library.events()]

        cluster.wait_for(
            lambda: cli_lines() == [BANNER, *general] and library_lines() == both,
            EVENTS_TIMEOUT,
            lambda: f"every event once, in order:\nCLI {cli_lines()}\nlibrary {library_lines()}",
        )

        # Resume from every point of topic 1's history: exactly what follows, then live.
        with contextlib.ExitStack() as streams:
            resumed = {}
            for from_sequence in [0, 5, 6, 8, 9, 10, 11]:
                granted = grant(cluster, 2, [1])
                request = subscribe_request(granted, 2, [1], from_sequence)
                resumed[from_sequence] = streams.enter_context(
                    RawStream(granted.node.address, request)
                ).read()
            with_client(cluster, lambda client: client.post(1, 1, "Live again"))  # seq 12
            live = "[POST] Seq=12, Msg ID=5, User=1, Text=Live again, Likes=0"
            for stream in resumed.values():
                cluster.wait_for(
                    lambda stream=stream: seqs(stream.events)[-1:] == [12],
                    EVENTS_TIMEOUT,
                    lambda stream=stream: f"the live post after a resume (got {stream.events})",
                )
            history = [*general, live]
            for position, from_sequence in enumerate([5, 6, 8, 9, 10, 11], start=1):
                lines = [event_line(e) for e in resumed[from_sequence].events]
                assert lines == history[position:], f"resumed after seq {from_sequence}"
            # Without from_sequence: the current state instead (message 2 is deleted).
            lines = [event_line(e) for e in resumed[0].events]
            assert lines == [replayed, general[-1], live]
        cluster.wait_for(
            lambda: cli_lines()[-1] == live and library_lines()[-1] == live,
            EVENTS_TIMEOUT,
            lambda: f"the live post:\nCLI {cli_lines()}\nlibrary {library_lines()}",
        )

    cluster.kill("cli-subscriber", signal.SIGINT)  # Ctrl+C
    assert cli.popen.wait(CLIENT_TIMEOUT) == 0
    assert cli_lines() == [BANNER, *general, live]
    # Nothing went wrong; a loaded machine may have moved it (that leaves a note), no more.
    notes = err.read_text().splitlines()
    assert all(note.startswith("subscription on ") for note in notes), notes
    assert library.errors == []
    assert [event_line(e) for e in library.events()] == [*both, live]


# ------------------------------------------------------------------ bad tokens


def test_bad_tokens_and_requests_are_refused_and_stream_nothing(cluster: Cluster) -> None:
    start_chain(cluster, ["n1", "n2"])

    async def setup(client: Client) -> None:
        await client.create_user("Alice")
        await client.create_user("Bob")
        await client.create_topic("General")
        await client.create_topic("Random")
        await client.post(1, 1, "Hello everyone!")  # what an accepted stream replays first

    with_client(cluster, setup)
    granted = grant(cluster, 1, [1])
    node = granted.node
    other = next(n for n in cluster.cluster_state().chain if n.node_id != node.node_id)
    genuine = subscribe_request(granted, 1, [1])
    _, signature = granted.subscribe_token.split(".")
    other_users_claims, _ = grant(cluster, 2, [1]).subscribe_token.split(".")

    def with_token(token: str) -> pb.SubscribeTopicRequest:
        return pb.SubscribeTopicRequest(topic_id=[1], user_id=1, subscribe_token=token)

    def crafted(secret: str, expires_at: float) -> pb.SubscribeTopicRequest:
        return with_token(sign_token(secret.encode(), 1, [1], node.node_id, expires_at))

    def signed_for(peer: pb.NodeInfo, from_sequence: int) -> pb.SubscribeTopicRequest:
        request = with_token(sign_token(SECRET.encode(), 1, [1], peer.node_id, time.time() + 60))
        request.from_sequence = from_sequence
        return request

    head, tail = cluster.cluster_state().head, cluster.cluster_state().tail

    an_hour = time.time() + 3600
    denied, invalid = grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT
    refused = {
        "forged": (
            node, crafted("not the cluster secret", an_hour), denied, "signature is not valid",
        ),
        "tampered": (
            node, with_token(f"{other_users_claims}.{signature}"), denied,
            "signature is not valid",
        ),
        "expired": (
            node, crafted(SECRET, time.time() - 1), denied, "the subscribe token has expired",
        ),
        "another node": (
            other, genuine, denied, f"is for node {node.node_id}, not {other.node_id}",
        ),
        "another user": (
            node, subscribe_request(granted, 2, [1]), denied,
            "the subscribe token is for user 1, not 2",
        ),
        "a topic outside": (
            node, subscribe_request(granted, 1, [1, 2]), denied,
            "the subscribe token does not cover topics [2]",
        ),
        "garbage": (node, with_token("garbage"), denied, "the subscribe token is malformed"),
        "no topics": (
            node, subscribe_request(granted, 1, []), invalid,
            "topic_id must list at least one topic",
        ),
        "too many topics": (
            node, subscribe_request(granted, 1, list(range(1, 10_002))),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "a subscription may name at most 10,000 topics, got 10,001",
        ),
        "negative from_sequence": (
            node, subscribe_request(granted, 1, [1], -1), invalid,
            "from_sequence must be >= 0, got -1",
        ),
        # The head has every event there is; another node may be behind for a moment.
        "from_sequence beyond the log, at the head": (
            head, signed_for(head, 10**9), invalid,
            "from_sequence 1000000000 is beyond the last event (seq 5)",
        ),
        "from_sequence beyond the log, at the tail": (
            tail, signed_for(tail, 10**9), grpc.StatusCode.UNAVAILABLE,
            f"{tail.node_id} has not received seq 1000000000 yet (it has 5)",
        ),
    }  # fmt: skip
    with contextlib.ExitStack() as opened:

        def open_stream(address: str, request: pb.SubscribeTopicRequest) -> RawStream:
            return opened.enter_context(RawStream(address, request)).read()

        streams = {
            what: open_stream(at.address, request) for what, (at, request, *_) in refused.items()
        }
        # The genuine token, and one made the same way with the configured secret: both
        # accepted, so each refusal is about what was changed, not how the token was made.
        accepted = {
            "genuine": genuine,
            "crafted": crafted(SECRET, an_hour),
            # Counted once: 300,000 of them would be too many parameters for SQLite.
            "one topic named 300,000 times": subscribe_request(granted, 1, [1] * 300_000),
        }
        for what, request in accepted.items():
            stream = open_stream(node.address, request)
            cluster.wait_for(
                lambda stream=stream: stream.events or stream.ended.is_set(),
                EVENTS_TIMEOUT,
                f"the {what} token's stream",
            )
            assert stream.error is None, (what, stream.error)
            assert [e.message.text for e in stream.events] == ["Hello everyone!"], what
        # A quiet topic: no event to send, yet the stream's headers say it is open.
        quiet_grant = grant(cluster, 1, [2])
        quiet_request = subscribe_request(quiet_grant, 1, [2])
        quiet = opened.enter_context(RawStream(quiet_grant.node.address, quiet_request))
        assert quiet.headers_within(RPC_TIMEOUT), "an accepted stream sends its headers"
        for what, stream in streams.items():
            _, _, code, reason = refused[what]
            assert stream.ended.wait(EVENTS_TIMEOUT), f"{what}: not refused"
            assert stream.code == code, (what, stream.error)
            assert reason in stream.error.details(), what
            assert stream.events == [], what
    # The command line says "Subscribed" only once a node accepted the subscription.
    for args, reason in ((["1", "7"], "topic 7 does not exist"), (["9", "1"], "user 9")):
        command = mboard_command("client", "--control", cluster.control_address, "subscribe", *args)
        done = subprocess.run(command, capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
        assert (done.returncode, done.stdout) == (1, ""), done
        assert f"error: NOT_FOUND: {reason}" in done.stderr


# -------------------------------------------------------------------- placement


def test_sixty_subscribers_joining_under_load_spread_and_get_every_post_once(
    cluster: Cluster,
) -> None:
    nodes = ["n1", "n2", "n3"]
    start_forum(cluster, nodes)
    count = 60
    with WriteLoad(cluster.control_address, 1, 1, max_writes=3000, tag="sixty") as load:
        cluster.wait_for(lambda: load.ack_count() >= 50, EVENTS_TIMEOUT)
        # Each stream joins mid-load: its replay of the board and its live events must meet
        # with nothing missing and nothing twice.
        with Subscriptions(cluster.control_address, 1, [1], count) as many:
            loads = wait_subscribers(cluster, nodes, count)
            assert max(loads.values()) <= count // 2, loads
            joined_at = time.monotonic()
            cluster.wait_for(lambda: load.acked_since(joined_at) >= 100, EVENTS_TIMEOUT)
            load.stop()
            assert load.failures == []
            acked = {ack.message.id for ack in load.acks}
            cluster.wait_for(
                lambda: all(acked <= ids_of(events) for events in many.all_events()),
                EVENTS_TIMEOUT,
                lambda: (
                    f"all {len(acked)} posts on every stream "
                    f"(fewest {min(map(len, many.all_events()))})"
                ),
            )
            for events in many.all_events():
                assert_every_post_once(events, load)
            assert many.errors == []
    # Streams that end leave nothing behind on the nodes.
    wait_subscribers(cluster, nodes, 0)


def test_a_replay_of_several_pages_meets_the_live_events(cluster: Cluster) -> None:
    """A history longer than a few replay pages, while posts keep coming: the snapshot
    (from_message_id) and the log replay (from_sequence) each stream every post once."""
    nodes = ["n1", "n2", "n3"]
    start_forum(cluster, nodes)
    history = 2 * REPLAY_PAGE + REPLAY_PAGE // 2
    with WriteLoad(cluster.control_address, 1, 1, writers=8, tag="pages") as load:
        cluster.wait_for(lambda: load.ack_count() >= history, EVENTS_TIMEOUT)
        granted = grant(cluster, 1, [1])
        resume_all = subscribe_request(granted, 1, [1], from_sequence=1)
        with (
            Subscriptions(cluster.control_address, 1, [1]) as snapshot,
            RawStream(granted.node.address, resume_all).read() as from_log,
        ):
            joined_at = time.monotonic()
            cluster.wait_for(lambda: load.acked_since(joined_at) >= 100, EVENTS_TIMEOUT)
            load.stop()
            assert load.failures == []
            acked = {ack.message.id for ack in load.acks}
            for name, events in (("snapshot", snapshot.events), ("log", lambda: from_log.events)):
                cluster.wait_for(
                    lambda events=events: acked <= ids_of(events()),
                    EVENTS_TIMEOUT,
                    lambda events=events, name=name: (
                        f"all {len(acked)} posts on the {name} replay (now {len(events())})"
                    ),
                )
                assert_every_post_once(events(), load)
            assert snapshot.errors == [] and from_log.error is None


# ---------------------------------------------------------------- slow reader


# The slow client takes in a few KB and then nothing: no window growth (BDP), a small window.
STALLED_CLIENT = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)]


def test_a_subscriber_that_never_reads_is_cut_off(cluster: Cluster) -> None:
    nodes = ["n1", "n2", "n3"]
    start_chain(cluster, nodes, subscriber_queue=50)
    with_client(cluster, lambda client: client.create_user("Alice"))
    with_client(cluster, lambda client: client.create_topic("General"))
    # Two grants on the same node (the head spreads them: the fourth repeats one at the
    # latest): a stalled stream and a reading one side by side.
    granted_by_node: dict[str, pb.SubscriptionNodeResponse] = {}
    for _ in range(len(nodes) + 1):
        granted = grant(cluster, 1, [1])
        if granted.node.node_id in granted_by_node:
            break
        granted_by_node[granted.node.node_id] = granted
    node = granted.node.node_id
    stalled = RawStream(granted.node.address, subscribe_request(granted, 1, [1]), STALLED_CLIENT)
    reader = RawStream(granted.node.address, subscribe_request(granted_by_node[node], 1, [1]))
    with stalled, reader.read():
        wait_subscribers(cluster, [node], 2)
        with WriteLoad(cluster.control_address, 1, 1, max_writes=3000) as load:
            # The node drops the stalled stream once its queue of 50 events is full...
            cluster.wait_for(
                lambda: subscribers_per_node(cluster, [node])[node] == 1,
                EVENTS_TIMEOUT,
                lambda: f"the stalled stream cut off ({load.ack_count()} posts acknowledged)",
            )
            # ... and goes on serving the other one, as the chain goes on committing.
            cut_at = load.ack_count()
            cluster.wait_for(lambda: load.ack_count() >= cut_at + 100, EVENTS_TIMEOUT)
        assert load.failures == []
        acked = load.acks
        cluster.wait_for(
            lambda: len(reader.events) >= len(acked),
            EVENTS_TIMEOUT,
            lambda: (
                f"all {len(acked)} posts at the reader (has {len(reader.events)}, "
                f"error {reader.error})"
            ),
        )
        received = reader.events
        assert reader.error is None
        assert_every_post_once(received, load)

        # Reading now, the stalled client gets what was let in, then the reason it was cut.
        stalled.read()
        assert stalled.ended.wait(EVENTS_TIMEOUT), "the stalled stream did not end"
        assert stalled.code == grpc.StatusCode.RESOURCE_EXHAUSTED, stalled.error
        got = stalled.events
        assert 0 < len(got) < len(received)
        assert got == received[: len(got)]
        assert stalled.error.details() == (
            "the subscriber fell more than 50 events behind; "
            f"resume with from_sequence={got[-1].sequence_number}"
        )


# ------------------------------------------------------------ commits only


def test_an_entry_the_tail_has_not_applied_is_not_streamed(cluster: Cluster) -> None:
    """Head and middle apply a post while the tail is frozen: neither streams it, live or in
    a replay, until the tail has it (the frozen tail stays in the chain: long timeouts)."""
    nodes = ["n1", "n2", "n3"]
    control = {"secret": SECRET, "failure_timeout": 60.0, "lease": 5.0}
    cluster.start_chain(nodes, control=control)
    with_client(cluster, lambda client: client.create_user("Alice"))
    with_client(cluster, lambda client: client.create_topic("General"))
    granted_by_node: dict[str, pb.SubscriptionNodeResponse] = {}
    for _ in range(2 * len(nodes)):  # the head spreads its grants over the chain
        granted = grant(cluster, 1, [1])
        granted_by_node.setdefault(granted.node.node_id, granted)
    head = cluster.board("n1")

    def post(text: str, metadata: tuple = ()) -> pb.Message:
        request = pb.PostMessageRequest(topic_id=1, user_id=1, text=text)
        return head.PostMessage(request, timeout=RPC_TIMEOUT, metadata=metadata)

    def opened_on(node: str) -> RawStream:
        granted = granted_by_node[node]
        return RawStream(granted.node.address, subscribe_request(granted, 1, [1]))

    def texts(stream: RawStream) -> list[str]:
        return [event.message.text for event in stream.events]

    with contextlib.ExitStack() as opened:
        streams = {node: opened.enter_context(opened_on(node)).read() for node in ("n1", "n2")}
        post("committed")
        cluster.wait_for(
            lambda: all(texts(stream) == ["committed"] for stream in streams.values()),
            EVENTS_TIMEOUT,
            "the committed post on both streams",
        )
        metadata = (("x-request-id", str(uuid.uuid4())),)
        cluster.pause("n3")
        try:
            with pytest.raises(grpc.RpcError) as timed_out:
                post("uncommitted", metadata)
            assert timed_out.value.code() == grpc.StatusCode.UNAVAILABLE
            for node, stream in streams.items():
                assert texts(stream) == ["committed"], f"{node} streamed an uncommitted post"
            # Nor does a replay show it: a stream opened now waits for the commit, in vain.
            late = opened.enter_context(opened_on("n1")).read()
            assert late.ended.wait(EVENTS_TIMEOUT), "the replay did not wait for the commit"
            assert (late.code, late.events) == (grpc.StatusCode.UNAVAILABLE, [])
        finally:
            cluster.resume("n3")
        cluster.wait_for(lambda: post("uncommitted", metadata), what="the retried post")
        cluster.wait_for(
            lambda: all(texts(s) == ["committed", "uncommitted"] for s in streams.values()),
            EVENTS_TIMEOUT,
            "the post on both streams once the tail has it",
        )
        assert [stream.error for stream in streams.values()] == [None, None]


# ------------------------------------------------------------ node killed


@pytest.mark.parametrize("victim", ["serving node", "head"])
def test_subscription_gets_every_acknowledged_post_once_when_a_node_is_killed(
    cluster: Cluster, victim: str
) -> None:
    nodes = ["n1", "n2", "n3"]
    start_forum(cluster, nodes)
    with Subscriptions(cluster.control_address, 1, [1]) as follower:
        wait_subscribers(cluster, nodes, 1)
        with WriteLoad(cluster.control_address, 1, 1, max_writes=2000, tag="kill") as load:
            cluster.wait_for(
                lambda: load.ack_count() >= 100 and len(follower.events()) >= 50, EVENTS_TIMEOUT
            )
            loads = wait_subscribers(cluster, nodes, 1)
            serving = next(n for n, count in loads.items() if count == 1)
            killed = serving if victim == "serving node" else cluster.chain()[0]
            moved_before = len(follower.moves())  # a loaded machine may have moved it already
            cluster.kill(killed)
            survivors = [n for n in nodes if n != killed]
            # The subscription is on a surviving node (moved there if it had to), and the
            # writes went on after the kill.
            wait_subscribers(cluster, survivors, 1)
            after_kill = time.monotonic()
            cluster.wait_for(lambda: load.acked_since(after_kill) >= 100, EVENTS_TIMEOUT)
        assert load.failures == []
        acked = {ack.message.id for ack in load.acks}
        cluster.wait_for(
            lambda: acked <= ids_of(follower.events()),
            EVENTS_TIMEOUT,
            lambda: f"all {len(acked)} acknowledged posts (have {len(follower.events())})",
        )
        events = follower.events()
        assert follower.errors == []
        moves = follower.moves()[moved_before:]
    if killed == serving:
        assert any(move.startswith(f"subscription on {serving} ") for move in moves), moves
    assert_every_post_once(events, load)
