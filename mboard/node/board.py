"""The board as a replicated state machine over one node's storage.

The head turns a request into a fully resolved log entry (``Board.execute``): it validates
against its own state, assigns the seq and the new ids, and fixes timestamps and like
counts, so that ``Board.apply`` is deterministic on every replica. Both run on the writer
thread, inside the storage layer's batch transaction; the reads run on reader threads.
No networking here.
"""

from __future__ import annotations

import functools
import hashlib
import sqlite3
import time
import unicodedata
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import grpc
from google.protobuf import empty_pb2
from google.protobuf.message import Message as ProtoMessage
from google.protobuf.timestamp_pb2 import Timestamp

from mboard.api import cluster_pb2
from mboard.api import razpravljalnica_pb2 as pb

from .storage import BOARD_MODELS, LogEntry, Message, State, Storage, Topic, User

MAX_NAME_LENGTH = 64
# The most topics a board holds: ListTopics answers with all of them in one reply, which must
# stay within gRPC's 4 MiB (at most about 270 bytes a topic: 2.7 MB).
MAX_TOPICS = 10_000
# How many of the newest log entries a retry is recognised in (the exactly-once window):
# about 40 s of writes at full speed on a 2-core machine, far beyond a client's deadline.
# Each entry with a request id costs some 200 bytes of memory.
REQUEST_WINDOW = 100_000


class Kind:
    """The entry kinds as plain ints: on the hot paths, ``cluster_pb2.EntryKind.POST`` costs
    a Python-level lookup each time."""

    CREATE_USER = cluster_pb2.CREATE_USER
    CREATE_TOPIC = cluster_pb2.CREATE_TOPIC
    POST = cluster_pb2.POST
    UPDATE = cluster_pb2.UPDATE
    DELETE = cluster_pb2.DELETE
    LIKE = cluster_pb2.LIKE


class BoardError(Exception):
    """A request the board refuses; ``code`` is the gRPC status it answers with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> BoardError:
    return BoardError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> BoardError:
    return BoardError(grpc.StatusCode.NOT_FOUND, message)


# ----------------------------------------------------------------- validation


# Control characters that str.strip() takes for whitespace, beside tab, newline and the like.
_STRIPPED_CONTROLS = "\x1c\x1d\x1e\x1f\x85"


def check_name(what: str, name: str) -> str:
    """Return the trimmed name, or raise INVALID_ARGUMENT saying what is wrong with it."""
    trimmed = name.strip()
    # Trimming removes whitespace only: a control character at an end is refused like
    # one inside, not silently dropped.
    edges = name[: len(name) - len(name.lstrip())] + name[len(name.rstrip()) :]
    if any(control in edges for control in _STRIPPED_CONTROLS):
        raise invalid(f"{what} name must not contain control characters")
    if not 1 <= len(trimmed) <= MAX_NAME_LENGTH:
        raise invalid(
            f"{what} name must be 1..{MAX_NAME_LENGTH} characters after trimming, "
            f"got {len(trimmed)}"
        )
    if any(unicodedata.category(ch) == "Cc" for ch in trimmed):
        raise invalid(f"{what} name must not contain control characters")
    return trimmed


def name_key(name: str) -> str:
    return name.casefold()


def check_text(text: str, max_length: int) -> str:
    if not text.strip():
        raise invalid("text must not be empty or only whitespace")
    if len(text) > max_length:
        raise invalid(f"text is {len(text)} characters, the limit is {max_length}")
    if "\x00" in text:
        raise invalid("text must not contain NUL characters")
    return text


def check_id(field: str, value: int) -> int:
    if value <= 0:
        raise invalid(f"{field} must be > 0, got {value}")
    return value


class RequestWindow:
    """The request ids of the newest ``size`` log entries, and the seq of each.

    The window counts entries, not time: every replica of the same log holds the same one,
    so a new head answers a retry exactly as the old head would have.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._seqs: dict[str, int] = {}
        self._order: deque[tuple[int, str]] = deque()  # (seq, request id), oldest first

    def add(self, seq: int, request_id: str) -> None:
        self._seqs[request_id] = seq
        self._order.append((seq, request_id))
        while self._order[0][0] <= seq - self.size:
            old_seq, old_id = self._order.popleft()
            if self._seqs[old_id] == old_seq:  # not since reused by a later entry
                del self._seqs[old_id]

    def __len__(self) -> int:
        return len(self._seqs)

    def seq_of(self, request_id: str, applied_seq: int) -> int | None:
        """The seq of the entry carrying ``request_id`` if it is among the newest ``size``
        entries up to ``applied_seq``, else None."""
        seq = self._seqs.get(request_id)
        return seq if seq is not None and seq > applied_seq - self.size else None


