"""One node's SQLite database: peewee models, a single writer thread, pooled readers.

The shape follows datasette's ``database.py``: every write is a function handed to ONE
writer thread through a queue; the thread drains whatever has queued up and runs it in
ONE transaction (group commit: one fsync for the batch), then resolves each caller's
asyncio future in submission order. Reads run the same way on a few reader threads, each
with its own connection (WAL lets them proceed while the writer writes), minus the
transaction. The event loop never touches SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from peewee import (
    BigIntegerField,
    BlobField,
    BooleanField,
    CompositeKey,
    ForeignKeyField,
    IntegerField,
    Model,
    SqliteDatabase,
    TextField,
)

from mboard.storage_errors import StorageFailed, storage_failure

log = logging.getLogger(__name__)

T = TypeVar("T")
# A job the writer or a reader ran: (its future, result, exception, after-commit callback).
FinishedJob = tuple[asyncio.Future, Any, BaseException | None, Callable[[Any], object] | None]
# Enough to amortise one fsync over many writes, small enough to keep latency low.
MAX_BATCH_JOBS = 512


class BaseModel(Model):
    pass


class User(BaseModel):
    id = BigIntegerField(primary_key=True)
    name = TextField()
    name_key = TextField(unique=True)  # casefolded name: uniqueness ignores case

    class Meta:
        table_name = "users"


class Topic(BaseModel):
    id = BigIntegerField(primary_key=True)
    name = TextField()
    name_key = TextField(unique=True)

    class Meta:
        table_name = "topics"


class Message(BaseModel):
    id = BigIntegerField(primary_key=True)
    # No index of their own: (topic, id) below serves topic_id, and no query looks for a
    # user's messages. Each index is one more b-tree to update on every post.
    topic = ForeignKeyField(Topic, column_name="topic_id", index=False)
    user = ForeignKeyField(User, column_name="user_id", index=False)
    text = TextField()
    created_at_us = BigIntegerField()
    post_seq = BigIntegerField()  # seq of the POST entry: replayed events carry it
    likes = IntegerField(default=0)
    # Deleted messages stay as tombstones so ids are never reused.
    deleted = BooleanField(default=False)
    # The message as it is now, serialized (pb.Message): a page of GetMessages is these
    # joined, with no protobuf work on the tail's hottest read.
    wire = BlobField()

    class Meta:
        table_name = "messages"
        indexes = ((("topic", "id"), False),)


class Like(BaseModel):
    user = ForeignKeyField(User, column_name="user_id", index=False)  # the key's first column
    message = ForeignKeyField(Message, column_name="message_id")

    class Meta:
        table_name = "likes"
        primary_key = CompositeKey("user", "message")


class LogEntry(BaseModel):
    seq = BigIntegerField(primary_key=True)
    epoch = BigIntegerField()
    topic_id = BigIntegerField(null=True)  # lets subscription replay filter by topic
    request_id = TextField(null=True)  # retries are found in memory (board.RequestWindow)
    data = BlobField()  # the serialized cluster_pb2.Entry, forwarded as it is

    class Meta:
        table_name = "log"


class State(BaseModel):
    key = TextField(primary_key=True)
    value = BigIntegerField()

    class Meta:
        table_name = "state"


MODELS = [User, Topic, Message, Like, LogEntry, State]
BOARD_MODELS = [User, Topic, Message, Like]


class Storage:
    """The database file plus the writer thread and reader pool that use it.

    Models are bound to this database: one Storage per process at a time.
    """

    def __init__(self, path: Path, durability: str = "full", readers: int = 2) -> None:
        self.path = path
        self.db = SqliteDatabase(
            str(path),
            pragmas={
                "journal_mode": "wal",
                "foreign_keys": 1,
                "synchronous": 2 if durability == "full" else 1,
                "busy_timeout": 5000,
                "cache_size": -32_000,
            },
        )
        self.db.bind(MODELS)
        with self.db.connection_context():
            self.db.create_tables(MODELS)
        self._writes: queue.SimpleQueue = queue.SimpleQueue()
        self._reads: queue.SimpleQueue = queue.SimpleQueue()
        self._reader_count = readers
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []
        # Called in every transaction (writer batches and run_sync) before it commits, so
        # whoever holds rows back to insert them together can do so, and after it rolled
        # back, so whoever keeps state in memory beside the database can reload it.
        self.before_commit: Callable[[], None] | None = None
        self.after_rollback: Callable[[], None] | None = None
        # Set when a write batch failed because the file cannot be written (a full disk):
        # from then on the writer runs nothing, every job fails with it, and
        # ``on_failure(failure)`` is called once, on the event loop. Only ``retry`` may
        # clear it again.
        self.failure: StorageFailed | None = None
        self.on_failure: Callable[[StorageFailed], None] | None = None
        self._retry_asked = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        workers = [("sqlite-writer", self._writes, True)] + [
            (f"sqlite-reader-{i}", self._reads, False) for i in range(self._reader_count)
        ]
        for name, jobs, in_transaction in workers:
            thread = threading.Thread(
                target=self._work, args=(jobs, in_transaction), name=name, daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def submit(
        self, fn: Callable[[], T], then: Callable[[T], object] | None = None
    ) -> asyncio.Future[T]:
        """Run ``fn()`` on the writer thread inside a batch transaction.

        The future resolves on the event loop after the transaction commits. Futures resolve
        in submission order, so done-callbacks added at once see the commits in order.
        ``then(result)`` runs on the loop as soon as the batch committed, before any caller
        resumes, and also when the caller stopped waiting: what the job wrote is stored all
        the same, and whoever keeps state beside the database must hear of it.
        """
        future = self._loop.create_future()
        self._writes.put((fn, future, then))
        return future

    def retry(self, fn: Callable[[], object]) -> asyncio.Future:
        """After a failure: run ``fn()``, a small write, in the writer's next batch all the
        same. If that batch commits, the disk has room again: ``failure`` is cleared and
        the writer runs jobs as before. If not, the future fails with the failure, quietly.

        Only for a node whose database is the source of what it applies (the chain's last
        member, alone): one that applies what others send must not skip a failed batch.
        """
        self._retry_asked = True
        return self.submit(fn)

    def read(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Run ``fn()`` on a reader thread, with that thread's own connection."""
        future = self._loop.create_future()
        self._reads.put((fn, future, None))
        return future

    def run_sync(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` in a transaction on the calling thread (before ``start``, or tests)."""
        with self.db.connection_context(), self._transaction():
            return fn()

    def connection(self) -> sqlite3.Connection:
        """The calling thread's raw connection, for the few hot statements."""
        return self.db.connection()

    def _work(self, jobs: queue.SimpleQueue, in_transaction: bool) -> None:
        """Drain ``jobs`` in batches; hand each batch's outcomes to the loop in one call.

        One wake-up of the event loop per batch instead of per job is what makes many small
        reads and writes cheap. The writer runs a batch in ONE transaction (group commit).
        """
        self.db.connect(reuse_if_open=True)
        while True:
            batch = [jobs.get()]
            while batch[-1] is not None and len(batch) < MAX_BATCH_JOBS:
                try:
                    batch.append(jobs.get_nowait())
                except queue.Empty:
                    break
            stop = batch[-1] is None
            batch = [job for job in batch if job is not None]
            outcomes = self._run_transaction(batch) if in_transaction else _run_each(batch)
            self._loop.call_soon_threadsafe(_resolve, outcomes)
            if stop:
                break
        self.db.close()

    def _run_transaction(self, batch: list) -> list:
        retrying, self._retry_asked = self._retry_asked, False
        if self.failure and not retrying:  # a node must not skip what it applies
            return [(future, None, self.failure, None) for _, future, _ in batch]
        outcomes: list[FinishedJob] = []
        try:
            with self._transaction():
                for fn, future, then in batch:
                    outcomes.append((future, fn(), None, then))
        except Exception as exc:  # handed to every caller of the batch
            error = self._failed(exc)
            return [(future, None, error, None) for _, future, _ in batch]
        if self.failure:
            log.info("%s can be written again", self.path)
            self.failure = None
        return outcomes

    def _failed(self, exc: Exception) -> Exception:
        """What the callers of a failed batch get; a storage failure is kept and reported."""
        failure = storage_failure(exc, self.path)
        if failure is None:
            log.exception("write batch failed and was rolled back")
            return exc
        if self.failure:  # a retry that found no room yet: said before
            return self.failure
        self.failure = failure
        log.error("%s", failure)
        if self.on_failure:
            self._loop.call_soon_threadsafe(self.on_failure, self.failure)
        return self.failure

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One transaction, with the ``before_commit`` and ``after_rollback`` hooks."""
        try:
            with self.db.atomic():
                yield
                if self.before_commit:
                    self.before_commit()
        except Exception:
            if self.after_rollback:
                self.after_rollback()
            raise

    def close(self) -> None:
        if self._threads:
            self._writes.put(None)
            for _ in range(self._reader_count):
                self._reads.put(None)
            for thread in self._threads:
                thread.join(timeout=10)
        if not self.db.is_closed():
            self.db.close()


def _run_each(batch: list) -> list[FinishedJob]:
    outcomes = []
    for fn, future, then in batch:
        try:
            outcomes.append((future, fn(), None, then))
        except Exception as exc:  # goes to that caller only
            outcomes.append((future, None, exc, None))
    return outcomes


def _resolve(outcomes: list[FinishedJob]) -> None:
    for _, result, exc, then in outcomes:
        if then is not None and exc is None:
            try:
                then(result)
            except Exception:  # a bug there must not keep the other callers waiting
                log.exception("after-commit callback failed")
    for future, result, exc, _ in outcomes:
        if future.done():  # the caller gave up (cancelled)
            continue
        if exc is not None:
            future.set_exception(exc)
            if isinstance(exc, StorageFailed):
                # Logged once, by the writer (the node stops, or as the chain's last member
                # retries): a job nobody awaits any more (the link that handed it in ended)
                # need not log it again.
                future.exception()
        else:
            future.set_result(result)
