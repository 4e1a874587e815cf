"""The public MessageBoard API over real sockets against real node processes.

One chain for the whole module: a control plane, head ``n1`` and tail ``n2`` (two nodes, so
a write at a non-head and a read at a non-tail can be tried). Every test makes its own users,
topics and messages with unique names, so tests do not depend on each other or their order.
"""

from __future__ import annotations

import time
import types
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import grpc
import pytest
from google.protobuf import empty_pb2
from grpc_health.v1 import health, health_pb2_grpc
from harness import POLL_INTERVAL, Cluster
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mboard import grpc_util
from mboard.api import cluster_pb2, cluster_pb2_grpc
from mboard.api import razpravljalnica_pb2 as pb
from mboard.node.service import add_board_service

pytestmark = pytest.mark.timeout(300)

T = TypeVar("T")
Code = grpc.StatusCode
HEAD, TAIL = "n1", "n2"
# Failure detection is not under test here: long timings keep a loaded machine from
# reconfiguring the chain in the middle of a test.
STEADY_TIMINGS = {"heartbeat_interval": 0.2, "failure_timeout": 10.0, "lease": 5.0}
CALL_TIMEOUT = 30.0
SETTLE_TIMEOUT = 30.0
MISSING = 2**62  # an id no test ever reaches
MAX_TEXT = 4096
PAGE_MAX = 1000
# Every status API.md documents; anything else (UNKNOWN, INTERNAL, ...) is a bug.
DOCUMENTED = {
    Code.OK,
    Code.INVALID_ARGUMENT,
    Code.NOT_FOUND,
    Code.ALREADY_EXISTS,
    Code.PERMISSION_DENIED,
    Code.FAILED_PRECONDITION,
    Code.UNAVAILABLE,
    Code.RESOURCE_EXHAUSTED,
}


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("node-api"))
    try:
        cluster.start_control(**STEADY_TIMINGS)
        cluster.start_node(HEAD)
        cluster.wait_chain([HEAD])
        cluster.start_node(TAIL)
        cluster.wait_chain([HEAD, TAIL])
        yield cluster
    finally:
        cluster.close()


# ------------------------------------------------------------------ calls


def invoke(cluster: Cluster, node: str, method: str, request, metadata: tuple = ()) -> object:
    """One call of ``method`` on ``node``; a stream answers with its first event."""
    call = getattr(cluster.board(node), method)
    if method != "SubscribeTopic":
        return call(request, timeout=CALL_TIMEOUT, metadata=metadata)
    stream = call(request, timeout=CALL_TIMEOUT, metadata=metadata)
    try:
        return next(stream)
    finally:
        stream.cancel()


def settled(call: Callable[[], T]) -> T:
    """``call()``, repeated while the node cannot serve it just now.

    On a loaded machine a tail's read lease can lapse between heartbeats (FAILED_PRECONDITION)
    or a commit can take longer than the write timeout (UNAVAILABLE); both are documented,
    retryable answers, and a real client retries them too.
    """
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        try:
            return call()
        except grpc.RpcError as exc:
            retryable = exc.code() in (Code.FAILED_PRECONDITION, Code.UNAVAILABLE)
            if not retryable or time.monotonic() >= deadline:
                raise
        time.sleep(POLL_INTERVAL)


def write(cluster: Cluster, method: str, request, request_id: str | None = None):
    """A write at the head; retried with the same x-request-id, so it applies once."""
    metadata = (("x-request-id", request_id or str(uuid.uuid4())),)
    return settled(lambda: invoke(cluster, HEAD, method, request, metadata))


def read(cluster: Cluster, method: str, request):
    return settled(lambda: invoke(cluster, TAIL, method, request))


def refusal(call: Callable[[], object], retry: bool = True) -> grpc.RpcError:
    """The error ``call`` fails with (after the node settled, unless ``retry`` is off)."""
    with pytest.raises(grpc.RpcError) as caught:
        settled(call) if retry else call()
    return caught.value


@dataclass(frozen=True)
class Forum:
    alice: pb.User
    bob: pb.User
    topic: pb.Topic
    other_topic: pb.Topic
    message: pb.Message  # by Alice in topic