# ------------------------------------------------------------------- results


def result_of(entry: cluster_pb2.Entry) -> ProtoMessage:
    """What the write that produced ``entry`` answers its client (also on a retry)."""
    kind = entry.kind
    if kind == Kind.CREATE_USER:
        return entry.user
    if kind == Kind.CREATE_TOPIC:
        return entry.topic
    if kind == Kind.DELETE:
        return empty_pb2.Empty()
    return entry.message


def _asking(kind: str, request: ProtoMessage) -> tuple:
    """What a write request asks for, as ``_asked_for`` tells it from the entry it made."""
    if kind in ("create_user", "create_topic"):
        return kind, request.name.strip()
    if kind == "post_message":
        return kind, request.topic_id, request.user_id, request.text
    text = request.text if kind == "update_message" else ""
    return kind, request.topic_id, request.message_id, request.user_id, text


def _asked_for(entry: cluster_pb2.Entry) -> tuple:
    """What the request that made ``entry`` asked for: a retry of it asks the same."""
    kind, message = entry.kind, entry.message
    if kind == Kind.CREATE_USER:
        return "create_user", entry.user.name
    if kind == Kind.CREATE_TOPIC:
        return "create_topic", entry.topic.name
    if kind == Kind.POST:
        return "post_message", message.topic_id, message.user_id, message.text
    if kind == Kind.LIKE:
        return "like_message", message.topic_id, message.id, entry.liker_id, ""
    name, text = ("update_message", message.text) if kind == Kind.UPDATE else ("delete_message", "")
    return name, message.topic_id, message.id, message.user_id, text


_EVENT_OPS = {
    Kind.POST: pb.OP_POST,
    Kind.LIKE: pb.OP_LIKE,
    Kind.UPDATE: pb.OP_UPDATE,
    Kind.DELETE: pb.OP_DELETE,
}


def event_of(entry: cluster_pb2.Entry) -> pb.MessageEvent | None:
    """The subscription event an entry produces (None for users and topics)."""
    op = _EVENT_OPS.get(entry.kind)
    if op is None:
        return None
    return pb.MessageEvent(
        sequence_number=entry.seq, op=op, message=entry.message, event_at=entry.at
    )


@dataclass
class Outcome:
    """What ``Board.execute`` did with one request.

    ``entry``/``blob`` are set when it appended a new log entry. The client gets ``result``
    or ``error`` only once ``wait_seq`` is committed: even a refusal or a no-op reflects
    state that must not be shown before it is committed.
    """

    wait_seq: int
    result: ProtoMessage | None = None
    error: BoardError | None = None
    entry: cluster_pb2.Entry | None = None
    blob: bytes | None = None


@dataclass
class ReplayPage:
    """One page of a subscription's replay (``Board.snapshot_page`` / ``events_page``).

    The node sends ``events`` once ``state_seq`` (the newest state they show) is committed;
    after them the stream is complete through ``covered_seq``. ``next_from`` is where the
    next page starts.
    """

    events: list[pb.MessageEvent]
    state_seq: int
    covered_seq: int
    next_from: int
    done: bool


def _timestamp(micros: int) -> Timestamp:
    timestamp = Timestamp()
    _set_micros(timestamp, micros)
    return timestamp


def _set_micros(timestamp: Timestamp, micros: int) -> None:
    timestamp.seconds, remainder = divmod(micros, 1_000_000)
    timestamp.nanos = remainder * 1000


