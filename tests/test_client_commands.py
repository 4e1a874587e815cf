"""The client's command parsing and output formatting: pure functions, no network."""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf import timestamp_pb2

from mboard.api import razpravljalnica_pb2 as pb
from mboard.client import BoardError, commands
from mboard.client.commands import UsageError, parse
from mboard.client.status import ClusterView, NodeRow, format_table


def args(line: str) -> tuple:
    return parse(line.split()).args


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("create-user Alice", ("Alice",)),
        ("create-user Alice   Smith", ("Alice Smith",)),
        ("create-topic General", ("General",)),
        ("post 1 2 Hello everyone!", (1, 2, "Hello everyone!")),
        ("post 1 2 -5 degrees --today", (1, 2, "-5 degrees --today")),
        ("update 1 3 2 new   text", (1, 3, 2, "new text")),
        ("delete 1 3 2", (1, 3, 2)),
        ("like 1 1 2", (1, 1, 2)),
        ("list-topics", ()),
        ("get-messages 1", (1,)),
        ("get-messages 1 5", (1, 5)),
        ("get-messages 1 5 20", (1, 5, 20)),
        ("get-user 7", (7,)),
        ("subscribe 1 2", (1, 2)),
        ("subscribe 1 2 3 4", (1, 2, [3, 4])),
        ("status", ()),
    ],
)
def test_parse(line: str, expected: tuple) -> None:
    assert args(line) == expected


def test_one_shot_arguments_keep_their_own_spacing() -> None:
    # The shell splits on whitespace; a one-shot command gets the shell's (quoted) words.
    assert parse(["post", "1", "2", "two  spaces"]).args == (1, 2, "two  spaces")


