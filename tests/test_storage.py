"""The board's semantics over a real SQLite file: validation, ids, likes, paging, the log.

``Board.execute`` (what the head does) and ``Board.apply_blobs`` (what every replica does)
run here through ``Storage.run_sync``, the same code the writer thread runs, on the test's
thread. Peewee models are bound to one database at a time, so a test that needs a second
replica opens it after it is done reading the first.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import grpc
import pytest
from google.protobuf import empty_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from mboard.api import cluster_pb2
from mboard.api import razpravljalnica_pb2 as pb
from mboard.config import NodeConfig
from mboard.node import board as board_module
from mboard.node.board import Board, BoardError, Outcome, ReplayPage, RequestWindow, fragment
from mboard.node.core import NodeCore
from mboard.node.pages import MAX_SKIPPED, MESSAGE_OVERHEAD, RecentPages
from mboard.node.storage import Storage, StorageFailed
from mboard.node.subscriptions import Subscriber

pytestmark = pytest.mark.timeout(120)

EPOCH = 1
MAX_TEXT = 4096

OpenBoard = Callable[..., Board]


@pytest.fixture
def open_board(tmp_path: Path) -> Iterator[OpenBoard]:
    """Opens boards on files in tmp_path (``open_board("name", max_text_length=...)``)."""
    opened: list[Storage] = []

    def open_(name: str = "board", **options: int) -> Board:
        storage = Storage(tmp_path / f"{name}.db")
        opened.append(storage)
        return Board(storage, **options)

    try:
        yield open_
    finally:
        for storage in opened:
            storage.close()


@pytest.fixture
def board(open_board: OpenBoard) -> Board:
    return open_board()


# ---------------------------------------------------------------- helpers


def execute(board: Board, kind: str, request, request_id: str = "") -> Outcome:
    return board.storage.run_sync(lambda: board.execute(kind, request, request_id, EPOCH))


def ok(outcome: Outcome):
    assert outcome.error is None, outcome.error.message
    return outcome.result


def refused(outcome: Outcome, code: grpc.StatusCode, *words: str) -> str:
    """Assert the write was refused with ``code`` by a message naming ``words``."""
    assert outcome.error is not None, f"expected {code.name}, got {outcome.result}"
    assert outcome.entry is None  # a refused write never gets a seq
    assert outcome.error.code == code, outcome.error.message
    for word in words:
        assert word in outcome.error.message
    return outcome.error.message


def user(board: Board, name: str) -> pb.User:
    return ok(execute(board, "create_user", pb.CreateUserRequest(name=name)))


def topic(board: Board, name: str) -> pb.Topic:
    return ok(execute(board, "create_topic", pb.CreateTopicRequest(name=name)))


def post(board: Board, topic_id: int, user_id: int, text: str) -> Outcome:
    request = pb.PostMessageRequest(topic_id=topic_id, user_id=user_id, text=text)
    return execute(board, "post_message", request)


def update(board: Board, topic_id: int, message_id: int, user_id: int, text: str) -> Outcome:
    request = pb.UpdateMessageRequest(
        topic_id=topic_id, message_id=message_id, user_id=user_id, text=text
    )
    return execute(board, "update_message", request)


def delete(board: Board, topic_id: int, message_id: int, user_id: int) -> Outcome:
    request = pb.DeleteMessageRequest(topic_id=topic_id, message_id=message_id, user_id=user_id)
    return execute(board, "delete_message", request)


def like(board: Board, topic_id: int, message_id: int, user_id: int) -> Outcome:
    request = pb.LikeMessageRequest(topic_id=topic_id, message_id=message_id, user_id=user_id)
    return execute(board, "like_message", request)


def messages(board: Board, topic_id: int, from_id: int = 0, limit: int = 0) -> list[pb.Message]:
    page = board.storage.run_sync(lambda: board.get_messages(topic_id, from_id, limit))
    return list(pb.GetMessagesResponse.FromString(page).messages)


def read_error(board: Board, read: Callable[[], object]) -> BoardError:
    with pytest.raises(BoardError) as caught:
        board.storage.run_sync(read)
    return caught.value


def log_blobs(board: Board) -> list[bytes]:
    return board.storage.run_sync(lambda: board.log_blobs(1, 1_000_000))


def digest(board: Board) -> str:
    return board.storage.run_sync(board.digest)


def replay(open_board: OpenBoard, name: str, blobs: list[bytes]) -> Board:
    """A fresh replica that applied ``blobs`` (the models are bound to it from now on)."""
    replica = open_board(name)
    applied = replica.storage.run_sync(lambda: replica.apply_blobs(blobs))
    assert len(applied) == len(blobs)
    return replica


@pytest.fixture
def forum(board: Board) -> Board:
    """Alice (1) and Bob (2); topics General (1) and Random (2)."""
    user(board, "Alice")
    user(board, "Bob")
    topic(board, "General")
    topic(board, "Random")
    return board


# ------------------------------------------------------------------ names


def test_names_are_trimmed_and_unique_ignoring_case(board: Board) -> None:
    assert user(board, "  Alice\t") == pb.User(id=1, name="Alice")
    for duplicate in ("alice", "ALICE ", "\nAlIcE"):
        refused(
            execute(board, "create_user", pb.CreateUserRequest(name=duplicate)),
            grpc.StatusCode.ALREADY_EXISTS,
            repr(duplicate.strip()),
        )
    # Users and topics are separate namespaces.
    assert topic(board, "alice") == pb.Topic(id=1, name="alice")
    refused(
        execute(board, "create_topic", pb.CreateTopicRequest(name=" Alice ")),
        grpc.StatusCode.ALREADY_EXISTS,
        "topic",
    )
    assert board.applied_seq == 2  # the refusals left no trace in the log


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "1..64"),
        ("   \t ", "1..64"),
        ("x" * 65, "got 65"),
        ("tab\tinside", "control"),
        ("new\nline", "control"),
        ("bell\x07", "control"),
        ("del\x7f", "control"),
        ("nul\x00", "control"),
        # str.strip() would drop these at the ends: they are control characters all the same.
        ("Carol\x1f", "control"),
        ("\x85Eve", "control"),
        ("\x1c\x1d", "control"),
    ],
)
def test_bad_names_are_invalid_argument(board: Board, name: str, problem: str) -> None:
    for kind, request in (
        ("create_user", pb.CreateUserRequest(name=name)),
        ("create_topic", pb.CreateTopicRequest(name=name)),
    ):
        what = kind.removeprefix("create_")
        refused(execute(board, kind, request), grpc.StatusCode.INVALID_ARGUMENT, what, problem)
    assert board.applied_seq == 0


def test_name_length_counts_characters_after_trimming(board: Board) -> None:
    longest = "ž" * 64  # 128 bytes in UTF-8, still 64 characters
    assert user(board, f"  {longest}  ").name == longest
    assert topic(board, "x").name == "x"


# ------------------------------------------------------------------- text


def test_text_length_and_nul(open_board: OpenBoard) -> None:
    board = open_board(max_text_length=10)
    user(board, "Alice")
    topic(board, "General")
    assert ok(post(board, 1, 1, "x" * 10)).text == "x" * 10
    refused(post(board, 1, 1, "x" * 11), grpc.StatusCode.INVALID_ARGUMENT, "11", "10")
    refused(post(board, 1, 1, ""), grpc.StatusCode.INVALID_ARGUMENT, "text")
    refused(post(board, 1, 1, " \n\t"), grpc.StatusCode.INVALID_ARGUMENT, "only whitespace")
    refused(post(board, 1, 1, "a\x00b"), grpc.StatusCode.INVALID_ARGUMENT, "NUL")
    refused(update(board, 1, 1, 1, "y" * 11), grpc.StatusCode.INVALID_ARGUMENT, "text")
    refused(update(board, 1, 1, 1, "\x00"), grpc.StatusCode.INVALID_ARGUMENT, "NUL")
    refused(update(board, 1, 1, 1, "   "), grpc.StatusCode.INVALID_ARGUMENT, "empty")
    # Other control characters are fine in a text (it may span lines).
    assert ok(update(board, 1, 1, 1, "two\nlines")).text == "two\nlines"
    assert [m.text for m in messages(board, 1)] == ["two\nlines"]


def test_default_text_limit_is_4096(forum: Board) -> None:
    assert ok(post(forum, 1, 1, "é" * MAX_TEXT)).id == 1
    refused(post(forum, 1, 1, "é" * (MAX_TEXT + 1)), grpc.StatusCode.INVALID_ARGUMENT, "4096")


# ------------------------------------------------- existence, ownership, ids


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        ((0, 1), grpc.StatusCode.INVALID_ARGUMENT, ("topic_id", "0")),
        ((1, -5), grpc.StatusCode.INVALID_ARGUMENT, ("user_id", "-5")),
        ((3, 1), grpc.StatusCode.NOT_FOUND, ("topic 3",)),
        ((1, 3), grpc.StatusCode.NOT_FOUND, ("user 3",)),
        ((2**63 - 1, 1), grpc.StatusCode.NOT_FOUND, (str(2**63 - 1),)),
    ],
)
def test_post_needs_valid_ids_of_an_existing_user_and_topic(
    forum: Board, args: tuple[int, int], code: grpc.StatusCode, words: tuple[str, ...]
) -> None:
    refused(post(forum, *args, "hello"), code, *words)
    assert forum.applied_seq == 4


def test_only_the_author_updates_or_deletes(forum: Board) -> None:
    ok(post(forum, 1, 1, "Alice's"))
    for outcome in (update(forum, 1, 1, 2, "Bob was here"), delete(forum, 1, 1, 2)):
        refused(outcome, grpc.StatusCode.PERMISSION_DENIED, "user 2", "message 1")
    for outcome in (update(forum, 1, 1, 999, "who?"), delete(forum, 1, 1, 999)):
        refused(outcome, grpc.StatusCode.NOT_FOUND, "user 999 does not exist")
    assert ok(update(forum, 1, 1, 1, "edited")) == pb.Message(
        id=1, topic_id=1, user_id=1, text="edited", likes=0,
        created_at=messages(forum, 1)[0].created_at,
    )  # fmt: skip
    assert [m.text for m in messages(forum, 1)] == ["edited"]


def test_message_must_exist_in_that_topic(forum: Board) -> None:
    ok(post(forum, 1, 1, "in General"))
    for outcome in (
        update(forum, 2, 1, 1, "moved?"),
        delete(forum, 2, 1, 1),
        like(forum, 2, 1, 2),
        update(forum, 1, 99, 1, "nope"),
        like(forum, 1, 99, 2),
    ):
        refused(outcome, grpc.StatusCode.NOT_FOUND, "message", "topic")
    refused(like(forum, 1, 1, 42), grpc.StatusCode.NOT_FOUND, "user 42")
    refused(delete(forum, 1, 0, 1), grpc.StatusCode.INVALID_ARGUMENT, "message_id")


def test_one_like_per_user_and_message(forum: Board) -> None:
    ok(post(forum, 1, 1, "like me"))
    assert ok(like(forum, 1, 1, 2)).likes == 1
    seq = forum.applied_seq
    again = like(forum, 1, 1, 2)
    assert again.entry is None and ok(again).likes == 1  # unchanged, no new entry
    assert forum.applied_seq == seq
    assert ok(like(forum, 1, 1, 1)).likes == 2  # the author may like it too, once
    assert messages(forum, 1)[0].likes == 2


def test_deleted_messages_are_gone_for_good(forum: Board) -> None:
    for text in ("one", "two", "three"):
        ok(post(forum, 1, 1, text))
    assert ok(delete(forum, 1, 2, 1)) == empty_pb2.Empty()
    assert [m.id for m in messages(forum, 1)] == [1, 3]
    for outcome in (
        like(forum, 1, 2, 2),
        update(forum, 1, 2, 1, "back?"),
        delete(forum, 1, 2, 1),
    ):
        refused(outcome, grpc.StatusCode.NOT_FOUND, "message 2")
    # The deleted id is never handed out again, not even for the highest id.
    ok(delete(forum, 1, 3, 1))
    assert ok(post(forum, 1, 1, "four")).id == 4


def test_ids_increase_per_kind_and_survive_a_reopen(open_board: OpenBoard) -> None:
    board = open_board()
    assert [user(board, n).id for n in ("a", "b")] == [1, 2]
    assert [topic(board, n).id for n in ("t1", "t2", "t3")] == [1, 2, 3]
    posted = [ok(post(board, t, 1, f"m{t}")).id for t in (3, 1, 2, 1)]
    assert posted == [1, 2, 3, 4]
    ok(delete(board, 1, 4, 1))
    board.storage.close()

    reopened = open_board()  # same file: the counters come back from the tables
    assert reopened.applied_seq == board.applied_seq
    assert user(reopened, "c").id == 3
    assert topic(reopened, "t4").id == 4
    assert ok(post(reopened, 1, 1, "after")).id == 5


# ----------------------------------------------------------------- paging


def test_get_messages_pages(open_board: OpenBoard) -> None:
    board = open_board(page_max=5)
    user(board, "Alice")
    topic(board, "General")
    topic(board, "Random")
    for i in range(1, 13):
        ok(post(board, 1 if i % 4 else 2, 1, f"m{i}"))  # 4, 8, 12 go to Random
    general = [1, 2, 3, 5, 6, 7, 9, 10, 11]

    def ids(from_id: int, limit: int, topic_id: int = 1) -> list[int]:
        return [m.id for m in messages(board, topic_id, from_id, limit)]

    assert ids(0, 0) == general[:5]  # limit 0: the page maximum
    assert ids(0, -3) == general[:5]  # so is a negative limit
    assert ids(0, 100) == general[:5]  # and a larger ask is capped at it
    assert ids(0, 2) == [1, 2]
    assert ids(3, 3) == [3, 5, 6]  # from_message_id is inclusive
    assert ids(4, 3) == [5, 6, 7]  # and need not be an id of this topic
    assert ids(12, 5) == []
    assert ids(0, 0, topic_id=2) == [4, 8, 12]
    ok(delete(board, 1, 5, 1))
    assert ids(4, 3) == [6, 7, 9]  # a deleted message does not use up the page
    # Walking the pages by the last id + 1 yields every live message once.
    walked, start = [], 0
    while page := ids(start, 2):
        walked += page
        start = page[-1] + 1
    assert walked == [i for i in general if i != 5]


def test_a_page_is_byte_for_byte_what_protobuf_writes(open_board: OpenBoard) -> None:
    # Pages are joined from stored messages: it must not matter how long a message is
    # (its length takes 1, 2 or 3 bytes) or whether it was liked or edited since.
    board = open_board(max_text_length=20_000)
    user(board, "Alice")
    user(board, "Bob")
    topic(board, "General")
    posted = [ok(post(board, 1, 1, text)) for text in ("short", "x" * 200, "y" * 17_000)]
    liked = ok(like(board, 1, 1, 2))
    edited = ok(update(board, 1, 2, 1, "é" * 100))
    expected = pb.GetMessagesResponse(messages=[liked, edited, posted[2]])
    page = board.storage.run_sync(lambda: board.get_messages(1, 0, 0))
    assert page == expected.SerializeToString()
    assert pb.GetMessagesResponse.FromString(page) == expected


# Indexes older versions kept that other indexes cover or no query uses.
REDUNDANT_INDEXES = [
    ("message_topic_id", "messages", "topic_id"),
    ("message_user_id", "messages", "user_id"),
    ("like_user_id", "likes", "user_id"),
]


def test_a_database_from_an_older_mboard_is_upgraded(open_board: OpenBoard) -> None:
    board = open_board()
    user(board, "Alice")
    topic(board, "General")
    posted = [ok(post(board, 1, 1, f"m{i}")) for i in range(3)]
    liked = ok(like(board, 1, 2, 1))

    def older_schema() -> None:  # no stored messages, request ids found through an index
        connection = board.storage.connection()
        connection.execute("ALTER TABLE messages DROP COLUMN wire")
        connection.execute("CREATE INDEX logentry_request_id ON log (request_id)")
        for name, table, column in REDUNDANT_INDEXES:
            connection.execute(f"CREATE INDEX {name} ON {table} ({column})")

    board.storage.run_sync(older_schema)
    board.storage.close()

    reopened = open_board()
    assert messages(reopened, 1) == [posted[0], liked, posted[2]]
    indexes = reopened.storage.run_sync(
        lambda: reopened.storage.connection().execute("SELECT name FROM sqlite_master").fetchall()
    )
    assert ("logentry_request_id",) not in indexes
    assert not {(name,) for name, _, _ in REDUNDANT_INDEXES} & set(indexes)
    assert ok(post(reopened, 1, 1, "after")).id == 4
    assert [m.text for m in messages(reopened, 1)] == ["m0", "m1", "m2", "after"]


def test_snapshot_pages_show_the_messages_posted_by_the_first_page(forum: Board) -> None:
    for i in range(1, 6):
        ok(post(forum, 1 if i != 3 else 2, 1, f"m{i}"))  # 3 goes to Random
    ok(post(forum, 1, 1, "m6"))

    def page(from_id: int, up_to_seq: int | None) -> ReplayPage:
        return forum.storage.run_sync(lambda: forum.snapshot_page([1], from_id, up_to_seq, 2))

    first = page(0, None)
    assert first.state_seq == forum.applied_seq
    assert [e.message.id for e in first.events] == [1, 2]
    assert {e.op for e in first.events} == {pb.OP_POST}
    assert not first.done and first.covered_seq == first.events[-1].sequence_number
    bound = first.state_seq
    ok(delete(forum, 1, 4, 1))  # between pages: it is not shown, its DELETE comes live
    ok(like(forum, 1, 5, 2))  # its state shows the like, which also comes live
    ok(post(forum, 1, 1, "m7"))  # after the bound: it comes live only
    second = page(first.next_from, bound)
    assert [(e.message.id, e.message.likes) for e in second.events] == [(5, 1), (6, 0)]
    assert second.state_seq == forum.applied_seq > bound
    third = page(second.next_from, bound)
    assert third.events == [] and third.done and third.covered_seq == bound
    numbers = [e.sequence_number for e in first.events + second.events]
    assert numbers == sorted(numbers) and numbers[-1] <= bound


def test_event_pages_walk_the_log_of_the_topics(forum: Board) -> None:
    for i in range(1, 6):
        ok(post(forum, 1 if i != 3 else 2, 1, f"m{i}"))
    ok(like(forum, 1, 2, 2))
    ok(update(forum, 1, 1, 1, "edited"))
    walked, after, pages = [], 4, 0  # seqs 1-4 made the users and topics
    while True:
        page = forum.storage.run_sync(lambda after=after: forum.events_page([1], after, 2))
        pages += 1
        walked += [(e.op, e.message.id) for e in page.events]
        assert page.state_seq == page.covered_seq == page.next_from
        after = page.next_from
        if page.done:
            break
    assert walked == [
        (pb.OP_POST, 1), (pb.OP_POST, 2), (pb.OP_POST, 4), (pb.OP_POST, 5),
        (pb.OP_LIKE, 2), (pb.OP_UPDATE, 1),
    ]  # fmt: skip
    assert pages == 4 and after == forum.applied_seq
    # Topic entries have no event but still take their place in a page.
    page = forum.storage.run_sync(lambda: forum.events_page([1, 2], 0, 2))  # seqs 3 and 4
    assert page.events == [] and not page.done and page.covered_seq == 4


def test_get_messages_refuses_bad_arguments(forum: Board) -> None:
    error = read_error(forum, lambda: forum.get_messages(0, 0, 0))
    assert (error.code, "topic_id" in error.message) == (grpc.StatusCode.INVALID_ARGUMENT, True)
    error = read_error(forum, lambda: forum.get_messages(1, -1, 0))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and "from_message_id" in error.message
    error = read_error(forum, lambda: forum.get_messages(7, 0, 0))
    assert (error.code, "topic 7" in error.message) == (grpc.StatusCode.NOT_FOUND, True)
    assert messages(forum, 2) == []  # an existing topic without messages is just empty
    error = read_error(forum, lambda: forum.get_user(3))
    assert (error.code, "user 3" in error.message) == (grpc.StatusCode.NOT_FOUND, True)
    assert forum.storage.run_sync(lambda: forum.get_user(2)) == pb.User(id=2, name="Bob")


# ------------------------------------------------------ retries and the log


def test_retry_with_the_same_request_id_returns_the_original_result(forum: Board) -> None:
    first = execute(forum, "create_user", pb.CreateUserRequest(name="Carol"), "req-1")
    assert ok(first) == pb.User(id=3, name="Carol")
    seq = forum.applied_seq
    again = execute(forum, "create_user", pb.CreateUserRequest(name="Carol"), "req-1")
    assert (ok(again), again.entry, again.wait_seq) == (first.result, None, first.wait_seq)
    assert forum.applied_seq == seq

    request = pb.PostMessageRequest(topic_id=1, user_id=1, text="once")
    posted = ok(execute(forum, "post_message", request, "req-2"))
    ok(like(forum, 1, posted.id, 2))  # the board moves on...
    retried = execute(forum, "post_message", request, "req-2")
    assert ok(retried) == posted  # ...the retry still answers as the first time did
    assert [m.text for m in messages(forum, 1)] == ["once"]
    # A different id is a different write.
    assert ok(execute(forum, "post_message", request, "req-3")).id == posted.id + 1


@pytest.mark.parametrize(
    ("kind", "request_"),
    [
        ("create_user", pb.CreateUserRequest(name="Dave")),  # the same kind, another body
        ("create_topic", pb.CreateTopicRequest(name="Carol")),
        ("post_message", pb.PostMessageRequest(topic_id=1, user_id=1, text="other")),
        ("delete_message", pb.DeleteMessageRequest(topic_id=1, message_id=1, user_id=1)),
        ("like_message", pb.LikeMessageRequest(topic_id=1, message_id=1, user_id=2)),
    ],
)
def test_a_request_id_reused_for_another_write_is_refused(
    forum: Board, kind: str, request_
) -> None:
    """Only a retry gets the original answer: another write under a used id is refused, not
    answered with the first write's result (a delete that says OK and deletes nothing)."""
    ok(execute(forum, "post_message", _post("kept"), "req-post"))
    ok(execute(forum, "create_user", pb.CreateUserRequest(name="Carol"), "req-user"))
    seq = forum.applied_seq
    used = "req-user" if kind == "create_user" else "req-post"
    refused(
        execute(forum, kind, request_, used),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"x-request-id '{used}' was used for another write",
    )
    assert forum.applied_seq == seq and [m.text for m in messages(forum, 1)] == ["kept"]
    # Each kind's own retry is still recognised.
    retried = execute(forum, "post_message", _post("kept"), "req-post")
    assert ok(retried).text == "kept" and forum.applied_seq == seq