def _micros(ts) -> int:
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def _message(
    message_id: int, topic_id: int, user_id: int, text: str, created_at_us: int, likes: int
) -> pb.Message:
    """A message from its columns in the messages table."""
    return pb.Message(
        id=message_id, topic_id=topic_id, user_id=user_id, text=text,
        created_at=_timestamp(created_at_us), likes=likes,
    )  # fmt: skip


def prefix_within(pieces: Iterable[bytes], max_bytes: int) -> list[bytes]:
    """The longest prefix of ``pieces`` within ``max_bytes`` in all (at least the first);
    an iterator is read no further than that.

    Every gRPC message must stay under the receiver's limit (4 MiB by default, in clients
    and in our own links): 1000 messages of long texts are several times that, and a page
    or a stream message that big fails at the receiver, on every retry.
    """
    taken: list[bytes] = []
    total = 0
    for piece in pieces:
        total += len(piece)
        if total > max_bytes and taken:
            break
        taken.append(piece)
    return taken


def join_page(fragments: list[bytes]) -> bytes:
    """A serialized GetMessagesResponse of ``fragments``' messages, or of as many of the
    first as fit in MAX_PAGE_BYTES."""
    page = b"".join(fragments)
    if len(page) <= MAX_PAGE_BYTES:  # nearly always: no Python loop over the fragments
        return page
    return b"".join(prefix_within(fragments, MAX_PAGE_BYTES))


def fragment(wire: bytes) -> bytes:
    """A serialized message as a piece of a serialized GetMessagesResponse.

    That is its field 1 (``repeated Message messages = 1``): tag 0x0a, the length as a
    varint, the bytes. A page is its messages' fragments joined in order, exactly what
    protobuf would write.
    """
    return b"\x0a" + _varint(len(wire)) + wire


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Hot statements, run on the writer connection as they are (see DESIGN.md, Storage).
_INSERT_LOG = "INSERT INTO log (seq, epoch, topic_id, request_id, data) VALUES "
_LOG_ROW = "(?, ?, ?, ?, ?)"
_INSERT_MESSAGE = (
    "INSERT INTO messages "
    "(id, topic_id, user_id, text, created_at_us, post_seq, likes, deleted, wire) VALUES "
)
_MESSAGE_ROW = "(?, ?, ?, ?, ?, ?, 0, 0, ?)"
# The most bytes of messages in one GetMessages page (see prefix_within). A page cut short
# is still a page: the client asks on from the id after its last message.
MAX_PAGE_BYTES = 4_000_000
# Rows per INSERT statement: 7 values each stay under SQLite's oldest limit of 999.
MAX_ROWS_PER_INSERT = 128
# The hottest read: one page of a topic (uses the (topic_id, id) index).
_SELECT_PAGE = (
    "SELECT wire FROM messages WHERE topic_id = ? AND id >= ? AND deleted = 0 ORDER BY id LIMIT ?"
)
_SELECT_LOG = "SELECT data FROM log WHERE seq >= ? ORDER BY seq LIMIT ?"
_SELECT_MESSAGE = (
    "SELECT topic_id, user_id, text, created_at_us, likes, deleted FROM messages WHERE id = ?"
)


