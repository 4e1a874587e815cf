"""The client library and the real `mboard client` CLI against a live gRPC server.

TEST DOUBLE: FakeBoard and FakeControl below implement the PUBLIC API (MessageBoard,
ControlPlane) in memory, plus the two internal calls `mboard status` makes (Control.GetStatus,
Node.Status), on one port that plays head and tail at once. They stand in for the real data
node until it exists; tests against a real cluster belong in the cluster tests.
They run in a background thread with its own event loop, so both the CLI (a subprocess) and
the library (asyncio.run in the test) can call them.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from google.protobuf import empty_pb2, timestamp_pb2
from harness import file_size_limited

from mboard import grpc_util
from mboard.api import cluster_pb2, cluster_pb2_grpc
from mboard.api import razpravljalnica_pb2 as pb
from mboard.api import razpravljalnica_pb2_grpc as pb_grpc
from mboard.client import BoardError, Client

ROOT = Path(__file__).resolve().parent.parent
NODE_ID = "fake-1"

pytestmark = pytest.mark.timeout(120)


class _Reject(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details


class FakeBoard(pb_grpc.MessageBoardServicer):
    """In-memory MessageBoard with the contract's validation, exactly-once writes and
    subscriptions, plus knobs to inject failures."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.users: dict[int, pb.User] = {}
        self.topics: dict[int, pb.Topic] = {}
        self.messages: dict[int, pb.Message] = {}
        self.posted_at: dict[int, int] = {}  # message id -> seq of its post
        self.likes: set[tuple[int, int]] = set()
        self.events: list[pb.MessageEvent] = []
        self.seq = 0
        self.results: dict[str, object] = {}  # x-request-id -> reply
        self.write_ids: list[tuple[str, str]] = []  # (method, x-request-id) of every attempt
        self.subscribe_requests: list[pb.SubscribeTopicRequest] = []
        self.changed = asyncio.Condition()
        # Failure knobs, set by tests before the call they affect.
        self.refused_writes = 0  # refuse this many write attempts with ``refusal``
        self.refusal = grpc.StatusCode.UNAVAILABLE
        self.abort_stream_after: int | None = None  # events, then abort_stream_with (once)
        self.abort_stream_with = (grpc.StatusCode.UNAVAILABLE, "node is going away")

    # -- writes

    async def _write(self, method: str, context, apply):
        request_id = dict(context.invocation_metadata()).get("x-request-id", "")
        self.write_ids.append((method, request_id))
        if self.refused_writes:
            self.refused_writes -= 1
            await context.abort(self.refusal, "write not committed in time")
        if request_id in self.results:
            return self.results[request_id]
        try:
            reply = apply()
        except _Reject as exc:
            await context.abort(exc.code, exc.details)
        self.results[request_id] = reply
        async with self.changed:
            self.changed.notify_all()
        return reply

    def _event(self, op: int, message: pb.Message) -> None:
        self.seq += 1
        at = timestamp_pb2.Timestamp(seconds=1_800_000_000 + self.seq)
        self.events.append(
            pb.MessageEvent(sequence_number=self.seq, op=op, message=message, event_at=at)
        )

    def _name(self, name: str, table: dict, what: str) -> str:
        name = name.strip()
        if not 1 <= len(name) <= 64:
            raise _Reject(grpc.StatusCode.INVALID_ARGUMENT, f"{what} name must be 1..64 chars")
        if any(row.name.lower() == name.lower() for row in table.values()):
            raise _Reject(grpc.StatusCode.ALREADY_EXISTS, f"{what} {name!r} already exists")
        return name

    def _message(self, topic_id: int, message_id: int) -> pb.Message:
        message = self.messages.get(message_id)
        if message is None or message.topic_id != topic_id:
            raise _Reject(
                grpc.StatusCode.NOT_FOUND, f"message {message_id} not found in topic {topic_id}"
            )
        return message

    def _need(self, table: dict, key: int, what: str) -> None:
        if key not in table:
            raise _Reject(grpc.StatusCode.NOT_FOUND, f"{what} {key} does not exist")

    async def CreateUser(self, request, context):
        def apply():
            name = self._name(request.name, self.users, "user")
            self.seq += 1
            user = pb.User(id=len(self.users) + 1, name=name)
            self.users[user.id] = user
            return user

        return await self._write("CreateUser", context, apply)

    async def CreateTopic(self, request, context):
        def apply():
            name = self._name(request.name, self.topics, "topic")
            self.seq += 1
            topic = pb.Topic(id=len(self.topics) + 1, name=name)
            self.topics[topic.id] = topic
            return topic

        return await self._write("CreateTopic", context, apply)

    async def PostMessage(self, request, context):
        def apply():
            self._need(self.users, request.user_id, "user")
            self._need(self.topics, request.topic_id, "topic")
            message = pb.Message(
                id=len(self.posted_at) + 1,
                topic_id=request.topic_id,
                user_id=request.user_id,
                text=request.text,
                created_at=timestamp_pb2.Timestamp(seconds=1_800_000_000),
            )
            self.messages[message.id] = message
            self._event(pb.OP_POST, message)
            self.posted_at[message.id] = self.seq
            return message

        return await self._write("PostMessage", context, apply)

    async def UpdateMessage(self, request, context):
        def apply():
            message = self._message(request.topic_id, request.message_id)
            if message.user_id != request.user_id:
                raise _Reject(grpc.StatusCode.PERMISSION_DENIED, "only the author may update")
            message.text = request.text
            self._event(pb.OP_UPDATE, message)
            return message

        return await self._write("UpdateMessage", context, apply)

    async def DeleteMessage(self, request, context):
        def apply():
            message = self._message(request.topic_id, request.message_id)
            if message.user_id != request.user_id:
                raise _Reject(grpc.StatusCode.PERMISSION_DENIED, "only the author may delete")
            del self.messages[message.id]
            self._event(pb.OP_DELETE, message)
            return empty_pb2.Empty()

        return await self._write("DeleteMessage", context, apply)

    async def LikeMessage(self, request, context):
        def apply():
            message = self._message(request.topic_id, request.message_id)
            self._need(self.users, request.user_id, "user")
            if (request.user_id, message.id) not in self.likes:
                self.likes.add((request.user_id, message.id))
                message.likes += 1
                self._event(pb.OP_LIKE, message)
            return message

        return await self._write("LikeMessage", context, apply)

    async def GetSubscriptionNode(self, request, context):
        token = f"token-{len(self.subscribe_requests) + 1}"
        node = pb.NodeInfo(node_id=NODE_ID, address=self.address)
        return pb.SubscriptionNodeResponse(subscribe_token=token, node=node)

    # -- reads

    async def GetUser(self, request, context):
        if request.user_id not in self.users:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"user {request.user_id} does not exist")
        return self.users[request.user_id]

    async def ListTopics(self, request, context):
        return pb.ListTopicsResponse(topics=list(self.topics.values()))

    async def GetMessages(self, request, context):
        if request.topic_id not in self.topics:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"topic {request.topic_id} does not exist"
            )
        found = [
            m
            for _, m in sorted(self.messages.items())
            if m.topic_id == request.topic_id and m.id >= request.from_message_id
        ]
        return pb.GetMessagesResponse(messages=found[: request.limit or None])

    async def SubscribeTopic(self, request, context):
        self.subscribe_requests.append(request)
        topics = set(request.topic_id)
        last = self.seq
        if request.from_sequence:
            pending = self._events_after(request.from_sequence, topics)
        else:
            pending = [
                pb.MessageEvent(sequence_number=self.posted_at[m.id], op=pb.OP_POST, message=m)
                for _, m in sorted(self.messages.items())
                if m.topic_id in topics and m.id >= request.from_message_id
            ]
        sent = 0
        while True:
            for event in pending:
                if sent == self.abort_stream_after:
                    self.abort_stream_after = None
                    await context.abort(*self.abort_stream_with)
                yield event
                sent += 1
            async with self.changed:
                await self.changed.wait_for(lambda last=last: self.seq > last)
            pending, last = self._events_after(last, topics), self.seq

    def _events_after(self, seq: int, topics: set[int]) -> list[pb.MessageEvent]:
        return [e for e in self.events if e.sequence_number > seq and e.message.topic_id in topics]