def test_a_retry_is_recognised_among_the_newest_entries_only(
    open_board: OpenBoard, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(board_module, "REQUEST_WINDOW", 3)
    board = open_board()
    user(board, "Alice")
    topic(board, "General")
    request = pb.PostMessageRequest(topic_id=1, user_id=1, text="once")
    first = ok(execute(board, "post_message", request, "req-1"))  # seq 3
    ok(post(board, 1, 1, "two"))
    board.storage.close()

    board = open_board()  # the window comes back from the log
    assert ok(execute(board, "post_message", request, "req-1")) == first
    ok(post(board, 1, 1, "three"))
    ok(post(board, 1, 1, "four"))  # seq 6: seq 3 is no longer among the newest 3
    again = ok(execute(board, "post_message", request, "req-1"))
    assert (again.id, again.text) == (5, "once")  # so it is a new write...
    assert ok(execute(board, "post_message", request, "req-1")) == again  # ...remembered too


def test_the_request_window_forgets_what_slid_out_of_it() -> None:
    window = RequestWindow(3)
    window.add(1, "a")
    window.add(2, "b")
    window.add(4, "a")  # the same id again, later (a retry after the window)
    assert (window.seq_of("a", 4), window.seq_of("b", 4)) == (4, 2)
    assert window.seq_of("b", 5) is None  # seqs 3-5 are the window now
    window.add(7, "c")
    assert (window.seq_of("a", 7), window.seq_of("c", 7)) == (None, 7)
    assert len(window) == 1  # and its memory with it


def test_every_write_appends_one_entry_with_the_next_seq(forum: Board) -> None:
    ok(post(forum, 1, 1, "a"))
    ok(like(forum, 1, 1, 2))
    ok(update(forum, 1, 1, 1, "b"))
    ok(delete(forum, 1, 1, 1))
    entries = [cluster_pb2.Entry.FromString(blob) for blob in log_blobs(forum)]
    assert [e.seq for e in entries] == list(range(1, 9))
    kinds = [cluster_pb2.EntryKind.Name(e.kind) for e in entries]
    assert kinds == [
        "CREATE_USER", "CREATE_USER", "CREATE_TOPIC", "CREATE_TOPIC",
        "POST", "LIKE", "UPDATE", "DELETE",
    ]  # fmt: skip
    assert all(e.epoch == EPOCH for e in entries)
    assert forum.storage.run_sync(lambda: forum.log_blobs(7, 1)) == [log_blobs(forum)[6]]
    # Within a byte budget, and never none: what a link reads to catch a successor up.
    blobs = log_blobs(forum)
    two = len(blobs[4]) + len(blobs[5])
    assert forum.storage.run_sync(lambda: forum.log_blobs(5, 10, two)) == blobs[4:6]
    assert forum.storage.run_sync(lambda: forum.log_blobs(5, 10, 1)) == blobs[4:5]


def stored_seqs(board: Board) -> list[int]:
    return [cluster_pb2.Entry.FromString(blob).seq for blob in log_blobs(board)]


def post_unsynced(board: Board, text: str) -> Outcome:
    """A post on the calling thread, in whatever transaction that thread is in."""
    request = pb.PostMessageRequest(topic_id=1, user_id=1, text=text)
    return board.execute("post_message", request, "", EPOCH)


# One past the rows of one INSERT, and enough for several of them plus a remainder.
@pytest.mark.parametrize("posts", [1, board_module.MAX_ROWS_PER_INSERT + 1, 300])
def test_a_transaction_of_many_writes_stores_every_one(forum: Board, posts: int) -> None:
    entries_before = forum.applied_seq

    def batch() -> tuple[list[Outcome], Outcome]:
        posted = [post_unsynced(forum, f"m{i}") for i in range(posts)]
        # The board holds new rows back until the commit: an edit of the newest post in the
        # same transaction must find it all the same.
        newest = ok(posted[-1]).id
        edit = pb.UpdateMessageRequest(topic_id=1, message_id=newest, user_id=1, text="edited")
        return posted, forum.execute("update_message", edit, "", EPOCH)

    posted, edited = forum.storage.run_sync(batch)
    assert ok(edited).text == "edited"
    stored = messages(forum, 1)
    assert [m.text for m in stored] == [f"m{i}" for i in range(posts - 1)] + ["edited"]
    assert [m.id for m in stored] == [ok(outcome).id for outcome in posted]
    assert stored_seqs(forum) == list(range(1, entries_before + posts + 2))


@pytest.mark.parametrize("thread", ["writer", "run_sync"])
def test_a_batch_that_fails_leaves_nothing_behind(forum: Board, thread: str) -> None:
    entries_before = forum.applied_seq

    def post_then_fail() -> None:
        ok(post_unsynced(forum, "lost"))
        raise RuntimeError("the disk is full")

    async def on_the_writer() -> Outcome:
        forum.storage.start(asyncio.get_running_loop())
        try:
            with pytest.raises(RuntimeError, match="disk is full"):
                await forum.storage.submit(post_then_fail)
            return await forum.storage.submit(lambda: post_unsynced(forum, "kept"))
        finally:
            forum.storage.close()

    if thread == "writer":
        kept = ok(asyncio.run(on_the_writer()))
    else:
        with pytest.raises(RuntimeError, match="disk is full"):
            forum.storage.run_sync(post_then_fail)
        kept = ok(forum.storage.run_sync(lambda: post_unsynced(forum, "kept")))
    assert kept.id == 1  # the id of the post rolled back is given out again
    assert [m.text for m in messages(forum, 1)] == ["kept"]
    assert stored_seqs(forum) == list(range(1, entries_before + 2))


def test_rows_held_back_stay_few(forum: Board, monkeypatch: pytest.MonkeyPatch) -> None:
    """However long a transaction, the board holds back at most MAX_ROWS_PER_INSERT rows:
    the posts of a whole truncate's replay must not all wait in memory."""
    inserted: list[int] = []
    insert_rows = board_module._insert_rows

    def counting(conn, insert: str, row: str, rows: list[tuple]) -> None:
        inserted.append(len(rows))
        insert_rows(conn, insert, row, rows)

    monkeypatch.setattr(board_module, "_insert_rows", counting)
    posts = 3 * board_module.MAX_ROWS_PER_INSERT + 5
    forum.storage.run_sync(lambda: [post_unsynced(forum, f"m{i}") for i in range(posts)])
    forum.storage.run_sync(lambda: forum.truncate(forum.applied_seq))  # replays every post
    assert max(inserted) == board_module.MAX_ROWS_PER_INSERT
    assert len(messages(forum, 1)) == posts


# ------------------------------------------------ determinism and truncate

# A workload touching every kind of entry: (kind, request); ids follow from the order.
WORKLOAD = [
    ("create_user", pb.CreateUserRequest(name="Alice")),
    ("create_user", pb.CreateUserRequest(name="Bob")),
    ("create_topic", pb.CreateTopicRequest(name="General")),
    ("post_message", pb.PostMessageRequest(topic_id=1, user_id=1, text="first")),
    ("post_message", pb.PostMessageRequest(topic_id=1, user_id=2, text="second")),
    ("like_message", pb.LikeMessageRequest(topic_id=1, message_id=1, user_id=2)),
    ("create_topic", pb.CreateTopicRequest(name="Random")),
    ("update_message", pb.UpdateMessageRequest(topic_id=1, message_id=1, user_id=1, text="1st")),
    ("delete_message", pb.DeleteMessageRequest(topic_id=1, message_id=2, user_id=2)),
    ("post_message", pb.PostMessageRequest(topic_id=2, user_id=2, text="third")),
    ("like_message", pb.LikeMessageRequest(topic_id=1, message_id=1, user_id=1)),
    ("create_user", pb.CreateUserRequest(name="Carol")),
]


def run_workload(board: Board) -> None:
    for kind, request in WORKLOAD:
        ok(execute(board, kind, request))


def test_applying_the_heads_log_gives_an_identical_replica(open_board: OpenBoard) -> None:
    head = open_board("head")
    run_workload(head)
    blobs, head_digest = log_blobs(head), digest(head)
    head_pages = messages(head, 1), messages(head, 2)

    replica = replay(open_board, "replica", blobs)
    assert digest(replica) == head_digest
    assert (messages(replica, 1), messages(replica, 2)) == head_pages
    assert log_blobs(replica) == blobs  # the log itself is kept byte for byte
    # Applying again, or a prefix again, changes nothing.
    assert replica.storage.run_sync(lambda: replica.apply_blobs(blobs)) == []
    assert digest(replica) == head_digest
    # A replica that takes over as head hands out the same next ids the head would have.
    assert ok(post(replica, 1, 3, "new head")).id == 4
    assert digest(replica) != head_digest  # and the digest sees the difference


def test_apply_stops_at_a_gap(open_board: OpenBoard) -> None:
    head = open_board("head")
    run_workload(head)
    blobs = log_blobs(head)
    replica = open_board("replica")
    applied = replica.storage.run_sync(lambda: replica.apply_blobs(blobs[:3] + blobs[4:]))
    assert [entry.seq for entry, _ in applied] == [1, 2, 3]
    assert replica.applied_seq == 3


@pytest.mark.parametrize("to_seq", [0, 5, 8, len(WORKLOAD)])
def test_truncate_rebuilds_exactly_the_prefix(open_board: OpenBoard, to_seq: int) -> None:
    head = open_board("head")
    run_workload(head)
    blobs = log_blobs(head)
    head.storage.run_sync(lambda: head.truncate(to_seq))
    truncated = digest(head), messages(head, 1) if to_seq >= 3 else None
    assert head.applied_seq == to_seq
    assert log_blobs(head) == blobs[:to_seq]
    next_ids = head.next_user_id, head.next_topic_id, head.next_message_id

    prefix = replay(open_board, "prefix", blobs[:to_seq])
    assert (digest(prefix), messages(prefix, 1) if to_seq >= 3 else None) == truncated
    assert (prefix.next_user_id, prefix.next_topic_id, prefix.next_message_id) == next_ids


# Many examples each open three databases: on tmpfs when there is one, so the test is about
# the logic, not the disk. They are real SQLite files all the same.
FAST_TMP = "/dev/shm" if Path("/dev/shm").is_dir() else None
# Users 1, 2 and topics 1, 2 to start from.
FORUM = [WORKLOAD[0], WORKLOAD[1], WORKLOAD[2], WORKLOAD[6]]
# A random mix of requests over a few small ids: many are refused, the rest must replicate.
_id = st.sampled_from([1, 1, 2, 2, 3, 0])  # mostly ids that exist
_requests = st.one_of(
    st.tuples(
        st.just("create_user"), st.builds(pb.CreateUserRequest, name=st.sampled_from("aAb "))
    ),
    st.tuples(
        st.just("create_topic"), st.builds(pb.CreateTopicRequest, name=st.sampled_from("xy"))
    ),
    st.tuples(
        st.just("post_message"),
        st.builds(
            pb.PostMessageRequest,
            topic_id=_id,
            user_id=_id,
            text=st.sampled_from(["hi", "hey", ""]),
        ),
    ),
    st.tuples(
        st.just("update_message"),
        st.builds(
            pb.UpdateMessageRequest, topic_id=_id, message_id=_id, user_id=_id, text=st.just("edit")
        ),
    ),
    st.tuples(
        st.just("delete_message"),
        st.builds(pb.DeleteMessageRequest, topic_id=_id, message_id=_id, user_id=_id),
    ),
    st.tuples(
        st.just("like_message"),
        st.builds(pb.LikeMessageRequest, topic_id=_id, message_id=_id, user_id=_id),
    ),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workload=st.lists(_requests, min_size=15, max_size=60), cut=st.floats(0, 1))
def test_random_workloads_replicate_and_truncate_exactly(workload, cut: float) -> None:
    with tempfile.TemporaryDirectory(dir=FAST_TMP) as tmp:
        storages: list[Storage] = []

        def open_(name: str) -> Board:
            storages.append(Storage(Path(tmp) / f"{name}.db"))
            return Board(storages[-1])

        try:
            head = open_("head")
            for kind, request in FORUM + workload:
                execute(head, kind, request)  # many are refused: they leave no entry
            blobs, head_digest = log_blobs(head), digest(head)
            to_seq = int(cut * len(blobs))
            head.storage.run_sync(lambda: head.truncate(to_seq))
            truncated_digest = digest(head)

            replica = open_("replica")
            replica.storage.run_sync(lambda: replica.apply_blobs(blobs))
            assert digest(replica) == head_digest
            prefix = open_("prefix")
            prefix.storage.run_sync(lambda: prefix.apply_blobs(blobs[:to_seq]))
            assert digest(prefix) == truncated_digest
        finally:
            for storage in storages:
                storage.close()


# ------------------------------------------------------- pages from memory


def sql_page(board: Board, topic_id: int, from_id: int, limit: int) -> bytes:
    return board.storage.run_sync(lambda: board.get_messages(topic_id, from_id, limit))


def test_pages_from_memory_cover_what_the_node_saw_applied(forum: Board) -> None:
    """RecentPages answers a page only if it holds every message the page could show: of
    topics created since it started, all; of older topics, the messages posted since. What
    it answers is the page SQLite answers."""
    ok(post(forum, 1, 1, "before"))  # message 1: posted before the node (re)started
    pages = RecentPages(budget=10**6, first_new_id=forum.next_message_id)

    def write(outcome: Outcome) -> None:
        ok(outcome)
        pages.on_applied([outcome.entry])

    def same(topic_id: int, from_id: int, limit: int = 10) -> bool:
        page = pages.page(topic_id, from_id, limit)
        return page is not None and page == sql_page(forum, topic_id, from_id, limit)

    write(execute(forum, "create_topic", pb.CreateTopicRequest(name="New")))  # topic 3
    for topic_id, text in [(1, "a"), (3, "b"), (3, "c")]:  # messages 2, 3, 4
        write(post(forum, topic_id, 2, text))
    assert pages.page(1, 0, 10) is None and pages.page(1, 1, 10) is None  # has message 1
    assert same(1, 2) and same(3, 0) and same(3, 4, limit=1)
    assert pages.page(2, 0, 10) is None  # an older topic with no post since
    assert pages.page(4, 0, 10) is None  # no such topic: SQLite says NOT_FOUND
    write(like(forum, 3, 3, 1))
    write(update(forum, 3, 4, 2, "edited"))
    write(delete(forum, 1, 2, 2))
    assert same(1, 2) and same(3, 0) and same(3, 3, limit=1)
    assert pages.page(1, 2, 10) == b""  # message 2 is deleted


def test_a_page_stops_before_its_byte_limit_from_sqlite_and_from_memory(
    forum: Board, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page of long texts would outgrow what a gRPC client accepts (4 MiB by default):
    it stops at MAX_PAGE_BYTES, and walking on from its last id still yields every message."""
    pages = RecentPages(budget=10**6, first_new_id=forum.next_message_id)
    for number in range(7):
        outcome = post(forum, 1, 1, f"{number}" * 300)
        ok(outcome)
        pages.on_applied([outcome.entry])
    # Sizes differ by a byte or so (a timestamp's varint): the first three's, exactly.
    sizes = [len(fragment(m.SerializeToString())) for m in messages(forum, 1, 1, 7)]
    monkeypatch.setattr(board_module, "MAX_PAGE_BYTES", sum(sizes[:3]))
    assert _ids(sql_page(forum, 1, 1, 10)) == [1, 2, 3]
    assert pages.page(1, 1, 10) == sql_page(forum, 1, 1, 10)
    monkeypatch.setattr(board_module, "MAX_PAGE_BYTES", 10)  # one message goes all the same
    assert _ids(sql_page(forum, 1, 2, 10)) == _ids(pages.page(1, 2, 10)) == [2]
    monkeypatch.setattr(board_module, "MAX_PAGE_BYTES", 2 * max(sizes))
    walked, start = [], 0
    while page := _ids(sql_page(forum, 1, start, 0)):
        walked += page
        start = page[-1] + 1
    assert walked == list(range(1, 8))


_TOPIC_1 = cluster_pb2.Entry(kind=cluster_pb2.CREATE_TOPIC, topic=pb.Topic(id=1, name="t"))


def _entry(kind: int, message_id: int, text: str = "x") -> cluster_pb2.Entry:
    entry = cluster_pb2.Entry(kind=kind)
    entry.message.id, entry.message.topic_id, entry.message.text = message_id, 1, text
    return entry


def _ids(page: bytes | None) -> list[int] | None:
    return (
        None if page is None else [m.id for m in pb.GetMessagesResponse.FromString(page).messages]
    )


def test_pages_from_memory_keep_within_their_budget() -> None:
    one = len(fragment(_entry(cluster_pb2.POST, 1).message.SerializeToString()))
    pages = RecentPages(budget=3 * (one + MESSAGE_OVERHEAD), first_new_id=1)
    pages.on_applied([_TOPIC_1])
    pages.on_applied(_entry(cluster_pb2.POST, message_id) for message_id in (1, 2, 3))
    assert len(pages) == 3 and _ids(pages.page(1, 0, 10)) == [1, 2, 3]
    pages.on_applied([_entry(cluster_pb2.POST, 4)])  # evicts message 1
    assert len(pages) == 3 and pages.size <= pages.budget
    assert pages.page(1, 0, 10) is None and _ids(pages.page(1, 2, 10)) == [2, 3, 4]
    # An edit that makes a message longer counts too: the oldest one goes.
    pages.on_applied([_entry(cluster_pb2.UPDATE, 4, text="x" * 50)])
    assert len(pages) == 3 and pages.size > pages.budget  # until the next post
    pages.on_applied([_entry(cluster_pb2.POST, 5)])
    assert pages.size <= pages.budget and _ids(pages.page(1, 4, 10)) == [4, 5]
    assert pages.page(1, 3, 10) is None
    assert len(RecentPages(0, 1)) == 0  # page_cache_mb: 0 keeps nothing


def test_evicting_a_message_from_before_the_start_keeps_the_floor() -> None:
    # After a truncation the node starts over with the next id the writer had handed out
    # (20), while the loop may still hear of an older post (message 5): evicting that one
    # must not claim messages 6..19, which it never saw.
    one = len(fragment(_entry(cluster_pb2.POST, 5).message.SerializeToString()))
    pages = RecentPages(budget=one + MESSAGE_OVERHEAD, first_new_id=20)
    pages.on_applied(_entry(cluster_pb2.POST, message_id) for message_id in (5, 20))
    assert pages.page(1, 6, 10) is None and pages.page(1, 19, 10) is None
    assert _ids(pages.page(1, 20, 10)) == [20]


def test_long_runs_of_deleted_messages_go_to_sqlite() -> None:
    pages = RecentPages(budget=10**6, first_new_id=1)
    pages.on_applied([_TOPIC_1])
    last = MAX_SKIPPED + 5
    pages.on_applied(_entry(cluster_pb2.POST, message_id) for message_id in range(1, last + 1))
    pages.on_applied(_entry(cluster_pb2.DELETE, message_id) for message_id in range(1, last))
    assert pages.page(1, 0, 1) is None  # it would walk past more than MAX_SKIPPED of them
    assert _ids(pages.page(1, 5, 1)) == [last]  # from here it is few enough
    assert _ids(pages.page(1, last + 1, 1)) == []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    workload=st.lists(_requests, min_size=15, max_size=60),
    started=st.floats(0, 1),
    budget=st.sampled_from([0, 150, 400, 1000, 10**6]),
)
def test_pages_from_memory_are_the_pages_sqlite_answers(workload, started, budget) -> None:
    with tempfile.TemporaryDirectory(dir=FAST_TMP) as tmp:
        storage = Storage(Path(tmp) / "board.db")
        try:
            board = Board(storage, page_max=3)
            requests = FORUM + workload
            cut = int(started * len(requests))
            for kind, request in requests[:cut]:
                execute(board, kind, request)
            pages = RecentPages(budget, board.next_message_id)  # the node starts here
            for kind, request in requests[cut:]:
                outcome = execute(board, kind, request)
                if outcome.entry:
                    pages.on_applied([outcome.entry])
            answered = 0
            for topic_id in range(1, board.next_topic_id + 1):
                for from_id in range(board.next_message_id + 1):
                    for limit in (1, 3):
                        page = pages.page(topic_id, from_id, limit)
                        if page is not None:
                            assert page == sql_page(board, topic_id, from_id, limit)
                            answered += 1
            assert pages.size <= max(budget, 0)
            # Ample room and a start before any topic existed: memory answers every page.
            if budget == 10**6 and cut == 0:
                assert answered == (board.next_topic_id - 1) * (board.next_message_id + 1) * 2
        finally:
            storage.close()


def _serving_node(board: Board) -> NodeCore:
    """A NodeCore over ``board``: alone in its chain (head and tail), able to serve reads
    once ``_serve`` ran on the event loop."""
    config = NodeConfig(id="n1", listen="127.0.0.1:1", data_dir=str(board.storage.path.parent))
    return NodeCore(config, board.storage, board)


def _serve(core: NodeCore, *successors: str) -> None:
    """Start ``core`` as n1, the head of epoch 1, followed by ``successors``; without them
    it is the tail too, and serves reads."""
    chain = cluster_pb2.ChainConfig(epoch=1)
    for number, node_id in enumerate(("n1", *successors), start=1):
        chain.chain.add(node_id=node_id, address=f"127.0.0.1:{number}")
    core.start()
    core.apply_config(chain)
    core.grant_lease(1, time.monotonic() + 600)


def test_a_tail_without_a_lease_says_so_and_does_not_point_at_itself(forum: Board) -> None:
    core = _serving_node(forum)

    async def scenario() -> tuple[BoardError, BoardError]:
        _serve(core)
        core.state.drop_lease()
        errors = []
        for read in (lambda: core.read(forum.list_topics), lambda: core.get_messages(1, 0, 1)):
            with pytest.raises(BoardError) as caught:
                await read()
            errors.append(caught.value)
        await core.stop()
        forum.storage.close()
        return tuple(errors)

    for error in asyncio.run(scenario()):
        assert error.code == grpc.StatusCode.FAILED_PRECONDITION
        assert error.message == (
            "n1 cannot serve reads: the tail's read lease from the control plane has run out; "
            "try again shortly"
        )


def test_only_the_tail_keeps_pages_in_memory(forum: Board) -> None:
    """A head that is not the tail keeps no pages. Once it is the tail, a page shows the
    messages from before that (from SQLite) as well as those after (from memory)."""
    core = _serving_node(forum)

    async def scenario() -> tuple[int, list[bytes], int]:
        _serve(core, "n2")
        for text in ("one", "two"):  # applied and heard of, never committed by n2
            await core.storage.submit(
                lambda text=text: forum.execute("post_message", _post(text), "", EPOCH),
                then=core._after_execute,
            )
        kept_as_head = len(core.pages)
        alone = cluster_pb2.ChainConfig(epoch=2)
        alone.chain.add(node_id="n1", address="127.0.0.1:1")
        core.apply_config(alone)
        core.grant_lease(2, time.monotonic() + 600)
        await asyncio.wait_for(core.write("post_message", _post("three"), ""), 30)
        pages = [await core.get_messages(1, from_id, 10) for from_id in (0, 1, 2, 3)]
        kept_as_tail = len(core.pages)
        await core.stop()
        forum.storage.close()
        return kept_as_head, pages, kept_as_tail

    kept_as_head, pages, kept_as_tail = asyncio.run(scenario())
    assert kept_as_head == 0
    texts = [[m.text for m in pb.GetMessagesResponse.FromString(p).messages] for p in pages]
    assert texts == [["one", "two", "three"], ["one", "two", "three"], ["two", "three"], ["three"]]
    assert kept_as_tail == 1  # "three"


def test_a_write_that_is_not_committed_in_time_answers_unavailable(forum: Board) -> None:
    config = NodeConfig(
        id="n1", listen="127.0.0.1:1", data_dir=str(forum.storage.path.parent), write_timeout=0.2
    )
    core = NodeCore(config, forum.storage, forum)

    async def scenario() -> BoardError:
        _serve(core, "n2")  # n2 never acks: nothing commits
        with pytest.raises(BoardError) as caught:
            await asyncio.wait_for(core.write("post_message", _post("lost?"), "id-1"), 30)
        await core.stop()
        forum.storage.close()
        return caught.value

    error = asyncio.run(scenario())
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert error.message == "not committed within 0.2s; retry it with the same x-request-id"


def test_the_topics_are_read_once_until_a_topic_is_created(forum: Board) -> None:
    """ListTopics at a busy tail: one read of the table serves every caller until the
    board has another topic."""
    core = _serving_node(forum)
    new_topic = pb.CreateTopicRequest(name="New")

    async def scenario() -> tuple[bytes, bytes, bytes]:
        _serve(core)
        first = await core.list_topics()
        again = await core.list_topics()
        await core.storage.submit(
            lambda: forum.execute("create_topic", new_topic, "", EPOCH), then=core._after_execute
        )
        after = await core.list_topics()
        await core.stop()
        forum.storage.close()
        return first, again, after

    first, again, after = asyncio.run(scenario())
    assert again is first  # not read again
    names = [topic.name for topic in pb.ListTopicsResponse.FromString(after).topics]
    assert names == ["General", "Random", "New"]


def test_a_board_holds_at_most_max_topics(forum: Board, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(board_module, "MAX_TOPICS", 3)  # General and Random are 1 and 2
    assert topic(forum, "Third").id == 3
    refused(
        execute(forum, "create_topic", pb.CreateTopicRequest(name="Fourth")),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "the board holds at most 3 topics",
    )


async def _unheard_post(core: NodeCore, text: str) -> Outcome:
    """A post that is in SQLite but that the loop has not heard of (no ``then``): what a
    batch looks like between its commit and its callback."""
    board = core.board
    return await core.storage.submit(lambda: board.execute("post_message", _post(text), "", 1))


async def _until_waiting(core: NodeCore, reads: int) -> None:
    async with asyncio.timeout(30):
        while len(core.applied_waiters) < reads:  # the SQLite reads are back and wait
            await asyncio.sleep(0.01)


def test_sqlite_reads_wait_until_memory_has_caught_up(forum: Board) -> None:
    """A tail answers pages from memory when it can, everything else from SQLite. A batch
    that committed but whose callback has not run yet is in SQLite only: a read that saw
    it there must wait for that, or a page from memory after it could show less."""
    storage = forum.storage
    old = ok(post(forum, 1, 1, "old"))  # before the node starts: pages of it go to SQLite
    core = _serving_node(forum)

    async def scenario() -> tuple[bool, bytes, list, bytes]:
        _serve(core)
        new = await _unheard_post(core, "new")
        page = asyncio.ensure_future(core.get_messages(1, old.id, 10))
        topics = asyncio.ensure_future(core.read(forum.list_topics))
        await _until_waiting(core, reads=2)
        waited = not page.done() and not topics.done()
        core._on_applied([(new.entry, new.blob)])  # what the writer's callback does
        await asyncio.wait_for(asyncio.gather(page, topics), 30)
        from_memory = await core.get_messages(1, new.result.id, 10)
        await core.stop()
        storage.close()
        return waited, page.result(), topics.result(), from_memory

    waited, page, topics, from_memory = asyncio.run(scenario())
    assert waited
    assert [m.text for m in pb.GetMessagesResponse.FromString(page).messages] == ["old", "new"]
    assert [t.name for t in topics] == ["General", "Random"]
    assert [m.text for m in pb.GetMessagesResponse.FromString(from_memory).messages] == ["new"]


@pytest.mark.parametrize("read_is", ["waiting for the loop", "still on its reader thread"])
def test_reads_that_saw_entries_a_truncation_drops_are_told_to_retry(
    forum: Board, read_is: str
) -> None:
    """A read may have seen entries a truncation then drops: while it waits for the loop to
    hear of them (the truncation fails that wait), or while it still runs on its reader
    thread (once the same seqs are applied again, its seq no longer tells: the count of
    truncations does). Either way it is told to retry."""
    storage = forum.storage
    ok(post(forum, 1, 1, "old"))
    core = _serving_node(forum)
    has_read, gate = threading.Event(), threading.Event()

    def slow_read() -> bytes:
        page = forum.get_messages(1, 0, 10)
        has_read.set()
        gate.wait(30)  # the truncation runs meanwhile
        return page

    async def scenario() -> tuple[BoardError, bytes]:
        _serve(core)
        await _unheard_post(core, "never committed")
        if read_is == "waiting for the loop":
            reading = asyncio.ensure_future(core.read(forum.list_topics))
            await _until_waiting(core, reads=1)
        else:
            reading = asyncio.ensure_future(core.read(slow_read))
            assert await asyncio.to_thread(has_read.wait, 30)
        await core.truncate(forum.applied_seq - 1)  # drops the post the read saw
        gate.set()
        with pytest.raises(BoardError) as caught:
            await asyncio.wait_for(reading, 30)
        page = await core.get_messages(1, 0, 10)
        await core.stop()
        storage.close()
        return caught.value, page

    error, page = asyncio.run(scenario())
    assert error.code == grpc.StatusCode.UNAVAILABLE and "dropped entries" in error.message
    assert [m.text for m in pb.GetMessagesResponse.FromString(page).messages] == ["old"]


def test_commits_after_a_truncation_took_some_back_still_reach_everyone(forum: Board) -> None:
    """A truncation may take back commits (begin_truncation). When the same seqs commit
    again, every commit still reaches the subscribers at once, and each seq counts once."""
    storage = forum.storage
    core = _serving_node(forum)

    async def scenario() -> tuple[int, list[list[str]], float]:
        _serve(core)
        for text in ("one", "two", "three"):
            await core.write("post_message", _post(text), "")
        committed_seq = core.state.committed_seq
        counted = REGISTRY.get_sample_value("mboard_commits_total")
        await core.truncate(committed_seq - 2)  # takes back "two" and "three"
        subscriber = Subscriber([1], limit=100)
        core.hub.add(subscriber)
        delivered = []
        for text in ("two again", "three again", "four"):
            await asyncio.wait_for(core.write("post_message", _post(text), ""), 30)
            events = [pb.MessageEvent.FromString(event) for _, event in subscriber.events]
            delivered.append([event.message.text for event in events])
        gained = REGISTRY.get_sample_value("mboard_commits_total") - counted
        await core.stop()
        storage.close()
        return committed_seq, delivered, gained

    committed_seq, delivered, gained = asyncio.run(scenario())
    assert delivered == [
        ["two again"],
        ["two again", "three again"],
        ["two again", "three again", "four"],
    ]
    assert core.state.committed_seq == committed_seq + 1
    assert gained == 1  # only "four": the seqs before it were counted the first time


def test_a_truncation_takes_effect_on_the_loop_before_the_writer_is_done(forum: Board) -> None:
    """Rebuilding the board after a truncation takes a while. Meanwhile the node must not
    ack (a predecessor could promote it), nor its link forward the dropped entries."""
    storage = forum.storage
    core = _serving_node(forum)

    async def scenario() -> tuple[int, tuple]:
        _serve(core)
        for text in ("one", "two"):
            await core.write("post_message", _post(text), "")
        last_seq = core.state.applied_seq
        blocker, gate = _block_the_writer(storage)
        truncated = core.truncate(last_seq - 1)
        meanwhile = (
            core.state.applied_seq,
            core.state.ack_to_send(None),  # none until the writer is done
            core.recent.get(last_seq, 10),
        )
        gate.set()
        await asyncio.wait_for(asyncio.gather(blocker, truncated), 30)
        await core.stop()
        storage.close()
        return last_seq, meanwhile

    last_seq, meanwhile = asyncio.run(scenario())
    assert meanwhile == (last_seq - 1, None, None)
    assert core.state.ack_to_send(None).applied_seq == last_seq - 1


def test_a_node_shutting_down_answers_waiting_and_new_calls_with_unavailable(
    forum: Board,
) -> None:
    """Clients retry UNAVAILABLE at the new chain (a write with the same request id); a
    call left for the server to cancel on shutdown would end in CANCELLED instead."""
    storage = forum.storage
    core = _serving_node(forum)

    async def scenario() -> list[BoardError]:
        _serve(core, "n2")  # n2 never answers: nothing commits
        waiting = asyncio.ensure_future(core.write("post_message", _post("waits"), "r1"))
        async with asyncio.timeout(30):
            while not len(core.waiters):
                await asyncio.sleep(0.01)
        core.begin_shutdown()
        errors = []
        for call in (
            lambda: asyncio.wait_for(waiting, 30),
            lambda: core.write("post_message", _post("new"), "r2"),
            lambda: core.get_messages(1, 0, 10),
        ):
            with pytest.raises(BoardError) as caught:
                await call()
            errors.append(caught.value)
        await core.stop()
        storage.close()
        return errors

    errors = asyncio.run(scenario())
    assert [error.code for error in errors] == [grpc.StatusCode.UNAVAILABLE] * 3
    assert all("n1 is shutting down" in error.message for error in errors)


# ---------------------------------------------- the writer thread, for real


def test_writer_batch_that_fails_rolls_back_and_reloads_the_counters(board: Board) -> None:
    """One failing job rolls back its whole batch; the board then forgets the ids that
    batch handed out, so the next write continues from what is really stored."""
    storage = board.storage
    user(board, "Alice")
    topic(board, "General")

    async def scenario() -> tuple[list, list]:
        blocker, gate = _hold_the_writer(storage)
        batch = [
            storage.submit(lambda: board.execute("post_message", _post("lost 1"), "", EPOCH)),
            storage.submit(_explode),
            storage.submit(lambda: board.execute("post_message", _post("lost 2"), "", EPOCH)),
        ]
        gate.set()
        await blocker
        failed = await asyncio.gather(*batch, return_exceptions=True)
        after = await storage.submit(
            lambda: board.execute("post_message", _post("kept"), "", EPOCH)
        )
        page = await storage.read(lambda: board.get_messages(1, 0, 0))
        storage.close()  # while the loop the threads report to still runs
        page = pb.GetMessagesResponse.FromString(page)
        return failed, [after.result.id, *(m.id for m in page.messages)]

    failed, ids = asyncio.run(scenario())
    assert all(isinstance(outcome, RuntimeError) for outcome in failed)
    assert ids == [1, 1]  # "kept" got id 1: the rolled-back posts left nothing behind
    assert board.applied_seq == 3
    assert storage.failure is None  # a bug is not a broken disk: the node goes on


def test_a_full_disk_fails_the_writer_for_good_and_says_so_once(board: Board) -> None:
    """SQLite cannot store a batch (here: the file may not grow, as on a full disk): that
    batch and every later job fail with StorageFailed, nothing more runs, and the node
    hears of it once (it stops: fail-stop, see node/server.py; only a retry runs, below)."""
    storage = board.storage
    user(board, "Alice")
    topic(board, "General")
    heard: list[StorageFailed] = []
    ran: list[str] = []

    async def scenario() -> tuple[list, BaseException]:
        storage.on_failure = heard.append
        storage.start(asyncio.get_running_loop())
        pages = storage.connection().execute("PRAGMA page_count").fetchone()[0]
        await storage.submit(
            lambda: storage.connection().execute(f"PRAGMA max_page_count = {pages}")
        )

        def post() -> Outcome:  # a page of text: the file must grow
            return board.execute("post_message", _post("x" * 4000), "", EPOCH)

        outcomes = [
            (await asyncio.gather(storage.submit(post), return_exceptions=True))[0]
            for _ in range(20)
        ]
        later = await asyncio.gather(
            storage.submit(lambda: ran.append("later")), return_exceptions=True
        )
        storage.close()
        return outcomes, later[0]

    outcomes, later = asyncio.run(scenario())
    failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    assert failures and all(isinstance(failure, StorageFailed) for failure in failures)
    assert "cannot write" in str(failures[0]) and "full" in str(failures[0])
    assert later is failures[0] and ran == []  # nothing runs after the failure
    assert heard == [failures[0]]  # once


def test_a_retry_that_finds_room_lets_the_writer_run_again(board: Board) -> None:
    """After a failure only Storage.retry runs a batch (the chain's last member tries now
    and then): without room it fails quietly; once one commits, the writer runs jobs
    again, from what SQLite holds, with nothing of the failed batches."""
    storage = board.storage
    user(board, "Alice")
    topic(board, "General")
    heard: list[StorageFailed] = []

    def post(text: str) -> Callable[[], Outcome]:
        return lambda: board.execute("post_message", _post(text), "", EPOCH)

    def allow(pages: int) -> None:
        storage.connection().execute(f"PRAGMA max_page_count = {pages}")

    async def scenario() -> tuple[int, BaseException, Outcome]:
        storage.on_failure = heard.append
        storage.start(asyncio.get_running_loop())
        pages = storage.connection().execute("PRAGMA page_count").fetchone()[0]
        await storage.submit(partial(allow, pages))
        for number in range(50):  # a page of text each: the file must grow
            try:
                await storage.submit(post(f"{number}" * 4000))
            except StorageFailed:
                break
        stored = board.applied_seq
        (no_room,) = await asyncio.gather(storage.retry(post("y" * 4000)), return_exceptions=True)
        await storage.retry(partial(allow, 1_000_000))
        after = await storage.submit(post("after"))
        storage.close()
        return stored, no_room, after

    stored, no_room, after = asyncio.run(scenario())
    assert isinstance(no_room, StorageFailed) and len(heard) == 1  # said once
    assert storage.failure is None
    assert after.entry.seq == stored + 1
    assert [m.text for m in messages(board, 1)][-1] == "after"


def test_a_subscriber_that_overflows_lets_go_of_its_queue() -> None:
    """Its stream ends with RESOURCE_EXHAUSTED once the client reads again; meanwhile the
    events it missed must not stay in memory (a client can stop reading for ever)."""

    async def scenario() -> Subscriber:
        subscriber = Subscriber([1], limit=3)
        for seq in range(1, 6):
            subscriber.offer((seq, b"x" * 1000))
        return subscriber

    subscriber = asyncio.run(scenario())
    assert subscriber.overflowed and len(subscriber.events) == 0


def _post(text: str) -> pb.PostMessageRequest:
    return pb.PostMessageRequest(topic_id=1, user_id=1, text=text)


def _hold_the_writer(storage: Storage) -> tuple[asyncio.Future, threading.Event]:
    """Start the storage threads and keep the writer busy until the returned gate is set:
    the jobs submitted meanwhile queue up and form ONE batch. Returns (blocker, gate)."""
    storage.start(asyncio.get_running_loop())
    return _block_the_writer(storage)


def _block_the_writer(storage: Storage) -> tuple[asyncio.Future, threading.Event]:
    """Keep the running writer busy until the returned gate is set (see _hold_the_writer)."""
    entered, gate = threading.Event(), threading.Event()

    def hold() -> None:
        entered.set()
        gate.wait(30)

    blocker = storage.submit(hold)
    assert entered.wait(30)
    return blocker, gate


def _explode() -> None:
    raise RuntimeError("disk on fire")


def test_after_commit_callback_runs_even_when_the_caller_gave_up(board: Board) -> None:
    """A client that cancels its write while it waits for the writer does not undo it: the
    post is stored, so ``then`` (which tells the replication stream and the subscribers)
    must still run. A rolled-back batch runs no ``then``."""
    storage = board.storage
    user(board, "Alice")
    topic(board, "General")
    heard: list[int] = []

    async def scenario() -> None:
        blocker, gate = _hold_the_writer(storage)
        abandoned = storage.submit(
            lambda: board.execute("post_message", _post("abandoned"), "", EPOCH),
            then=lambda outcome: heard.append(outcome.entry.seq),
        )
        abandoned.cancel()  # what awaiting it from a cancelled handler does
        gate.set()
        await blocker
        await storage.submit(lambda: None)  # after the abandoned post: not in a failing batch
        with pytest.raises(RuntimeError):
            await storage.submit(_explode, then=lambda _: heard.append(-1))
        storage.close()

    asyncio.run(scenario())
    assert heard == [3]  # the abandoned post (seq 3, after Alice and General); not the failure
    assert [m.text for m in messages(board, 1)] == ["abandoned"]


def test_one_writer_batch_sees_its_own_posts_and_retries(board: Board) -> None:
    """Jobs of one writer batch share one transaction: what a post wrote, the jobs after it
    must find (a retry answers as before, a like and an edit find the message)."""
    storage = board.storage
    alice = user(board, "Alice")
    topic(board, "General")
    like_request = pb.LikeMessageRequest(topic_id=1, message_id=1, user_id=alice.id)
    edit_request = pb.UpdateMessageRequest(topic_id=1, message_id=1, user_id=alice.id, text="b")

    async def scenario() -> list[Outcome]:
        blocker, gate = _hold_the_writer(storage)
        jobs = [
            lambda: board.execute("post_message", _post("a"), "r1", EPOCH),
            lambda: board.execute("post_message", _post("a"), "r1", EPOCH),  # the retry
            lambda: board.execute("like_message", like_request, "r2", EPOCH),
            lambda: board.execute("update_message", edit_request, "r3", EPOCH),
            lambda: board.execute("post_message", _post("c"), "r4", EPOCH),
        ]
        batch = [storage.submit(job) for job in jobs]
        gate.set()
        await blocker
        outcomes = await asyncio.gather(*batch)
        storage.close()
        return outcomes

    posted, retried, liked, edited, second = asyncio.run(scenario())
    assert ok(retried) == ok(posted) and retried.entry is None
    assert ok(liked).likes == 1 and ok(edited).text == "b"
    assert [(m.id, m.text, m.likes) for m in messages(board, 1)] == [(1, "b", 1), (2, "c", 0)]
    seqs = [cluster_pb2.Entry.FromString(blob).seq for blob in log_blobs(board)]
    assert seqs == [1, 2, 3, 4, 5, 6]  # user, topic, post, like, edit, post: no second post
