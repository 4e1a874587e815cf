"""Library subscriptions for the synchronous cluster tests, and what their events must show.

``Subscriptions`` runs ``Client.subscribe`` streams on an event loop in a background thread
and records every event; the assertions check a stream against a ``WriteLoad``.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Sequence

from load import WriteLoad

from mboard.api import razpravljalnica_pb2 as pb
from mboard.client import BoardError, Client

# Generous, for a loaded machine: a call's whole budget, retries and failovers included.
CLIENT_TIMEOUT = 30.0
RPC_TIMEOUT = 10.0


def seqs(events: Sequence[pb.MessageEvent]) -> list[int]:
    return [e.sequence_number for e in events]


def ids_of(events: Sequence[pb.MessageEvent]) -> set[int]:
    return {e.message.id for e in events}


def assert_strictly_increasing(events: Sequence[pb.MessageEvent]) -> None:
    numbers = seqs(events)
    wrong = [(i, a, b) for i, (a, b) in enumerate(itertools.pairwise(numbers)) if a >= b]
    assert not wrong, f"sequence numbers not strictly increasing at (index, seq, next): {wrong[:5]}"


def assert_every_post_once(events: Sequence[pb.MessageEvent], load: WriteLoad) -> None:
    """The stream holds each of the load's acknowledged posts exactly once, with its id, in
    seq order, and nothing nobody wrote."""
    assert {e.op for e in events} <= {pb.OP_POST}
    assert_strictly_increasing(events)
    load.verify([e.message for e in events])


class Subscriptions:
    """``count`` library subscriptions (``Client.subscribe``, each its own stream) to the same
    topics, on one event loop in a background thread: the cluster tests are synchronous."""

    def __init__(
        self, control: str, user_id: int, topic_ids: Sequence[int], count: int = 1
    ) -> None:
        self.control = control
        self.user_id = user_id
        self.topic_ids = list(topic_ids)
        self._events: list[list[pb.MessageEvent]] = [[] for _ in range(count)]
        self._moves: list[list[str]] = [[] for _ in range(count)]
        self.errors: list[BoardError] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._running = threading.Event()
        self._thread = threading.Thread(target=self._run, name="subscriptions")

    def __enter__(self) -> Subscriptions:
        self._thread.start()
        assert self._running.wait(RPC_TIMEOUT), "the subscriptions' loop did not start"
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(CLIENT_TIMEOUT)
            assert not self._thread.is_alive(), "the subscriptions did not stop"

    def events(self, index: int = 0) -> list[pb.MessageEvent]:
        with self._lock:
            return list(self._events[index])

    def all_events(self) -> list[list[pb.MessageEvent]]:
        with self._lock:
            return [list(events) for events in self._events]

    def moves(self, index: int = 0) -> list[str]:
        with self._lock:
            return list(self._moves[index])

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._running.set()
        async with Client(self.control, timeout=CLIENT_TIMEOUT) as client:
            tasks = [asyncio.create_task(self._follow(client, i)) for i in range(len(self._events))]
            await self._stop.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _follow(self, client: Client, index: int) -> None:
        def moved(note: str) -> None:
            with self._lock:
                self._moves[index].append(note)

        try:
            async for event in client.subscribe(self.user_id, self.topic_ids, on_move=moved):
                with self._lock:
                    self._events[index].append(event)
        except BoardError as error:
            with self._lock:
                self.errors.append(error)