@pytest.fixture
def forum(chain: Cluster) -> Forum:
    tag = uuid.uuid4().hex[:8]
    alice = write(chain, "CreateUser", pb.CreateUserRequest(name=f"Alice-{tag}"))
    bob = write(chain, "CreateUser", pb.CreateUserRequest(name=f"Bob-{tag}"))
    topic = write(chain, "CreateTopic", pb.CreateTopicRequest(name=f"General-{tag}"))
    other = write(chain, "CreateTopic", pb.CreateTopicRequest(name=f"Random-{tag}"))
    request = pb.PostMessageRequest(topic_id=topic.id, user_id=alice.id, text="Hello everyone!")
    return Forum(alice, bob, topic, other, write(chain, "PostMessage", request))


# ------------------------------------------------------------ every method


def test_every_method_over_the_wire(chain: Cluster, forum: Forum) -> None:
    alice, bob, topic, first = forum.alice, forum.bob, forum.topic, forum.message
    assert (first.topic_id, first.user_id, first.text, first.likes) == (
        topic.id, alice.id, "Hello everyone!", 0,
    )  # fmt: skip
    assert first.created_at.seconds > 0
    post = pb.PostMessageRequest(topic_id=topic.id, user_id=bob.id, text="Hi Alice!")
    second = write(chain, "PostMessage", post)
    assert second.id > first.id

    like = pb.LikeMessageRequest(topic_id=topic.id, message_id=first.id, user_id=bob.id)
    assert write(chain, "LikeMessage", like).likes == 1
    edit = pb.UpdateMessageRequest(
        topic_id=topic.id, message_id=first.id, user_id=alice.id, text="Hello, everyone!"
    )
    edited = write(chain, "UpdateMessage", edit)
    assert (edited.id, edited.text, edited.likes, edited.created_at) == (
        first.id, "Hello, everyone!", 1, first.created_at,
    )  # fmt: skip
    delete = pb.DeleteMessageRequest(topic_id=topic.id, message_id=second.id, user_id=bob.id)
    assert write(chain, "DeleteMessage", delete) == empty_pb2.Empty()

    assert read(chain, "GetUser", pb.GetUserRequest(user_id=bob.id)) == bob
    topics = read(chain, "ListTopics", empty_pb2.Empty()).topics
    assert topic in topics and forum.other_topic in topics
    assert [t.id for t in topics] == sorted(t.id for t in topics)
    page = read(chain, "GetMessages", pb.GetMessagesRequest(topic_id=topic.id))
    assert list(page.messages) == [edited]

    grant = write(
        chain,
        "GetSubscriptionNode",
        pb.SubscriptionNodeRequest(user_id=alice.id, topic_id=[topic.id]),
    )
    assert grant.subscribe_token
    assert (grant.node.node_id, grant.node.address) in {
        (name, chain.address(name)) for name in (HEAD, TAIL)
    }
    subscribe = pb.SubscribeTopicRequest(
        topic_id=[topic.id], user_id=alice.id, subscribe_token=grant.subscribe_token
    )
    stream = chain.board(grant.node.node_id).SubscribeTopic(subscribe, timeout=CALL_TIMEOUT)
    try:
        replayed = next(stream)  # the current state first...
        assert (replayed.op, replayed.message) == (pb.OP_POST, edited)
        post.text = "live"
        live = write(chain, "PostMessage", post)
        event = next(stream)  # ...then live events, in commit order
        assert (event.op, event.message) == (pb.OP_POST, live)
        assert event.sequence_number > replayed.sequence_number
    finally:
        stream.cancel()


# ----------------------------------------------------------- status codes

# name -> forum -> (node, method, request, metadata, expected code, words in the message)
Case = Callable[[Forum, Cluster], tuple]


def _text(forum: Forum, text: str) -> pb.PostMessageRequest:
    return pb.PostMessageRequest(topic_id=forum.topic.id, user_id=forum.alice.id, text=text)


def _by(forum: Forum, user_id: int, topic_id: int | None = None, message_id: int | None = None):
    """(topic_id, message_id, user_id) of forum.message, with some replaced."""
    return dict(
        topic_id=forum.topic.id if topic_id is None else topic_id,
        message_id=forum.message.id if message_id is None else message_id,
        user_id=user_id,
    )