class FakeControl(pb_grpc.ControlPlaneServicer, cluster_pb2_grpc.ControlServicer):
    """ControlPlane (public) plus Control.GetStatus (internal, for `mboard status`)."""

    def __init__(self, board: FakeBoard, down_address: str) -> None:
        self.board = board
        self.down_address = down_address  # a member that never answers Node.Status
        self.no_chain = False
        self.down_role: str | None = None  # "head" or "tail": played by the member that is down
        self.state_calls = 0

    async def GetClusterState(self, request, context):
        self.state_calls += 1
        if self.no_chain:
            return pb.GetClusterStateResponse()
        node = pb.NodeInfo(node_id=NODE_ID, address=self.board.address)
        down = pb.NodeInfo(node_id="fake-2", address=self.down_address)
        head = down if self.down_role == "head" else node
        tail = down if self.down_role == "tail" else node
        chain = [head] if head is tail else [head, tail]
        return pb.GetClusterStateResponse(head=head, tail=tail, chain=chain, epoch=1)

    async def GetStatus(self, request, context):
        live = pb.NodeInfo(node_id=NODE_ID, address=self.board.address)
        down = pb.NodeInfo(node_id="fake-2", address=self.down_address)
        seq = self.board.seq
        return cluster_pb2.ClusterStatus(
            config=cluster_pb2.ChainConfig(epoch=1, chain=[live], learners=[down]),
            members=[
                cluster_pb2.MemberStatus(
                    node=live, role="head+tail", applied_seq=seq, committed_seq=seq
                ),
                cluster_pb2.MemberStatus(node=down, role="learner"),
            ],
            control_address=self.board.address,
        )


