"""A concurrent write load through ``mboard.client.Client`` that records every acknowledged write.

Cluster tests are synchronous (``harness.Cluster``), so the load runs its own event loop in a
background thread: ``writers`` tasks share one Client and post messages with unique texts
until ``stop()``, until ``max_writes`` posts were started, or until ``max_seconds`` passed::

    with WriteLoad(cluster.control_address, topic_id, user_id) as load:
        cluster.wait_for(lambda: load.ack_count() >= 100)
        cluster.kill("n1")
        ...
    load.verify(read_all_messages(cluster.board("n3"), topic_id))

An acknowledged write (the client got its Message back) must be on the board exactly once
with that id and text. A write that failed for good has an unknown outcome: it may be there,
but at most once.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import Counter
from dataclasses import dataclass

import grpc

from mboard.api import razpravljalnica_pb2 as pb
from mboard.api import razpravljalnica_pb2_grpc as pb_grpc
from mboard.client import BoardError, Client

READ_TIMEOUT = 5.0


@dataclass(frozen=True)
class Ack:
    """A write the cluster acknowledged."""

    request: pb.PostMessageRequest
    message: pb.Message
    sent_at: float  # time.monotonic() when the client started the write
    at: float  # time.monotonic() when the client got the answer


@dataclass(frozen=True)
class Failure:
    """A write that failed for good; it may or may not have been applied."""

    request: pb.PostMessageRequest
    code: grpc.StatusCode
    message: str


class WriteLoad:
    def __init__(
        self,
        control: str,
        topic_id: int,
        user_id: int,
        *,
        writers: int = 4,
        max_writes: int = 20_000,
        max_seconds: float = 90.0,
        pause: float = 0.005,
        client_timeout: float = 30.0,
        tag: str = "load",
    ) -> None:
        """``pause``: each writer's rest between writes, so the load leaves CPU to the nodes.
        ``client_timeout``: a write's overall budget, retries and failovers included."""
        self.control = control
        self.topic_id = topic_id
        self.user_id = user_id
        self.writers = writers
        self.max_writes = max_writes
        self.max_seconds = max_seconds
        self.pause = pause
        self.client_timeout = client_timeout
        self.tag = tag
        self._acks: list[Ack] = []
        self._failures: list[Failure] = []
        self._started = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # ---------------------------------------------------------------- running

    def start(self) -> WriteLoad:
        self._thread = threading.Thread(target=self._run, name=f"write-load-{self.tag}")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Start no new writes, wait for the ones in flight to finish, raise a load error."""
        self._stop.set()
        self.join()

    def join(self) -> None:
        """Wait until the load ends by itself (count or time bound) or was stopped."""
        if self._thread is not None:
            # In-flight writes give up after client_timeout at the latest.
            self._thread.join(self.max_seconds + self.client_timeout + 10)
            assert not self._thread.is_alive(), "the write load did not stop"
        if self._error is not None:
            raise AssertionError(f"the write load crashed: {self._error!r}") from self._error

    def __enter__(self) -> WriteLoad:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by stop()
            self._error = exc

    async def _main(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        numbers = itertools.count(1)
        async with Client(self.control, timeout=self.client_timeout) as client:
            await asyncio.gather(
                *(self._writer(client, numbers, deadline) for _ in range(self.writers))
            )

    async def _writer(self, client: Client, numbers: itertools.count, deadline: float) -> None:
        while not self._stop.is_set() and time.monotonic() < deadline:
            with self._lock:
                if self._started >= self.max_writes:
                    return
                self._started += 1
            request = pb.PostMessageRequest(
                topic_id=self.topic_id, user_id=self.user_id, text=f"{self.tag}-{next(numbers)}"
            )
            sent_at = time.monotonic()
            try:
                message = await client.post(request.topic_id, request.user_id, request.text)
            except BoardError as error:
                with self._lock:
                    self._failures.append(Failure(request, error.code, error.message))
            else:
                with self._lock:
                    self._acks.append(Ack(request, message, sent_at, time.monotonic()))
            await asyncio.sleep(self.pause)

    # ---------------------------------------------------------------- results

    @property
    def acks(self) -> list[Ack]:
        with self._lock:
            return list(self._acks)

    @property
    def failures(self) -> list[Failure]:
        with self._lock:
            return list(self._failures)

    def ack_count(self) -> int:
        with self._lock:
            return len(self._acks)

    def acked_since(self, since: float) -> int:
        """How many writes STARTED at or after ``since`` were acknowledged (so they went
        through whatever the cluster was at that moment, not in flight from before)."""
        return sum(1 for ack in self.acks if ack.sent_at >= since)

    def latest_ack(self) -> Ack | None:
        acks = self.acks
        return max(acks, key=lambda ack: ack.at) if acks else None

    def longest_gap(self, start: float, end: float) -> float:
        """The longest time without any acknowledgement, from the last ack before ``start``
        (or ``start`` itself) up to ``end``: how long writes stalled around ``start``."""
        times = sorted(ack.at for ack in self.acks)
        before = [t for t in times if t <= start]
        marks = [before[-1] if before else start, *(t for t in times if start < t <= end), end]
        return max(b - a for a, b in itertools.pairwise(marks))

    def verify(self, messages: list[pb.Message]) -> None:
        """Assert that ``messages`` (a topic's full content) holds every acknowledged write
        exactly once with its acknowledged id, nothing twice, and nothing never written."""
        assert not self._thread or not self._thread.is_alive(), "stop the load first"
        counts = Counter(message.text for message in messages)
        twice = sorted(text for text, count in counts.items() if count > 1)
        assert not twice, f"{len(twice)} writes applied more than once, e.g. {twice[:5]}"
        by_text = {message.text: message for message in messages}
        lost = [ack for ack in self._acks if ack.request.text not in by_text]
        assert not lost, (
            f"{len(lost)} of {len(self._acks)} acknowledged writes are missing, e.g. "
            f"{[(a.request.text, a.message.id) for a in lost[:5]]}"
        )
        moved = [
            (ack.request.text, ack.message.id, by_text[ack.request.text].id)
            for ack in self._acks
            if by_text[ack.request.text].id != ack.message.id
        ]
        assert not moved, f"acknowledged ids differ on the board (text, acked, found): {moved[:5]}"
        attempted = {ack.request.text for ack in self._acks}
        attempted.update(failure.request.text for failure in self._failures)
        ours = {text for text in counts if text.startswith(f"{self.tag}-")}
        assert ours <= attempted, f"writes on the board nobody made: {sorted(ours - attempted)[:5]}"


def read_all_messages(
    board: pb_grpc.MessageBoardStub, topic_id: int, page: int = 1000
) -> list[pb.Message]:
    """Every message of the topic, read page by page (GetMessages) from one node.

    Only an empty page ends the topic: a page of long texts stops short of ``page``
    messages to stay within gRPC's message limit."""
    messages: list[pb.Message] = []
    next_id = 0
    while True:
        request = pb.GetMessagesRequest(topic_id=topic_id, from_message_id=next_id, limit=page)
        batch = board.GetMessages(request, timeout=READ_TIMEOUT).messages
        if not batch:
            return messages
        messages.extend(batch)
        next_id = batch[-1].id + 1