CASES: dict[str, Case] = {
    "empty user name": lambda f, c: (
        HEAD, "CreateUser", pb.CreateUserRequest(name=" \t "), (),
        Code.INVALID_ARGUMENT, ["user name", "1..64"],
    ),
    "too long topic name": lambda f, c: (
        HEAD, "CreateTopic", pb.CreateTopicRequest(name="x" * 65), (),
        Code.INVALID_ARGUMENT, ["topic name", "65"],
    ),
    "control character in a name": lambda f, c: (
        HEAD, "CreateUser", pb.CreateUserRequest(name="esc\x1bape"), (),
        Code.INVALID_ARGUMENT, ["user name", "control"],
    ),
    "user name taken ignoring case": lambda f, c: (
        HEAD, "CreateUser", pb.CreateUserRequest(name=f" {f.alice.name.upper()} "), (),
        Code.ALREADY_EXISTS, [f.alice.name.upper()],
    ),
    "topic name taken": lambda f, c: (
        HEAD, "CreateTopic", pb.CreateTopicRequest(name=f.topic.name.lower()), (),
        Code.ALREADY_EXISTS, [f.topic.name.lower()],
    ),
    "topic_id 0": lambda f, c: (
        HEAD, "PostMessage", pb.PostMessageRequest(topic_id=0, user_id=f.alice.id, text="x"), (),
        Code.INVALID_ARGUMENT, ["topic_id"],
    ),
    "negative user_id": lambda f, c: (
        HEAD, "PostMessage",
        pb.PostMessageRequest(topic_id=f.topic.id, user_id=-7, text="x"), (),
        Code.INVALID_ARGUMENT, ["user_id", "-7"],
    ),
    "empty text": lambda f, c: (
        HEAD, "PostMessage", _text(f, ""), (), Code.INVALID_ARGUMENT, ["text"],
    ),
    "text over the limit": lambda f, c: (
        HEAD, "PostMessage", _text(f, "x" * (MAX_TEXT + 1)), (),
        Code.INVALID_ARGUMENT, [str(MAX_TEXT + 1), str(MAX_TEXT)],
    ),
    "NUL in text": lambda f, c: (
        HEAD, "UpdateMessage",
        pb.UpdateMessageRequest(**_by(f, f.alice.id), text="a\x00b"), (),
        Code.INVALID_ARGUMENT, ["NUL"],
    ),
    "post to a missing topic": lambda f, c: (
        HEAD, "PostMessage",
        pb.PostMessageRequest(topic_id=MISSING, user_id=f.alice.id, text="x"), (),
        Code.NOT_FOUND, [f"topic {MISSING}"],
    ),
    "post by a missing user": lambda f, c: (
        HEAD, "PostMessage",
        pb.PostMessageRequest(topic_id=f.topic.id, user_id=MISSING, text="x"), (),
        Code.NOT_FOUND, [f"user {MISSING}"],
    ),
    "update by a non-author": lambda f, c: (
        HEAD, "UpdateMessage", pb.UpdateMessageRequest(**_by(f, f.bob.id), text="mine now"), (),
        Code.PERMISSION_DENIED, [f"user {f.bob.id}", f"message {f.message.id}"],
    ),
    "delete by a non-author": lambda f, c: (
        HEAD, "DeleteMessage", pb.DeleteMessageRequest(**_by(f, f.bob.id)), (),
        Code.PERMISSION_DENIED, [f"user {f.bob.id}", f"message {f.message.id}"],
    ),
    "update in another topic": lambda f, c: (
        HEAD, "UpdateMessage",
        pb.UpdateMessageRequest(**_by(f, f.alice.id, topic_id=f.other_topic.id), text="x"), (),
        Code.NOT_FOUND, [f"message {f.message.id}", f"topic {f.other_topic.id}"],
    ),
    "delete a missing message": lambda f, c: (
        HEAD, "DeleteMessage", pb.DeleteMessageRequest(**_by(f, f.alice.id, message_id=MISSING)),
        (), Code.NOT_FOUND, [f"message {MISSING}"],
    ),
    "like a missing message": lambda f, c: (
        HEAD, "LikeMessage", pb.LikeMessageRequest(**_by(f, f.bob.id, message_id=MISSING)), (),
        Code.NOT_FOUND, [f"message {MISSING}"],
    ),
    "like message_id 0": lambda f, c: (
        HEAD, "LikeMessage", pb.LikeMessageRequest(**_by(f, f.bob.id, message_id=0)), (),
        Code.INVALID_ARGUMENT, ["message_id"],
    ),
    "like by a missing user": lambda f, c: (
        HEAD, "LikeMessage", pb.LikeMessageRequest(**_by(f, MISSING)), (),
        Code.NOT_FOUND, [f"user {MISSING}"],
    ),
    "request id too long": lambda f, c: (
        HEAD, "CreateUser", pb.CreateUserRequest(name=f"{f.alice.name}-2"),
        (("x-request-id", "r" * 129),), Code.INVALID_ARGUMENT, ["x-request-id"],
    ),
    "request over the size limit": lambda f, c: (
        HEAD, "PostMessage", _text(f, "x" * 5_000_000), (), Code.RESOURCE_EXHAUSTED, [],
    ),
    "messages of topic 0": lambda f, c: (
        TAIL, "GetMessages", pb.GetMessagesRequest(topic_id=0), (),
        Code.INVALID_ARGUMENT, ["topic_id"],
    ),
    "messages from a negative id": lambda f, c: (
        TAIL, "GetMessages", pb.GetMessagesRequest(topic_id=f.topic.id, from_message_id=-1), (),
        Code.INVALID_ARGUMENT, ["from_message_id"],
    ),
    "messages of a missing topic": lambda f, c: (
        TAIL, "GetMessages", pb.GetMessagesRequest(topic_id=MISSING), (),
        Code.NOT_FOUND, [f"topic {MISSING}"],
    ),
    "user 0": lambda f, c: (
        TAIL, "GetUser", pb.GetUserRequest(user_id=0), (), Code.INVALID_ARGUMENT, ["user_id"],
    ),
    "missing user": lambda f, c: (
        TAIL, "GetUser", pb.GetUserRequest(user_id=MISSING), (),
        Code.NOT_FOUND, [f"user {MISSING}"],
    ),
    "subscription node without topics": lambda f, c: (
        HEAD, "GetSubscriptionNode", pb.SubscriptionNodeRequest(user_id=f.alice.id), (),
        Code.INVALID_ARGUMENT, ["topic_id"],
    ),
    "subscription node for a missing topic": lambda f, c: (
        HEAD, "GetSubscriptionNode",
        pb.SubscriptionNodeRequest(user_id=f.alice.id, topic_id=[f.topic.id, MISSING]), (),
        Code.NOT_FOUND, [f"topic {MISSING}"],
    ),
    "forged subscribe token": lambda f, c: (
        TAIL, "SubscribeTopic",
        pb.SubscribeTopicRequest(
            topic_id=[f.topic.id], user_id=f.alice.id, subscribe_token="eyJ1IjoxfQ.Zm9yZ2Vk"
        ), (), Code.PERMISSION_DENIED, ["token"],
    ),
    "write at a node that is not the head": lambda f, c: (
        TAIL, "CreateUser", pb.CreateUserRequest(name=f"{f.alice.name}-3"), (),
        Code.FAILED_PRECONDITION, [TAIL, "not the head", HEAD, c.address(HEAD)],
    ),
    "subscription node asked of a node that is not the head": lambda f, c: (
        TAIL, "GetSubscriptionNode",
        pb.SubscriptionNodeRequest(user_id=f.alice.id, topic_id=[f.topic.id]), (),
        Code.FAILED_PRECONDITION, [TAIL, "not the head", HEAD],
    ),
    "read at a node that is not the tail": lambda f, c: (
        HEAD, "ListTopics", empty_pb2.Empty(), (),
        Code.FAILED_PRECONDITION, [HEAD, "not the tail", TAIL, c.address(TAIL)],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_status_codes_name_the_bad_field_or_id(chain: Cluster, forum: Forum, case: str) -> None:
    node, method, request, metadata, code, words = CASES[case](forum, chain)
    applied_before = chain.node_status(HEAD, with_digest=False).applied_seq
    # FAILED_PRECONDITION is the answer under test in some cases: no retrying those.
    retry = code != Code.FAILED_PRECONDITION
    error = refusal(lambda: invoke(chain, node, method, request, metadata), retry)
    assert error.code() == code, f"{error.code().name}: {error.details()}"
    assert error.details()
    for word in words:
        assert word in error.details()
    # A refused write leaves no trace in the log.
    assert chain.node_status(HEAD, with_digest=False).applied_seq == applied_before


# ----------------------------------------------------------- idempotency


def test_a_retry_with_the_same_request_id_is_answered_once(chain: Cluster, forum: Forum) -> None:
    request_id = f"retry-{uuid.uuid4()}"
    post = _text(forum, f"exactly once {request_id}")
    first = write(chain, "PostMessage", post, request_id)
    applied = chain.node_status(HEAD, with_digest=False).applied_seq

    assert write(chain, "PostMessage", post, request_id) == first
    # Another write under the same id is no retry: refused, not answered as the first.
    changed = pb.PostMessageRequest(topic_id=forum.topic.id, user_id=forum.bob.id, text="other")
    error = refusal(lambda: write(chain, "PostMessage", changed, request_id))
    assert error.code() == Code.INVALID_ARGUMENT
    assert "was used for another write" in error.details()
    assert chain.node_status(HEAD, with_digest=False).applied_seq == applied
    page = read(chain, "GetMessages", pb.GetMessagesRequest(topic_id=forum.topic.id))
    assert [m.text for m in page.messages].count(post.text) == 1

    # A retried create is not a duplicate name, a retried delete is not a missing message.
    create_id = f"retry-{uuid.uuid4()}"
    create = pb.CreateUserRequest(name=create_id)
    carol = write(chain, "CreateUser", create, create_id)
    assert write(chain, "CreateUser", create, create_id) == carol
    delete_id = f"retry-{uuid.uuid4()}"
    delete = pb.DeleteMessageRequest(**_by(forum, forum.alice.id))
    assert write(chain, "DeleteMessage", delete, delete_id) == empty_pb2.Empty()
    assert write(chain, "DeleteMessage", delete, delete_id) == empty_pb2.Empty()
    error = refusal(lambda: write(chain, "DeleteMessage", delete))  # a new id: a new delete
    assert error.code() == Code.NOT_FOUND


# ------------------------------------------------------ random requests

_odd_ids = st.one_of(
    st.sampled_from([0, -1, 2**63 - 1, -(2**63)]),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
# Six to one for ids that often exist, so many requests get past validation.
_ids = st.one_of([st.integers(min_value=1, max_value=12)] * 6 + [_odd_ids])
_long = st.builds(
    lambda head, n, tail: head + "x" * n + tail,
    st.text(max_size=10),
    st.integers(min_value=4000, max_value=6000),
    st.text(max_size=10),
)
_plain = st.text(st.characters(categories=["L", "N", "Zs"]), min_size=1, max_size=30)
_texts = st.one_of(
    _plain, _plain, st.text(max_size=100), _long, st.sampled_from(["", " ", "\x00", "\n"])
)
_names = st.one_of(
    _plain,
    _plain,
    st.text(max_size=80),
    st.builds(lambda c, n: c * n, st.characters(), st.integers(60, 70)),
    _long,
)
_id_lists = st.lists(_ids, max_size=4)
REQUESTS = {
    "CreateUser": st.builds(pb.CreateUserRequest, name=_names),
    "CreateTopic": st.builds(pb.CreateTopicRequest, name=_names),
    "PostMessage": st.builds(pb.PostMessageRequest, topic_id=_ids, user_id=_ids, text=_texts),
    "UpdateMessage": st.builds(
        pb.UpdateMessageRequest, topic_id=_ids, message_id=_ids, user_id=_ids, text=_texts
    ),
    "DeleteMessage": st.builds(
        pb.DeleteMessageRequest, topic_id=_ids, message_id=_ids, user_id=_ids
    ),
    "LikeMessage": st.builds(pb.LikeMessageRequest, topic_id=_ids, message_id=_ids, user_id=_ids),
    "ListTopics": st.just(empty_pb2.Empty()),
    "GetMessages": st.builds(
        pb.GetMessagesRequest,
        topic_id=_ids,
        from_message_id=_ids,
        limit=st.integers(min_value=-(2**31), max_value=2**31 - 1),
    ),
    "GetUser": st.builds(pb.GetUserRequest, user_id=_ids),
    "GetSubscriptionNode": st.builds(pb.SubscriptionNodeRequest, user_id=_ids, topic_id=_id_lists),
    "SubscribeTopic": st.builds(
        pb.SubscribeTopicRequest,
        topic_id=_id_lists,
        user_id=_ids,
        from_message_id=_ids,
        subscribe_token=st.text(max_size=200),
        from_sequence=_ids,
    ),
}
# How a request carries x-request-id. Each valid one is fresh: a reused id is answered with
# the first request's result, which the idempotency test covers.
_request_ids = st.sampled_from(["none", "fresh", "fresh", "fresh", "empty", "too long"])


def request_id_metadata(kind: str) -> tuple:
    value = {"fresh": str(uuid.uuid4()), "empty": "", "too long": "r" * 129}.get(kind)
    return () if value is None else (("x-request-id", value),)


def check_answer(method: str, request, answer) -> None:
    """What an OK answer must look like for ``request``."""
    if method in ("CreateUser", "CreateTopic"):
        assert answer.id > 0 and answer.name == request.name.strip()
        assert 1 <= len(answer.name) <= 64
    elif method in ("PostMessage", "UpdateMessage"):
        assert answer.text == request.text and 0 < len(answer.text) <= MAX_TEXT
        assert "\x00" not in answer.text
        assert (answer.topic_id, answer.user_id) == (request.topic_id, request.user_id)
    elif method == "LikeMessage":
        assert answer.likes >= 1 and answer.id == request.message_id
    elif method == "GetMessages":
        ids = [m.id for m in answer.messages]
        assert ids == sorted(set(ids)) and all(i >= request.from_message_id for i in ids)
        assert len(ids) <= (request.limit if 0 < request.limit < PAGE_MAX else PAGE_MAX)
        assert all(m.topic_id == request.topic_id for m in answer.messages)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    call=st.sampled_from(sorted(REQUESTS)).flatmap(
        lambda method: st.tuples(st.just(method), REQUESTS[method])
    ),
    node=st.sampled_from([HEAD, TAIL]),
    request_id=_request_ids,
)
def test_random_requests_get_documented_answers(
    chain: Cluster, call: tuple, node: str, request_id: str
) -> None:
    method, request = call
    metadata = request_id_metadata(request_id)
    try:
        answer = invoke(chain, node, method, request, metadata)
    except grpc.RpcError as exc:
        event(f"{method} at {node}: {exc.code().name}")  # --hypothesis-show-statistics
        assert exc.code() in DOCUMENTED, f"{method} answered {exc.code().name}: {exc.details()}"
        assert exc.details(), f"{method} answered {exc.code().name} without a message"
        return
    event(f"{method} at {node}: OK")
    check_answer(method, request, answer)


_valid_names = st.text(
    st.characters(exclude_categories=["Cc", "Cs"]), min_size=1, max_size=50
).filter(str.strip)
_valid_texts = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=300),
    st.builds(lambda c: c * MAX_TEXT, st.characters(exclude_categories=["Cs"])),
).filter(lambda text: text.strip() and "\x00" not in text)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=_valid_names, text=_valid_texts)
def test_any_valid_unicode_round_trips(chain: Cluster, name: str, text: str) -> None:
    """Names and texts come back from the tail exactly as the head stored them."""
    name = f"{uuid.uuid4().hex[:8]}{name}"  # unique, and still at most 64 characters
    user = write(chain, "CreateUser", pb.CreateUserRequest(name=name))
    topic = write(chain, "CreateTopic", pb.CreateTopicRequest(name=name))
    assert user.name == topic.name == name.strip()
    request = pb.PostMessageRequest(topic_id=topic.id, user_id=user.id, text=text)
    message = write(chain, "PostMessage", request)
    assert read(chain, "GetUser", pb.GetUserRequest(user_id=user.id)) == user
    assert topic in read(chain, "ListTopics", empty_pb2.Empty()).topics
    page = read(chain, "GetMessages", pb.GetMessagesRequest(topic_id=topic.id))
    assert list(page.messages) == [message] and message.text == text