class FakeNode(cluster_pb2_grpc.NodeServicer):
    def __init__(self, board: FakeBoard) -> None:
        self.board = board

    async def Status(self, request, context):
        seq = self.board.seq
        return cluster_pb2.NodeStatus(
            node_id=NODE_ID,
            address=self.board.address,
            role="head+tail",
            epoch=1,
            applied_seq=seq,
            committed_seq=seq,
        )


class FakeCluster:
    """The fakes on 127.0.0.1:<free port>, served from a thread with its own event loop."""

    def __init__(self, down_address: str) -> None:
        self.down_address = down_address
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()
        self._in_loop(self._start())

    async def _start(self) -> None:
        self.server = grpc_util.server()
        port = grpc_util.bind(self.server, "127.0.0.1:0", "fake cluster")
        self.address = f"127.0.0.1:{port}"
        self.board = FakeBoard(self.address)
        self.control = FakeControl(self.board, self.down_address)
        pb_grpc.add_MessageBoardServicer_to_server(self.board, self.server)
        pb_grpc.add_ControlPlaneServicer_to_server(self.control, self.server)
        cluster_pb2_grpc.add_ControlServicer_to_server(self.control, self.server)
        cluster_pb2_grpc.add_NodeServicer_to_server(FakeNode(self.board), self.server)
        await self.server.start()

    def stop(self) -> None:
        if self.loop.is_running():
            self._in_loop(self.server.stop(grace=None))
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
        self.loop.close()

    def _in_loop(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port that is bound but not listening, so connections are refused (no reuse race)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def fake(closed_port: int) -> Iterator[FakeCluster]:
    cluster = FakeCluster(f"127.0.0.1:{closed_port}")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def mboard(
    *args: str, input: str | None = None, env: dict | None = None, max_file_bytes: int = 0
) -> subprocess.CompletedProcess:
    """Run the real CLI in a fresh interpreter (``max_file_bytes``: as on a full disk, see
    ``file_size_limited``)."""
    argv = [sys.executable, "-m", "mboard", *args]
    return subprocess.run(
        file_size_limited(argv, max_file_bytes) if max_file_bytes else argv,
        input=input,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_env(env),
        timeout=60,
    )


def _env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MBOARD_CONTROL"}
    env["PYTHONPATH"] = str(ROOT)
    return {**env, **(extra or {})}


EXAMPLE_SESSION = [
    ("create-user Alice", "Created user: ID=1, Name=Alice"),
    ("create-user Bob", "Created user: ID=2, Name=Bob"),
    ("create-topic General", "Created topic: ID=1, Name=General"),
    ("create-topic Random", "Created topic: ID=2, Name=Random"),
    ("post 1 1 Hello everyone!", "Posted message: ID=1, User=1, Likes=0"),
    ("post 1 2 Hi Alice!", "Posted message: ID=2, User=2, Likes=0"),
    ("like 1 1 2", "Liked message: ID=1, Likes=1"),
    ("list-topics", "Topics:\n  [1] General\n  [2] Random"),
    (
        "get-messages 1",
        "Messages in topic 1:\n  [1] User 1: Hello everyone! (Likes: 1)\n"
        "  [2] User 2: Hi Alice! (Likes: 0)",
    ),
]


# ------------------------------------------------------------------------ the CLI


def test_example_session_one_shot(fake: FakeCluster) -> None:
    for line, expected in EXAMPLE_SESSION:
        result = mboard("client", "--control", fake.address, *line.split())
        assert (result.returncode, result.stderr) == (0, ""), line
        assert result.stdout == expected + "\n", line


def test_example_session_through_piped_shell(fake: FakeCluster) -> None:
    script = "".join(f"{line}\n" for line, _ in EXAMPLE_SESSION)
    result = mboard("client", "--control", fake.address, "shell", input=script)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "".join(f"{expected}\n" for _, expected in EXAMPLE_SESSION)


def test_shell_reports_errors_and_goes_on(fake: FakeCluster) -> None:
    script = "create-user Alice\nget-user 7\n\nfrobnicate\ncreate-user Bob\nquit\nlist-topics\n"
    result = mboard("client", "--control", fake.address, "shell", input=script)
    assert result.stdout == "Created user: ID=1, Name=Alice\nCreated user: ID=2, Name=Bob\n"
    errors = result.stderr.splitlines()
    assert errors[0] == "error: NOT_FOUND: user 7 does not exist"
    assert errors[1].startswith("error: unknown command 'frobnicate'")
    assert len(errors) == 2
    assert result.returncode == 1  # some command failed


def test_shell_help_for_one_command(fake: FakeCluster) -> None:
    script = "help like\nlike --help\nhelp\n"
    result = mboard("client", "--control", fake.address, "shell", input=script)
    assert (result.returncode, result.stderr) == (0, "")
    usage = "usage: like <topic_id> <message_id> <user_id>\n  Like a message\n"
    assert result.stdout.startswith(usage + usage + "Commands:\n")


def test_server_error_is_one_line_and_exit_1(fake: FakeCluster) -> None:
    result = mboard("client", "--control", fake.address, "get-user", "7")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "error: NOT_FOUND: user 7 does not exist\n"


def test_update_delete_get_user_output(fake: FakeCluster) -> None:
    script = (
        "create-user Alice\ncreate-topic General\npost 1 1 first\n"
        "update 1 1 1 second  try\nget-user 1\ndelete 1 1 1\nget-messages 1\n"
    )
    result = mboard("client", "--control", fake.address, "shell", input=script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[3:] == [
        "Updated message: ID=1, Text=second try",
        "User: ID=1, Name=Alice",
        "Deleted message: ID=1",
        "Messages in topic 1:",
    ]


def test_json_output(fake: FakeCluster) -> None:
    script = "create-user Alice\ncreate-topic General\npost 1 1 Hi\nlist-topics\nget-messages 1\n"
    result = mboard("client", "--control", fake.address, "--json", "shell", input=script)
    assert result.returncode == 0, result.stderr
    user, topic, message, topics, messages = map(json.loads, result.stdout.splitlines())
    assert user == {"id": 1, "name": "Alice"}
    assert topics == {"topics": [{"id": 1, "name": "General"}]}
    assert message["likes"] == 0 and message["text"] == "Hi" and message["topic_id"] == 1
    assert messages["messages"] == [message]


def test_control_address_from_environment(fake: FakeCluster) -> None:
    result = mboard("client", "list-topics", env={"MBOARD_CONTROL": fake.address})
    assert (result.returncode, result.stdout) == (0, "Topics:\n")


def test_write_is_retried_with_the_same_request_id(fake: FakeCluster) -> None:
    fake.board.refused_writes = 1
    result = mboard("client", "--control", fake.address, "create-user", "Alice")
    assert (result.returncode, result.stdout) == (0, "Created user: ID=1, Name=Alice\n")
    (method, first), (_, second) = fake.board.write_ids
    assert method == "CreateUser" and first and first == second
    assert len(fake.board.users) == 1


@pytest.mark.parametrize(
    ("code", "attempts"),
    [
        (grpc.StatusCode.FAILED_PRECONDITION, 2),  # not (yet) the head: ask again
        (grpc.StatusCode.CANCELLED, 2),  # the node shut down under the call
        (grpc.StatusCode.NOT_FOUND, 1),
        (grpc.StatusCode.INVALID_ARGUMENT, 1),
        (grpc.StatusCode.PERMISSION_DENIED, 1),
    ],
)
def test_only_transient_refusals_are_retried(
    fake: FakeCluster, code: grpc.StatusCode, attempts: int
) -> None:
    fake.board.refused_writes, fake.board.refusal = 1, code

    async def scenario() -> pb.User:
        async with Client(fake.address, timeout=5) as client:
            return await client.create_user("Alice")

    if attempts == 1:
        with pytest.raises(BoardError) as caught:
            asyncio.run(scenario())
        assert caught.value.code == code
    else:
        assert asyncio.run(scenario()).name == "Alice"
    assert len(fake.board.write_ids) == attempts
    assert len({request_id for _, request_id in fake.board.write_ids}) == 1


def test_reads_go_to_the_tail_and_writes_to_the_head(fake: FakeCluster) -> None:
    async def scenario(down_role: str) -> None:
        fake.control.down_role = down_role
        async with Client(fake.address, timeout=1) as client:
            if down_role == "tail":  # writes still go through
                await client.create_user("Alice")
                await client.create_topic("General")
            else:  # the head is down: reads still go through
                assert [t.name for t in await client.list_topics()] == ["General"]
                assert (await client.get_user(1)).name == "Alice"
                assert await client.get_messages(1) == []

    asyncio.run(scenario("tail"))
    asyncio.run(scenario("head"))


def test_each_write_has_its_own_request_id(fake: FakeCluster) -> None:
    script = "create-user Alice\ncreate-user Bob\n"
    assert mboard("client", "--control", fake.address, "shell", input=script).returncode == 0
    first, second = (request_id for _, request_id in fake.board.write_ids)
    assert first != second


def test_no_chain_is_retried_until_the_deadline(fake: FakeCluster) -> None:
    fake.control.no_chain = True
    result = mboard("client", "--control", fake.address, "--timeout", "0.5", "list-topics")
    assert result.returncode == 1
    assert result.stderr == (
        "error: UNAVAILABLE: no chain: no data node is serving (is `mboard up` running?)\n"
    )
    assert fake.control.state_calls >= 2  # asked again after "no chain", not given up at once


def test_control_plane_unreachable(closed_port: int) -> None:
    address = f"127.0.0.1:{closed_port}"
    result = mboard("client", "--control", address, "--timeout", "0.3", "list-topics")
    assert result.returncode == 1
    assert result.stderr == f"error: UNAVAILABLE: cannot reach the control plane at {address}\n"


def test_an_address_that_is_not_a_control_plane_says_so() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))  # serves nothing
    address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    try:
        result = mboard("client", "--control", address, "list-topics")
    finally:
        server.stop(grace=None)
    assert result.returncode == 1
    assert result.stderr == (
        f"error: UNIMPLEMENTED: {address} is not an mboard control plane (a node's address?)\n"
    )