class Board:
    """State of one replica. Write methods run on the storage writer thread only."""

    def __init__(self, storage: Storage, max_text_length: int = 4096, page_max: int = 1000):
        self.storage = storage
        self.max_text_length = max_text_length
        self.page_max = page_max
        self.storage.run_sync(self._upgrade)
        self.storage.run_sync(self._load)
        storage.before_commit = self.flush
        storage.after_rollback = self._load

    def _upgrade(self) -> None:
        """Bring a database from an older mboard up to this schema (once, at start)."""
        conn = self._conn()
        conn.execute("DROP INDEX IF EXISTS logentry_request_id")  # now RequestWindow's job
        for redundant in ("message_topic_id", "message_user_id", "like_user_id"):  # see Message
            conn.execute(f"DROP INDEX IF EXISTS {redundant}")
        if "wire" not in {column[1] for column in conn.execute("PRAGMA table_info(messages)")}:
            conn.execute("ALTER TABLE messages ADD COLUMN wire BLOB NOT NULL DEFAULT x''")
            rows = conn.execute(
                "SELECT id, topic_id, user_id, text, created_at_us, likes FROM messages"
            ).fetchall()
            conn.executemany(
                "UPDATE messages SET wire = ? WHERE id = ?",
                [(_message(*row).SerializeToString(), row[0]) for row in rows],
            )

    def _load(self) -> None:
        """(Re)derive the writer's in-memory view from the database (also after a rollback)."""
        last = LogEntry.select(LogEntry.seq, LogEntry.epoch).order_by(LogEntry.seq.desc()).first()
        self.applied_seq = last.seq if last else 0
        self.last_epoch = last.epoch if last else 0
        row = State.get_or_none(State.key == "committed_seq")
        self.saved_committed_seq = min(row.value if row else 0, self.applied_seq)
        self.next_user_id = _next_id(User)
        self.next_topic_id = _next_id(Topic)
        self.next_message_id = _next_id(Message)
        self.requests = RequestWindow(REQUEST_WINDOW)
        # Rows of new posts and log entries not inserted yet (see ``flush``).
        self._held_messages: list[tuple] = []
        self._held_log: list[tuple] = []
        recent = self._conn().execute(
            "SELECT seq, request_id FROM log WHERE seq > ? AND request_id IS NOT NULL ORDER BY seq",
            (self.applied_seq - REQUEST_WINDOW,),
        )
        for seq, request_id in recent:
            self.requests.add(seq, request_id)

    # ------------------------------------------------------------ head: execute

    def execute(self, kind: str, request: ProtoMessage, request_id: str, epoch: int) -> Outcome:
        """Validate ``request``; if it changes the board, append and apply its entry."""
        seq = self.requests.seq_of(request_id, self.applied_seq) if request_id else None
        if seq is not None:  # a retry of a write that is already in the log: answer as before
            self.flush()
            (data,) = self._conn().execute("SELECT data FROM log WHERE seq = ?", (seq,)).fetchone()
            entry = cluster_pb2.Entry.FromString(data)
            if _asked_for(entry) != _asking(kind, request):  # not a retry: a reused id
                return Outcome(
                    wait_seq=self.applied_seq,
                    error=invalid(
                        f"x-request-id {request_id!r} was used for another write (seq {seq}); "
                        "a new write needs a new id"
                    ),
                )
            return Outcome(wait_seq=seq, result=result_of(entry))
        try:
            entry = getattr(self, f"_resolve_{kind}")(request)
        except BoardError as error:
            return Outcome(wait_seq=self.applied_seq, error=error)
        if isinstance(entry, ProtoMessage) and not isinstance(entry, cluster_pb2.Entry):
            return Outcome(wait_seq=self.applied_seq, result=entry)  # a no-op (liked again)
        entry.seq = self.applied_seq + 1
        entry.epoch = epoch
        entry.request_id = request_id
        _set_micros(entry.at, time.time_ns() // 1000)
        if entry.kind == Kind.POST:
            entry.message.created_at.CopyFrom(entry.at)
        blob = entry.SerializeToString()
        self._apply(entry, blob)
        return Outcome(wait_seq=entry.seq, result=result_of(entry), entry=entry, blob=blob)

    def _resolve_create_user(self, request: pb.CreateUserRequest) -> cluster_pb2.Entry:
        user = pb.User(id=self.next_user_id, name=self._new_name("user", request.name))
        return cluster_pb2.Entry(kind=Kind.CREATE_USER, user=user)

    def _resolve_create_topic(self, request: pb.CreateTopicRequest) -> cluster_pb2.Entry:
        if self.next_topic_id > MAX_TOPICS:
            raise BoardError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the board holds at most {MAX_TOPICS:,} topics (ListTopics answers with all "
                "of them in one reply)",
            )
        topic = pb.Topic(id=self.next_topic_id, name=self._new_name("topic", request.name))
        return cluster_pb2.Entry(kind=Kind.CREATE_TOPIC, topic=topic)

    def _new_name(self, what: str, name: str) -> str:
        """The trimmed name for a new user or topic; ALREADY_EXISTS if one has it (any case)."""
        name = check_name(what, name)
        taken = f"SELECT 1 FROM {what}s WHERE name_key = ?"  # users / topics
        if self._conn().execute(taken, (name_key(name),)).fetchone():
            raise BoardError(grpc.StatusCode.ALREADY_EXISTS, f"{what} name {name!r} is taken")
        return name

    def _resolve_post_message(self, request: pb.PostMessageRequest) -> cluster_pb2.Entry:
        check_id("topic_id", request.topic_id)
        check_id("user_id", request.user_id)
        text = check_text(request.text, self.max_text_length)
        self._require_user(request.user_id)
        self._require_topic(request.topic_id)
        message = pb.Message(
            id=self.next_message_id, topic_id=request.topic_id, user_id=request.user_id, text=text
        )
        return cluster_pb2.Entry(kind=Kind.POST, message=message)

    def _resolve_update_message(self, request: pb.UpdateMessageRequest) -> cluster_pb2.Entry:
        text = check_text(request.text, self.max_text_length)
        message = self._authored_message(request)
        message.text = text
        return cluster_pb2.Entry(kind=Kind.UPDATE, message=message)

    def _resolve_delete_message(self, request: pb.DeleteMessageRequest) -> cluster_pb2.Entry:
        return cluster_pb2.Entry(kind=Kind.DELETE, message=self._authored_message(request))

    def _resolve_like_message(self, request: pb.LikeMessageRequest):
        check_id("user_id", request.user_id)
        message = self._live_message(request.topic_id, request.message_id)
        self._require_user(request.user_id)
        liked = (
            self._conn()
            .execute(
                "SELECT 1 FROM likes WHERE user_id = ? AND message_id = ?",
                (request.user_id, request.message_id),
            )
            .fetchone()
        )
        if liked:
            return message  # one like per user: liking again changes nothing
        message.likes += 1
        return cluster_pb2.Entry(kind=Kind.LIKE, message=message, liker_id=request.user_id)

    def _authored_message(self, request) -> pb.Message:
        check_id("user_id", request.user_id)
        message = self._live_message(request.topic_id, request.message_id)
        self._require_user(request.user_id)  # a user who does not exist is NOT_FOUND
        if message.user_id != request.user_id:
            raise BoardError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"user {request.user_id} is not the author of message {request.message_id}",
            )
        return message

    def _live_message(self, topic_id: int, message_id: int) -> pb.Message:
        check_id("topic_id", topic_id)
        check_id("message_id", message_id)
        self.flush()
        row = self._conn().execute(_SELECT_MESSAGE, (message_id,)).fetchone()
        if row is None or row[5] or row[0] != topic_id:
            raise not_found(f"message {message_id} does not exist in topic {topic_id}")
        return _message(message_id, *row[:5])

    def require(self, user_id: int, topic_ids: list[int]) -> None:
        """NOT_FOUND unless the user and every topic exist."""
        self._require_user(user_id)
        for topic_id in topic_ids:
            self._require_topic(topic_id)

    # Users and topics are never deleted and get dense ids (1, 2, ...) in log order, so
    # the next id says which exist without a query: the head's hottest check.
    def _require_user(self, user_id: int) -> None:
        if not 0 < user_id < self.next_user_id:
            raise not_found(f"user {user_id} does not exist")

    def _require_topic(self, topic_id: int) -> None:
        if not 0 < topic_id < self.next_topic_id:
            raise not_found(f"topic {topic_id} does not exist")

    # ------------------------------------------------------- every node: apply

    def apply_blobs(self, blobs: list[bytes]) -> list[tuple[cluster_pb2.Entry, bytes]]:
        """Apply replicated entries in order, skipping ones already applied.

        Returns the entries it applied. At a gap it stops without raising: raising would
        roll back the other jobs of the writer's batch. The stream that sent it notices that
        its entries did not all land and re-handshakes.
        """
        applied = []
        for blob in blobs:
            entry = cluster_pb2.Entry.FromString(blob)
            if entry.seq <= self.applied_seq:
                continue
            if entry.seq != self.applied_seq + 1:
                break
            self._apply(entry, blob)
            applied.append((entry, blob))
        return applied

    def _apply(self, entry: cluster_pb2.Entry, blob: bytes) -> None:
        self._apply_state(entry)
        topic_id = entry.message.topic_id or entry.topic.id or None
        self._held_log.append((entry.seq, entry.epoch, topic_id, entry.request_id or None, blob))
        if entry.request_id:
            self.requests.add(entry.seq, entry.request_id)
        self.applied_seq = entry.seq
        self.last_epoch = entry.epoch

    def _apply_state(self, entry: cluster_pb2.Entry) -> None:
        message = entry.message
        kind = entry.kind
        if kind == Kind.POST:  # by far the most common: first
            self._held_messages.append(
                (
                    message.id,
                    message.topic_id,
                    message.user_id,
                    message.text,
                    _micros(message.created_at),
                    entry.seq,
                    message.SerializeToString(),
                )
            )
            self.next_message_id = max(self.next_message_id, message.id + 1)
            # Memory stays bounded. The held log rows are as many, at most one more: any
            # other kind of entry flushes both before its own row is held.
            if len(self._held_messages) >= MAX_ROWS_PER_INSERT:
                self.flush()
            return
        self.flush()  # what follows may change a post held back
        conn = self._conn()
        if kind == Kind.LIKE:
            conn.execute(
                "INSERT INTO likes (user_id, message_id) VALUES (?, ?)",
                (entry.liker_id, message.id),
            )
            conn.execute(
                "UPDATE messages SET likes = ?, wire = ? WHERE id = ?",
                (message.likes, message.SerializeToString(), message.id),
            )
        elif kind == Kind.UPDATE:
            conn.execute(
                "UPDATE messages SET text = ?, wire = ? WHERE id = ?",
                (message.text, message.SerializeToString(), message.id),
            )
        elif kind == Kind.DELETE:
            conn.execute("UPDATE messages SET deleted = 1 WHERE id = ?", (message.id,))
        elif kind == Kind.CREATE_USER:
            User.insert(
                id=entry.user.id, name=entry.user.name, name_key=name_key(entry.user.name)
            ).execute()
            self.next_user_id = max(self.next_user_id, entry.user.id + 1)
        elif kind == Kind.CREATE_TOPIC:
            Topic.insert(
                id=entry.topic.id, name=entry.topic.name, name_key=name_key(entry.topic.name)
            ).execute()
            self.next_topic_id = max(self.next_topic_id, entry.topic.id + 1)
        else:
            raise ValueError(f"entry {entry.seq} has unknown kind {entry.kind}")

    def flush(self) -> None:
        """Insert the rows of the posts and log entries applied since the last flush.

        Held back, a batch's posts go in with a few multi-row INSERTs, not two statements
        each. That matters beyond SQLite's own work: every statement lets go of the GIL
        while SQLite runs, and the writer then waits for the event loop to hand it back.
        The storage calls this before each commit; the board before any statement that
        could see those rows, and once it holds MAX_ROWS_PER_INSERT of them (a stream batch
        of 500 entries, or a truncate replaying the whole log, goes in as it is applied).
        """
        conn = self._conn()
        if self._held_messages:
            _insert_rows(conn, _INSERT_MESSAGE, _MESSAGE_ROW, self._held_messages)
            self._held_messages = []
        if self._held_log:
            _insert_rows(conn, _INSERT_LOG, _LOG_ROW, self._held_log)
            self._held_log = []

    def save_committed(self, committed_seq: int, every: int = 1) -> None:
        """Persist how far the chain has committed, once it moved ``every`` seqs.

        A lower bound is always safe (it only limits what a rejoin may keep), so the hot
        paths save now and then and the heartbeat saves the rest.
        """
        committed_seq = min(committed_seq, self.applied_seq)
        if committed_seq >= self.saved_committed_seq + every:
            self._conn().execute(
                "INSERT OR REPLACE INTO state (key, value) VALUES ('committed_seq', ?)",
                (committed_seq,),
            )
            self.saved_committed_seq = committed_seq

    def truncate(self, to_seq: int) -> None:
        """Drop every entry above ``to_seq`` and rebuild the board from the remaining log.

        Only entries the chain never committed are ever above ``to_seq``. Rebuilding from
        our own log keeps apply the one path that writes board state.
        """
        self.flush()
        LogEntry.delete().where(LogEntry.seq > to_seq).execute()
        for model in reversed(BOARD_MODELS):
            model.delete().execute()
        self.next_user_id = self.next_topic_id = self.next_message_id = 1
        for (blob,) in LogEntry.select(LogEntry.data).order_by(LogEntry.seq).tuples().iterator():
            self._apply_state(cluster_pb2.Entry.FromString(bytes(blob)))
        self.flush()  # before _load forgets what is held
        State.replace(key="committed_seq", value=min(self.saved_committed_seq, to_seq)).execute()
        self._load()

    def _conn(self):
        return self.storage.connection()

    # ------------------------------------------------------- reader threads

    def list_topics(self) -> list[pb.Topic]:
        rows = Topic.select(Topic.id, Topic.name).order_by(Topic.id).tuples()
        return [pb.Topic(id=topic_id, name=name) for topic_id, name in rows]

    def topics_reply(self) -> tuple[int, bytes]:
        """Every topic, as a serialized ListTopicsResponse, and the id that follows them."""
        topics = self.list_topics()
        next_id = topics[-1].id + 1 if topics else 1
        return next_id, pb.ListTopicsResponse(topics=topics).SerializeToString()

    def get_user(self, user_id: int) -> pb.User:
        check_id("user_id", user_id)
        user = User.get_or_none(User.id == user_id)
        if user is None:
            raise not_found(f"user {user_id} does not exist")
        return pb.User(id=user.id, name=user.name)

    def page_bounds(self, topic_id: int, from_message_id: int, limit: int) -> tuple[int, int, int]:
        """A GetMessages request's (topic_id, from_message_id, limit), checked; a limit
        <= 0 means the page maximum, and larger asks are capped at it."""
        check_id("topic_id", topic_id)
        if from_message_id < 0:
            raise invalid(f"from_message_id must be >= 0, got {from_message_id}")
        return topic_id, from_message_id, self.page_max if limit <= 0 else min(limit, self.page_max)

    def get_messages(self, topic_id: int, from_message_id: int, limit: int) -> bytes:
        """One page of a topic, as a serialized GetMessagesResponse."""
        topic_id, from_message_id, limit = self.page_bounds(topic_id, from_message_id, limit)
        rows = self._conn().execute(_SELECT_PAGE, (topic_id, from_message_id, limit)).fetchall()
        if not rows:  # only an empty page needs to tell "no topic" from "no messages"
            self._require_topic(topic_id)
        return join_page([fragment(wire) for (wire,) in rows])

    def snapshot_page(
        self, topic_ids: list[int], from_message_id: int, up_to_seq: int | None, limit: int
    ) -> ReplayPage:
        """Up to ``limit`` of the topics' live messages with id >= ``from_message_id``, as
        OP_POST events in ascending id, among those posted at or before ``up_to_seq`` (None:
        the applied seq now; later pages pass the first page's ``state_seq``).

        Each event carries the seq of its own POST entry: ids grow with seqs, so the stream
        stays strictly increasing and a client can resume after any event with from_sequence.
        A message shows its state at ``state_seq``: at least as new as ``up_to_seq``, so a
        like or an edit after it may show both here and as its own live event.
        """
        marks = ", ".join("?" * len(topic_ids))
        with self.storage.db.atomic():  # one read transaction: the state at state_seq
            state_seq = self.applied_seq_now()
            bound = state_seq if up_to_seq is None else up_to_seq
            rows = (
                self._conn()
                .execute(
                    "SELECT id, topic_id, user_id, text, created_at_us, likes, post_seq "
                    f"FROM messages WHERE topic_id IN ({marks}) AND id >= ? AND post_seq <= ? "
                    "AND deleted = 0 ORDER BY id LIMIT ?",
                    (*topic_ids, from_message_id, bound, limit),
                )
                .fetchall()
            )
        events = []
        for *columns, post_seq in rows:
            message = _message(*columns)
            event_at = message.created_at
            events.append(
                pb.MessageEvent(
                    sequence_number=post_seq, op=pb.OP_POST, message=message, event_at=event_at
                )
            )
        done = len(rows) < limit
        return ReplayPage(
            events=events,
            state_seq=state_seq,
            covered_seq=bound if done else events[-1].sequence_number,
            next_from=rows[-1][0] + 1 if rows else from_message_id,
            done=done,
        )

    def events_page(self, topic_ids: list[int], after_seq: int, limit: int) -> ReplayPage:
        """The events for the topics in the next ``limit`` of their log entries after
        ``after_seq`` (entries never change: a page is exact whenever it is read)."""
        marks = ", ".join("?" * len(topic_ids))
        with self.storage.db.atomic():  # the applied seq that the last page covers
            applied_seq = self.applied_seq_now()
            rows = (
                self._conn()
                .execute(
                    f"SELECT seq, data FROM log WHERE seq > ? AND topic_id IN ({marks}) "
                    "ORDER BY seq LIMIT ?",
                    (after_seq, *topic_ids, limit),
                )
                .fetchall()
            )
        events = (event_of(cluster_pb2.Entry.FromString(data)) for _, data in rows)
        done = len(rows) < limit
        covered_seq = applied_seq if done else rows[-1][0]
        return ReplayPage(
            events=[event for event in events if event is not None],
            state_seq=covered_seq,
            covered_seq=covered_seq,
            next_from=covered_seq,
            done=done,
        )

    def applied_seq_now(self) -> int:
        """The last seq in the log as this connection sees it (a reader's view, not the
        writer's ``applied_seq``)."""
        return self._conn().execute("SELECT COALESCE(MAX(seq), 0) FROM log").fetchone()[0]

    def log_blobs(self, from_seq: int, limit: int, max_bytes: int | None = None) -> list[bytes]:
        """Serialized entries with seq >= from_seq, ascending (catch-up and resends): at
        most ``limit``, and no more than fit in ``max_bytes`` (see prefix_within)."""
        rows = self._conn().execute(_SELECT_LOG, (from_seq, limit))
        try:  # read row by row: a budget of long entries ends the reading early
            blobs = (bytes(data) for (data,) in rows)
            return list(blobs) if max_bytes is None else prefix_within(blobs, max_bytes)
        finally:
            rows.close()

    def epoch_at(self, seq: int) -> int | None:
        row = LogEntry.select(LogEntry.epoch).where(LogEntry.seq == seq).tuples().first()
        return row[0] if row else None

    def digest(self) -> str:
        """A hash of the board's tables; equal on replicas that applied the same log."""
        sha = hashlib.sha256()
        for model in BOARD_MODELS:
            sha.update(model._meta.table_name.encode() + b"\0")
            for row in model.select().order_by(*model._meta.get_primary_keys()).tuples():
                for value in row:
                    # Each value as its type, length and bytes. Not repr(row): it spells
                    # out every byte of a long text's stored message, some 10 times slower.
                    data = value if isinstance(value, bytes) else str(value).encode()
                    sha.update(type(value).__name__.encode() + len(data).to_bytes(8, "little"))
                    sha.update(data)
        return sha.hexdigest()


def _insert_rows(conn: sqlite3.Connection, insert: str, row: str, rows: list[tuple]) -> None:
    """INSERT ``rows``, in chunks of a power of two rows: few statements, and few texts
    of them for SQLite to prepare and for sqlite3's statement cache to keep."""
    start = 0
    while start < len(rows):
        size = min(MAX_ROWS_PER_INSERT, 1 << ((len(rows) - start).bit_length() - 1))
        values = [value for columns in rows[start : start + size] for value in columns]
        conn.execute(_multi_row(insert, row, size), values)
        start += size


@functools.cache
def _multi_row(insert: str, row: str, count: int) -> str:
    return insert + ", ".join([row] * count)


def _next_id(model) -> int:
    from peewee import fn

    return (model.select(fn.MAX(model.id)).scalar() or 0) + 1