def test_node_still_serves_and_replicas_agree_after_random_requests(
    chain: Cluster, forum: Forum
) -> None:
    """Runs after the random requests in this module (when they ran): both nodes kept
    serving, and whatever the random writes did reached the tail identically."""
    assert forum.message.id > 0  # writes at the head work
    assert read(chain, "GetMessages", pb.GetMessagesRequest(topic_id=forum.topic.id)).messages

    def converged() -> bool:
        head, tail = chain.node_status(HEAD), chain.node_status(TAIL)
        return head.applied_seq == tail.applied_seq and head.digest == tail.digest

    chain.wait_for(converged, what="head and tail to hold the same board")
    assert chain.chain() == [HEAD, TAIL]
    assert all(chain.processes[name].running for name in (HEAD, TAIL))


@pytest.mark.parametrize(
    ("method", "data", "problem"),
    [
        ("MessageBoard/CreateUser", b"\x0a\x10abc", "CreateUserRequest': Wire format"),
        ("MessageBoard/CreateUser", b"\x0a\x02\xff\xfe", "CreateUserRequest': String field"),
        ("MessageBoard/SubscribeTopic", b"\x08", "SubscribeTopicRequest'"),
        ("ControlPlane/GetClusterState", b"\x08", "google.protobuf.Empty'"),
    ],
)
def test_a_request_that_does_not_parse_is_invalid_argument(
    chain: Cluster, method: str, data: bytes, problem: str
) -> None:
    """Bytes that are not the method's message: INVALID_ARGUMENT naming the message type,
    not grpc.aio's UNKNOWN with a Python exception in it (and a traceback in our log)."""
    server = "control" if method.startswith("ControlPlane") else HEAD
    channel = chain.channel(chain.address(server))
    path = f"/razpravljalnica.{method}"
    with pytest.raises(grpc.RpcError) as caught:
        if method.endswith("SubscribeTopic"):
            next(channel.unary_stream(path)(data, timeout=CALL_TIMEOUT))
        else:
            channel.unary_unary(path)(data, timeout=CALL_TIMEOUT)
    assert caught.value.code() == Code.INVALID_ARGUMENT
    assert caught.value.details().startswith("malformed request: Error parsing message")
    assert problem in caught.value.details()
    assert "Unexpected" not in chain.processes[server].log()