def test_status_table_and_json(fake: FakeCluster) -> None:
    mboard("client", "--control", fake.address, "create-user", "Alice")
    table = mboard("status", "--control", fake.address)
    assert table.returncode == 0, table.stderr
    header, columns, live, down = table.stdout.splitlines()
    assert header == f"control {fake.address}  epoch 1  chain fake-1  learners fake-2"
    assert columns.split() == [
        "NODE",
        "ADDRESS",
        "ROLE",
        "EPOCH",
        "APPLIED",
        "COMMITTED",
        "LAG",
        "SUBS",
        "HEARTBEAT",
        "STATE",
    ]
    assert live.split() == [
        "fake-1",
        fake.address,
        "head+tail",
        "1",
        "1",
        "1",
        "0",
        "0",
        "0.0s",
        "ok",
    ]
    assert down.split()[2:] == ["learner", "-", "0", "0", "1", "0", "0.0s", "unreachable"]

    view = json.loads(mboard("status", "--control", fake.address, "--json").stdout)
    assert view["epoch"] == 1 and view["chain"] == ["fake-1"]
    assert [n["reachable"] for n in view["nodes"]] == [True, False]
    assert mboard("client", "--control", fake.address, "status").stdout == table.stdout


def test_subscribe_prints_events_until_ctrl_c(fake: FakeCluster) -> None:
    mboard(
        "client",
        "--control",
        fake.address,
        "shell",
        input=("create-user Alice\ncreate-topic General\npost 1 1 Hello everyone!\n"),
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mboard",
            "client",
            "--control",
            fake.address,
            "subscribe",
            "1",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=_env(),
    )
    try:
        assert proc.stdout.readline() == (
            "Subscribed to topics [1]. Waiting for events (Ctrl+C to stop)...\n"
        )
        assert proc.stdout.readline() == (
            "[POST] Seq=3, Msg ID=1, User=1, Text=Hello everyone!, Likes=0\n"
        )
        mboard("client", "--control", fake.address, "post", "1", "1", "New", "message")
        assert (
            proc.stdout.readline() == "[POST] Seq=4, Msg ID=2, User=1, Text=New message, Likes=0\n"
        )
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert proc.stderr.read() == ""
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_ctrl_c_ends_a_shell_subscription_not_the_shell(fake: FakeCluster) -> None:
    script = "create-user Alice\ncreate-topic General\npost 1 1 Hello everyone!\n"
    mboard("client", "--control", fake.address, "shell", input=script)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mboard", "client", "--control", fake.address, "shell"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=_env(),
    )
    try:
        proc.stdin.write("subscribe 1 1\n")
        proc.stdin.flush()
        assert proc.stdout.readline().startswith("Subscribed to topics [1].")
        assert proc.stdout.readline().startswith("[POST] Seq=3, Msg ID=1")
        proc.send_signal(signal.SIGINT)
        proc.stdin.write("list-topics\n")
        proc.stdin.close()
        assert proc.stdout.read() == "Topics:\n  [1] General\n"
        assert proc.wait(timeout=30) == 0
        assert proc.stderr.read() == ""
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