@pytest.mark.parametrize(
    ("words", "message"),
    [
        ([], "missing command (one of: create-user, create-topic, post,"),
        (["shout"], "unknown command 'shout' (one of: create-user,"),
        (["create-user"], "create-user: missing <name> (usage: create-user <name>)"),
        (
            ["post", "1", "2"],
            "post: missing <text> (usage: post <topic_id> <user_id> <text...>)",
        ),
        (["post", "x", "2", "hi"], "post: topic_id must be an integer, got 'x'"),
        (["delete", "1", "2"], "delete: missing <user_id>"),
        (["like", "1", "1", "2", "9"], "like: unexpected argument '9'"),
        (["list-topics", "all"], "list-topics: unexpected argument 'all' (usage: list-topics)"),
        (["get-messages", "1", "2", "3", "4"], "get-messages: unexpected argument '4'"),
        (["subscribe", "1"], "subscribe: missing <topic_id>"),
        (["subscribe", "1", "2", "three"], "subscribe: topic_id must be an integer, got 'three'"),
        (
            ["post", "9223372036854775808", "2", "hi"],
            "post: topic_id is out of range (at most 9223372036854775807), got 9223372036854775808",
        ),
        (
            ["get-user", "-9223372036854775809"],
            "get-user: user_id is out of range (at least -9223372036854775808), got",
        ),
        (
            ["get-messages", "1", "0", "2147483648"],
            "get-messages: limit is out of range (at most 2147483647), got 2147483648",
        ),
    ],
)
def test_parse_errors_name_the_argument(words: list[str], message: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse(words)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_integers_up_to_the_api_field_sizes_are_accepted() -> None:
    top = 2**63 - 1  # int64 ids; the page limit is an int32
    invocation = parse(["get-messages", str(top), str(top), str(2**31 - 1)])
    assert invocation.args == (top, top, 2**31 - 1)


# ------------------------------------------------------------------------ output

MESSAGE = pb.Message(
    id=1,
    topic_id=1,
    user_id=2,
    text="Hello everyone!",
    likes=1,
    created_at=timestamp_pb2.Timestamp(seconds=1_800_000_000),
)


def human(line: str, result: object) -> str:
    invocation = parse(line.split())
    return invocation.command.human(result, *invocation.args)


def test_original_client_lines() -> None:
    assert (
        human("create-user Alice", pb.User(id=1, name="Alice")) == "Created user: ID=1, Name=Alice"
    )
    assert (
        human("create-topic General", pb.Topic(id=1, name="General"))
        == "Created topic: ID=1, Name=General"
    )
    posted = pb.Message(id=1, user_id=1, likes=0)
    assert human("post 1 1 Hello", posted) == "Posted message: ID=1, User=1, Likes=0"
    assert human("like 1 1 2", MESSAGE) == "Liked message: ID=1, Likes=1"
    topics = pb.ListTopicsResponse(
        topics=[pb.Topic(id=1, name="General"), pb.Topic(id=2, name="Random")]
    )
    assert human("list-topics", topics) == "Topics:\n  [1] General\n  [2] Random"
    messages = pb.GetMessagesResponse(messages=[MESSAGE])
    assert human("get-messages 1", messages) == (
        "Messages in topic 1:\n  [1] User 2: Hello everyone! (Likes: 1)"
    )


def test_empty_lists_print_only_the_heading() -> None:
    assert human("list-topics", pb.ListTopicsResponse()) == "Topics:"
    assert human("get-messages 4", pb.GetMessagesResponse()) == "Messages in topic 4:"


def test_update_delete_get_user_lines() -> None:
    assert (
        human("update 1 1 2 Hello, again", MESSAGE) == "Updated message: ID=1, Text=Hello everyone!"
    )
    assert human("delete 1 9 2", None) == "Deleted message: ID=9"
    assert human("get-user 3", pb.User(id=3, name="Cleo")) == "User: ID=3, Name=Cleo"


@pytest.mark.parametrize(
    ("op", "tag"),
    [
        (pb.OP_POST, "POST"),
        (pb.OP_LIKE, "LIKE"),
        (pb.OP_UPDATE, "UPDATE"),
        (pb.OP_DELETE, "DELETE"),
    ],
)
def test_event_lines(op: int, tag: str) -> None:
    message = pb.Message(id=3, user_id=1, text="New message", likes=0)
    event = pb.MessageEvent(sequence_number=3, op=op, message=message)
    assert commands.event(event) == f"[{tag}] Seq=3, Msg ID=3, User=1, Text=New message, Likes=0"


def test_subscribe_banner() -> None:
    command = parse(["subscribe", "1", "1"]).command
    assert command.banner(1, 1) == (
        "Subscribed to topics [1]. Waiting for events (Ctrl+C to stop)..."
    )
    assert command.banner(1, 1, [2, 3]).startswith("Subscribed to topics [1 2 3]. Waiting")


def test_json_keeps_proto_names_defaults_and_numeric_ids() -> None:
    data = json.loads(commands.to_json(pb.Message(id=2, topic_id=1, user_id=1, text="Hi")))
    assert data == {"id": 2, "topic_id": 1, "user_id": 1, "text": "Hi", "likes": 0}
    event = pb.MessageEvent(sequence_number=5, op=pb.OP_LIKE, message=MESSAGE)
    line = commands.to_json(event)
    assert "\n" not in line
    data = json.loads(line)
    assert (data["sequence_number"], data["op"]) == (5, "OP_LIKE")
    assert data["message"]["created_at"] == "2027-01-15T08:00:00Z"
    assert json.loads(commands.to_json(pb.ListTopicsResponse())) == {"topics": []}


def test_error_lines() -> None:
    error = BoardError(grpc.StatusCode.NOT_FOUND, "user 7 does not exist")
    assert str(error) == "NOT_FOUND: user 7 does not exist"
    assert commands.error_line(error) == "error: NOT_FOUND: user 7 does not exist"
    multi = BoardError(grpc.StatusCode.UNAVAILABLE, "failed to connect\n  last error: refused")
    assert commands.error_line(multi) == "error: UNAVAILABLE: failed to connect last error: refused"
    assert commands.error_line(UsageError("post: missing <text...>")) == (
        "error: post: missing <text...>"
    )


def test_status_table() -> None:
    row = dict(subscribers=0, heartbeat_age_s=0.25, reachable=True)
    view = ClusterView(
        control_address="127.0.0.1:50050",
        epoch=4,
        chain=["n1", "n2"],
        learners=[],
        nodes=[
            NodeRow("n1", "127.0.0.1:50051", "head", 4, 120, 118, 0, **row),
            NodeRow("n2", "127.0.0.1:50052", "tail", 4, 118, 118, 2, **row),
            NodeRow("n3", "127.0.0.1:50053", "learner", None, 7, 7, 113, 0, 3.5, False),
        ],
    )
    assert format_table(view).splitlines() == [
        "control 127.0.0.1:50050  epoch 4  chain n1 -> n2",
        "NODE  ADDRESS          ROLE     EPOCH  APPLIED  COMMITTED  LAG  SUBS  HEARTBEAT  STATE",
        "n1    127.0.0.1:50051  head     4      120      118        0    0     0.2s       ok",
        "n2    127.0.0.1:50052  tail     4      118      118        2    0     0.2s       ok",
        "n3    127.0.0.1:50053  learner  -      7        7          113  0     3.5s       "
        "unreachable",
    ]
    data = json.loads(commands.to_json(view))
    assert data["nodes"][2] == {
        "node_id": "n3",
        "address": "127.0.0.1:50053",
        "role": "learner",
        "epoch": None,
        "applied_seq": 7,
        "committed_seq": 7,
        "lag": 113,
        "subscribers": 0,
        "heartbeat_age_s": 3.5,
        "reachable": False,
    }


def test_status_warns_when_the_control_plane_cannot_save() -> None:
    problem = "cannot write /data/control/control.db: database or disk is full (SQLITE_FULL)"
    view = ClusterView("127.0.0.1:50050", 4, ["n1"], [], [], storage_problem=problem)
    assert format_table(view).splitlines()[:2] == [
        "control 127.0.0.1:50050  epoch 4  chain n1",
        f"warning: the control plane {problem}: the chain cannot change until it can",
    ]
    assert json.loads(commands.to_json(view))["storage_problem"] == problem


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_a_command_followed_by_help_shows_its_usage(flag: str) -> None:
    assert commands.help_for(["post", flag]) == (
        "usage: post <topic_id> <user_id> <text...>\n  Post a message"
    )


@pytest.mark.parametrize(
    "line", ["post 1 1 see --help", "frobnicate --help", "post", "list-topics 1", ""]
)
def test_help_only_right_after_a_known_command(line: str) -> None:
    assert commands.help_for(line.split()) is None