# ------------------------------------------------------------------ transport


def test_servers_accept_the_keepalive_pings_our_channels_send() -> None:
    """Every channel pings every KEEPALIVE_TIME_MS, idle or not. A server that allows fewer
    pings answers GOAWAY "too_many_pings" and so cut idle subscriptions and replication
    links after about 30 s (found with an idle 2-node chain: "link to n2 broke")."""
    server = dict(grpc_util.SERVER_OPTIONS)
    channel = dict(grpc_util.CHANNEL_OPTIONS)
    assert channel["grpc.keepalive_permit_without_calls"] == 1
    assert server["grpc.keepalive_permit_without_calls"] == 1
    assert (
        server["grpc.http2.min_ping_interval_without_data_ms"] < channel["grpc.keepalive_time_ms"]
    )


def test_services_go_in_as_generic_handlers_only() -> None:
    """grpc.aio waits on one pending request per registered method for every call it takes
    (an asyncio.wait over ~20 futures per write and read on a node); generic handlers cost
    one, and still resolve every method."""

    class Recorder:
        def __init__(self) -> None:
            self.generic: list = []
            self.registered: list[str] = []

        def add_generic_rpc_handlers(self, handlers) -> None:
            self.generic.extend(handlers)

        def add_registered_method_handlers(self, service: str, _handlers) -> None:
            self.registered.append(service)

    server = Recorder()
    add_board_service(server, core=None)
    services = grpc_util.GenericOnly(server)
    cluster_pb2_grpc.add_NodeServicer_to_server(cluster_pb2_grpc.NodeServicer(), services)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), services)
    assert server.registered == []

    def resolves(method: str) -> bool:
        details = types.SimpleNamespace(method=method, invocation_metadata=())
        return any(handler.service(details) for handler in server.generic)

    for service, name in [(pb, "MessageBoard"), (cluster_pb2, "Node")]:
        descriptor = service.DESCRIPTOR.services_by_name[name]
        for method in descriptor.methods:
            assert resolves(f"/{descriptor.full_name}/{method.name}"), method.name
    assert resolves("/grpc.health.v1.Health/Check")