# -------------------------------------------------------------------- the library


@pytest.mark.parametrize(
    "abort_with",
    [
        (grpc.StatusCode.UNAVAILABLE, "node is going away"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "the subscriber fell more than 50 events behind"),
        (grpc.StatusCode.PERMISSION_DENIED, "the subscribe token has expired"),
    ],
)
def test_subscription_resumes_after_the_last_event(
    fake: FakeCluster, abort_with: tuple[grpc.StatusCode, str]
) -> None:
    async def scenario() -> tuple[list[pb.MessageEvent], list[str]]:
        moves: list[str] = []
        async with Client(fake.address, timeout=5) as client:
            await client.create_user("Alice")
            await client.create_topic("General")
            await client.post(1, 1, "one")
            await client.post(1, 1, "two")
            fake.board.abort_stream_after, fake.board.abort_stream_with = 1, abort_with
            events = []
            async for event in client.subscribe(1, [1], on_move=moves.append):
                events.append(event)
                if len(events) == 2:
                    await client.post(1, 1, "three")
                if len(events) == 3:
                    break
        return events, moves

    events, moves = asyncio.run(scenario())
    assert [(e.sequence_number, e.message.text) for e in events] == [
        (3, "one"),
        (4, "two"),
        (5, "three"),
    ]
    first, second = fake.board.subscribe_requests
    assert (first.from_sequence, first.subscribe_token) == (0, "token-1")
    assert (second.from_sequence, second.subscribe_token) == (3, "token-2")
    assert len(moves) == 1 and "resuming after seq 3" in moves[0]
    code, details = abort_with
    assert f"{code.name}: {details}" in moves[0]


def test_library_raises_board_error_with_code(fake: FakeCluster) -> None:
    async def scenario() -> None:
        async with Client(fake.address, timeout=5) as client:
            await client.create_user("Alice")
            with pytest.raises(BoardError) as caught:
                await client.create_user("alice")
            assert caught.value.code == grpc.StatusCode.ALREADY_EXISTS
            await client.create_topic("T")
            await client.create_user("Bob")
            await client.post(1, 1, "mine")
            with pytest.raises(BoardError, match="^PERMISSION_DENIED: only the author"):
                await client.update(1, 1, 2, "hijack")
            state = await client.cluster_state()
            assert (state.head.address, state.epoch) == (fake.address, 1)

    asyncio.run(scenario())
