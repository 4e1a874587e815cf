"""The newest messages of every topic in memory, ready to join into GetMessages pages.

A page whose messages are all among the newest is answered from here on the event loop,
with no SQLite read: on a 2-core machine that is about a tenth of the tail's CPU per read.
``NodeCore`` feeds in every applied entry, in log order, once its transaction committed; a
page this cannot answer in full (older messages, a topic that saw no post since the node
started, a long run of deleted messages) goes to SQLite.

Plain code, no gRPC and no SQLite, like ``chain.py``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Iterable

from mboard.api import cluster_pb2

from .board import Kind, fragment, join_page

# What a message costs here beside its bytes: its id, list slots, the bytes object itself.
MESSAGE_OVERHEAD = 100
# A page that would skip more deleted messages than this goes to SQLite (a reader thread):
# the event loop must not walk long runs of them.
MAX_SKIPPED = 1000


class _Topic:
    """One topic's newest messages, ascending id: every message with id >= ``floor``."""

    __slots__ = ("ids", "fragments", "start", "floor")

    def __init__(self, floor: int) -> None:
        self.ids: list[int] = []
        self.fragments: list[bytes | None] = []  # None: deleted (or evicted)
        self.start = 0  # ids[:start] are evicted
        self.floor = floor

    def index(self, message_id: int) -> int:
        return bisect_left(self.ids, message_id, self.start)

    def evict_first(self) -> bytes | None:
        """Drop the oldest message; return its fragment."""
        # Never down: a message from before the floor (applied before a reset, heard of
        # after it) may be here, and those between it and the floor are not.
        self.floor = max(self.floor, self.ids[self.start] + 1)
        evicted, self.fragments[self.start] = self.fragments[self.start], None
        self.start += 1
        if self.start * 2 >= len(self.ids):  # amortised: each slot is moved about once
            del self.ids[: self.start], self.fragments[: self.start]
            self.start = 0
        return evicted


class RecentPages:
    """The newest messages of all topics (deleted ones included), within ``budget`` bytes.

    ``first_new_id`` is the next message id when it starts: older messages are not here.
    """

    def __init__(self, budget: int, first_new_id: int) -> None:
        self.budget = budget
        self.size = 0  # bytes counted against the budget
        self._first_new_id = first_new_id
        self._topics: dict[int, _Topic] = {}
        self._order: deque[int] = deque()  # the topic of each message here, oldest first

    def __len__(self) -> int:
        return len(self._order)

    def page(self, topic_id: int, from_message_id: int, limit: int) -> bytes | None:
        """The serialized GetMessagesResponse: up to ``limit`` live messages of the topic
        with id >= ``from_message_id``, or None if some of them may not be here."""
        topic = self._topics.get(topic_id)
        if topic is None or from_message_id < topic.floor:
            return None
        fragments = topic.fragments
        start = topic.index(from_message_id)
        end = start + limit + MAX_SKIPPED  # a page not found before it has too many deleted
        found: list[bytes] = []
        for index in range(start, min(end, len(fragments))):
            if fragments[index] is not None:
                found.append(fragments[index])
                if len(found) == limit:
                    break
        else:
            if end < len(fragments):
                return None
        return join_page(found)

    def on_applied(self, entries: Iterable[cluster_pb2.Entry]) -> None:
        """Take applied entries, in log order."""
        for entry in entries:
            kind = entry.kind
            if kind == Kind.POST:
                self._add(entry.message)
            elif kind in (Kind.LIKE, Kind.UPDATE):
                self._replace(entry.message, fragment(entry.message.SerializeToString()))
            elif kind == Kind.DELETE:
                self._replace(entry.message, None)
            elif kind == Kind.CREATE_TOPIC:  # every post to it will come here
                self._topics.setdefault(entry.topic.id, _Topic(floor=0))

    def _add(self, message) -> None:
        topic = self._topics.get(message.topic_id)
        if topic is None:  # a topic from before we started
            topic = self._topics[message.topic_id] = _Topic(self._first_new_id)
        new = fragment(message.SerializeToString())
        topic.ids.append(message.id)
        topic.fragments.append(new)
        self._order.append(message.topic_id)
        self.size += len(new) + MESSAGE_OVERHEAD
        while self.size > self.budget and self._order:
            evicted = self._topics[self._order.popleft()].evict_first()
            self.size -= len(evicted or b"") + MESSAGE_OVERHEAD

    def _replace(self, message, new: bytes | None) -> None:
        topic = self._topics.get(message.topic_id)
        if topic is None:
            return
        index = topic.index(message.id)
        if index < len(topic.ids) and topic.ids[index] == message.id:
            old = topic.fragments[index]
            topic.fragments[index] = new
            self.size += len(new or b"") - len(old or b"")
