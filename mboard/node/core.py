"""A running node: ties the board, the protocol state and the replication links together.

Everything here runs on the event loop, except the functions handed to ``storage.submit``,
which run on the writer thread. The servicers in ``service.py`` only translate gRPC calls
into calls on ``NodeCore``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TypeVar

import grpc
from google.protobuf.message import Message as ProtoMessage

from mboard import grpc_util, metrics
from mboard.api import cluster_pb2
from mboard.config import NodeConfig

from .board import Board, BoardError, Outcome
from .chain import ChainState, CommitWaiters
from .pages import RecentPages
from .replication import Forwarder, RecentLog
from .storage import Storage, StorageFailed
from .subscriptions import SubscriptionHub

log = logging.getLogger(__name__)
T = TypeVar("T")
REPORT_INTERVAL = 0.5  # at most one failure / caught-up report per this many seconds
SAVE_COMMITTED_EVERY = 256  # seqs between saves of the commit point on the hot paths


class NodeCore:
    def __init__(self, config: NodeConfig, storage: Storage, board: Board) -> None:
        self.config = config
        self.node_id = config.id
        self.storage = storage
        self.board = board
        self.state = ChainState(config.id, board.applied_seq, board.saved_committed_seq)
        self.last_epoch = board.last_epoch  # epoch of the entry at applied_seq
        self.waiters = CommitWaiters("committed", config.write_timeout, _unavailable)
        # The same, for this node's applied seq.
        self.applied_waiters = CommitWaiters("applied", config.write_timeout, _unavailable)
        self.recent = RecentLog()
        self.pages = self._new_pages(board.next_message_id)
        self.forwarder = Forwarder(self)
        self.ack_events: set[asyncio.Event] = set()
        self.hub = SubscriptionHub()
        self._counted_commits = self.state.committed_seq
        self.truncations = 0  # started so far: a read that spans one may show what it dropped
        self.config_listeners: list[Callable[[], None]] = []
        self.control = None  # the ControlLink, set by the server once it exists
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._last_report: dict[tuple[str, str], float] = {}
        self._tasks: set[asyncio.Task] = set()
        self.stopping = False  # set on shutdown: broken links then mean nothing
        # ((truncations, the id after its topics), ListTopicsResponse): see list_topics
        self._topics_reply: tuple[tuple[int, int], bytes] | None = None

    def start(self) -> None:
        self.storage.start(asyncio.get_running_loop())
        self.forwarder.start()

    def begin_shutdown(self) -> None:
        """The node is stopping: calls that wait here, and new ones, end with UNAVAILABLE,
        which clients retry at another node (a write with the same x-request-id), rather
        than waiting until the server cancels them (CANCELLED, which they would not retry).
        """
        self.stopping = True
        error = self._shutting_down_error()
        self.waiters.fail(error)
        self.applied_waiters.fail(error)
        self.hub.close_all(f"{self.node_id} is shutting down")

    def _shutting_down_error(self) -> BoardError:
        return BoardError(
            grpc.StatusCode.UNAVAILABLE, f"{self.node_id} is shutting down; retry at the new chain"
        )

    async def stop(self) -> None:
        self.stopping = True
        await self.forwarder.stop()
        for task in list(self._tasks):
            task.cancel()
        for channel in self._channels.values():
            await channel.close()

    def channel(self, address: str) -> grpc.aio.Channel:
        if address not in self._channels:
            self._channels[address] = grpc_util.channel(address)
        return self._channels[address]

    # --------------------------------------------------------------- writes

    async def write(self, kind: str, request: ProtoMessage, request_id: str) -> ProtoMessage:
        """Run a client write at the head; answer once it is committed."""
        started = time.monotonic()
        try:
            self.require_head()
            try:
                outcome: Outcome = await self.storage.submit(
                    lambda: self._execute(kind, request, request_id), then=self._after_execute
                )
            except StorageFailed:  # nothing of it was stored: retrying is safe
                raise BoardError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"{self.node_id} cannot store writes now; retry with the same x-request-id",
                ) from None
            if not self.state.position.is_head:  # lost it meanwhile: see apply_config
                raise self._no_longer_head_error()
            await self.wait_committed(outcome.wait_seq, "retry it with the same x-request-id")
            if outcome.error:
                raise outcome.error
        except BoardError as error:
            metrics.HOT.writes[error.code.name] += 1
            raise
        metrics.HOT.writes["OK"] += 1
        metrics.HOT.observe_commit_latency(time.monotonic() - started)
        return outcome.result

    async def wait_committed(self, seq: int, advice: str = "try again") -> None:
        """Wait until ``seq`` is committed, or answer UNAVAILABLE after write_timeout."""
        await self._wait(self.waiters, seq, self.state.committed_seq, advice)

    async def wait_applied(self, seq: int, advice: str = "try again") -> None:
        """Wait until this node applied ``seq``, or answer UNAVAILABLE after write_timeout."""
        await self._wait(self.applied_waiters, seq, self.state.applied_seq, advice)

    async def _wait(self, waiters: CommitWaiters, seq: int, reached_seq: int, advice: str) -> None:
        if seq <= reached_seq:
            return
        if self.stopping:  # begin_shutdown failed those waiting before
            raise self._shutting_down_error()
        await waiters.wait(seq, reached_seq, advice)

    def _execute(self, kind: str, request: ProtoMessage, request_id: str) -> Outcome:
        # Writer thread. The role may have changed since the handler checked it.
        position = self.state.position
        if not position.is_head:
            return Outcome(wait_seq=0, error=self._not_head_error())
        self.board.save_committed(self.state.committed_seq, SAVE_COMMITTED_EVERY)
        return self.board.execute(kind, request, request_id, position.epoch)

    def _after_execute(self, outcome: Outcome) -> None:
        if outcome.entry:
            self._on_applied([(outcome.entry, outcome.blob)])

    def require_head(self) -> None:
        if self.stopping:
            raise self._shutting_down_error()
        if not self.state.position.is_head:
            raise self._not_head_error()

    def _no_longer_head_error(self) -> BoardError:
        return BoardError(
            grpc.StatusCode.UNAVAILABLE,
            f"{self.node_id} is no longer the head; retry with the same x-request-id",
        )

    def _not_head_error(self) -> BoardError:
        head = self.state.config.chain[0] if self.state.config.chain else None
        where = f"the head is {head.node_id} at {head.address}" if head else "there is no chain"
        return BoardError(
            grpc.StatusCode.FAILED_PRECONDITION, f"{self.node_id} is not the head; {where}"
        )

    # ----------------------------------------------------- replication input

    def apply_batch(self, blobs: list[bytes]) -> asyncio.Future:
        """Apply entries received from the predecessor (group-committed by the writer)."""

        def apply():
            applied = self.board.apply_blobs(blobs)
            # What the tail applies is committed (once it holds a lease, see ChainState).
            state = self.state
            commits = state.position.is_tail and not state.awaiting_lease
            committed = self.board.applied_seq if commits else state.committed_seq
            self.board.save_committed(committed, SAVE_COMMITTED_EVERY)
            return applied

        return self.storage.submit(apply, then=self._on_applied)

    def truncate(self, to_seq: int) -> asyncio.Future:
        """Drop uncommitted entries above ``to_seq`` (divergence repair).

        The loop forgets them at once, not when the writer is done: rebuilding the board
        takes a while, and meanwhile no ack may count them and no link forward them.
        """
        board = self.board
        self.truncations += 1
        self.state.begin_truncation(to_seq)
        self.recent.clear()
        self.forwarder.relink()  # a successor may hold them: the new handshake finds out

        def cut() -> tuple[int, int, int]:
            board.truncate(to_seq)
            # Taken here: by the time ``done`` runs, the writer may have applied more.
            return board.applied_seq, board.last_epoch, board.next_message_id

        def done(after: tuple[int, int, int]) -> None:
            applied_seq, self.last_epoch, next_message_id = after
            self.recent.clear()
            self.pages = self._new_pages(next_message_id)
            self.hub.close_all(self._dropped_entries())
            self.state.end_truncation(applied_seq)
            self._want_ack()
            # Reads waiting for the loop to hear of what SQLite showed them saw those too.
            self.applied_waiters.fail(self._dropped_entries_error())

        return self.storage.submit(cut, then=done)

    def _dropped_entries(self) -> str:
        return f"{self.node_id} dropped entries the chain never committed"

    def _dropped_entries_error(self) -> BoardError:
        return BoardError(grpc.StatusCode.UNAVAILABLE, f"{self._dropped_entries()}; try again")

    def _new_pages(self, first_new_id: int) -> RecentPages:
        return RecentPages(int(self.config.page_cache_mb * 2**20), first_new_id)

    async def drain_writes(self) -> None:
        """Wait until every write submitted so far is applied."""
        await self.storage.submit(lambda: None)

    def _on_applied(self, applied: list) -> None:
        if not applied:
            return
        for entry, blob in applied:
            self.recent.append(entry.seq, blob)
        if self.state.position.is_tail:  # only the tail serves pages (see apply_config)
            self.pages.on_applied(entry for entry, _ in applied)
        self.hub.on_applied(entry for entry, _ in applied)
        last = applied[-1][0]
        self.last_epoch = last.epoch
        self.applied_waiters.advance(last.seq)
        if self.state.note_applied(last.seq):
            self._on_commit()
        self._confirm_promotion()
        self.forwarder.wake()
        self._want_ack()

    def grant_lease(self, epoch: int, until: float) -> None:
        waited = self.state.awaiting_lease
        if self.state.grant_lease(epoch, until):
            self._on_commit()
        if waited and not self.state.awaiting_lease:
            log.info("epoch %d: read lease granted; committing as tail", epoch)

    def on_predecessor_word(self, sender_epoch: int, committed_seq: int) -> None:
        if self.state.note_predecessor(sender_epoch, committed_seq):
            self._on_commit()
        self._confirm_promotion()

    def _confirm_promotion(self) -> None:
        # Until the control plane hears it, a chain this node would head must wait.
        if self.state.newly_confirmed() and self.control:
            self.control.beat_soon()

    def on_successor_ack(self, ack: cluster_pb2.Ack, sent_seq: int) -> None:
        if self.state.note_successor_ack(ack, sent_seq):
            self._on_commit()
        self.report_caught_up()

    def _on_commit(self) -> None:
        committed_seq = self.state.committed_seq
        # A truncation may take commits back (begin_truncation): count each seq once.
        if committed_seq > self._counted_commits:
            metrics.HOT.commits += committed_seq - self._counted_commits
            self._counted_commits = committed_seq
        self.waiters.advance(committed_seq)
        self.hub.on_commit(min(committed_seq, self.state.applied_seq))
        self._want_ack()

    def _want_ack(self) -> None:
        for event in self.ack_events:
            event.set()

    # ---------------------------------------------------------------- reads

    async def read(self, fn: Callable[[], T]) -> T:
        """Run a read on this node if it can prove it is up to date."""
        self.require_reads()
        return await self._read_sqlite(fn)

    async def _read_sqlite(self, fn: Callable[[], T]) -> T:
        """``fn()`` on a reader thread; returns once the loop has heard of all it saw.

        SQLite may show entries whose commit the loop has not heard of yet. Until it has, a
        page from memory (``pages``) could show less than this read did: a read going back
        in time.
        """
        board = self.board
        truncations = self.truncations
        result, seen_seq = await self.storage.read(lambda: (fn(), board.applied_seq_now()))
        await self.wait_applied(seen_seq)
        # A truncation that ran meanwhile may have dropped what the read saw, and once the
        # same seqs are applied again, the wait above cannot tell.
        if self.truncations != truncations:
            raise self._dropped_entries_error()
        return result

    def require_reads(self) -> None:
        if self.stopping:
            raise self._shutting_down_error()
        reason = self.state.refuse_read(time.monotonic())
        if reason:
            tail = self.state.config.chain[-1] if self.state.config.chain else None
            if tail is None:
                where = ""
            elif tail.node_id == self.node_id:  # the tail itself, for now without a lease
                where = "; try again shortly"
            else:
                where = f"; the tail is {tail.node_id} at {tail.address}"
            raise BoardError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{self.node_id} cannot serve reads: {reason}{where}",
            )

    async def list_topics(self) -> bytes:
        """Every topic (serialized), read once until a topic is created: many readers of a
        big board each built the same reply, and kept the event loop from its heartbeats.

        Topics get dense ids and are never deleted, so a reply is whole while the writer's
        next topic id is the one after its topics. (The writer counts a topic before its
        batch commits: until then the reply is read again each time.) A truncation may
        drop topics and reuse their ids.
        """
        self.require_reads()
        current = (self.truncations, self.board.next_topic_id)
        if self._topics_reply is None or self._topics_reply[0] != current:
            truncations = self.truncations
            next_id, reply = await self._read_sqlite(self.board.topics_reply)
            self._topics_reply = (truncations, next_id), reply
        return self._topics_reply[1]

    async def get_messages(self, topic_id: int, from_message_id: int, limit: int) -> bytes:
        """A page of a topic (serialized), from memory when it holds all of it."""
        self.require_reads()
        bounds = self.board.page_bounds(topic_id, from_message_id, limit)
        page = self.pages.page(*bounds)
        if page is not None:
            return page
        return await self._read_sqlite(lambda: self.board.get_messages(*bounds))

    # --------------------------------------------------------------- config

    def apply_config(self, config: cluster_pb2.ChainConfig) -> None:
        committed_before = self.state.committed_seq
        change = self.state.adopt(config)
        if change is None:
            return
        old, new = change
        metrics.RECONFIGURATIONS.inc()
        chain = ", ".join(n.node_id for n in config.chain)
        learners = ", ".join(n.node_id for n in config.learners)
        log.info(
            "epoch %d: role %s -> %s (chain [%s] learners [%s])",
            config.epoch, old.role, new.role, chain, learners,
        )  # fmt: skip
        if old.is_head and not new.is_head:
            # The chain moved on without us: what we took as head may never be committed,
            # and a later commit point (say, as a learner) is about the new head's entries
            # at those seqs. The clients retry at the new head with the same request id.
            self.waiters.fail(self._no_longer_head_error())
        if old.in_chain and not new.in_chain:
            self.hub.close_all(f"{self.node_id} left the chain")
        if new.is_tail != old.is_tail:
            # Only a tail keeps pages in memory: the head and the middle would spend a
            # busy chain's time and memory on them for nothing. A new tail starts with no
            # messages in memory; the writer may be ahead of the loop, never behind it, so
            # older ones all come from SQLite (and a truncation under way resets it again).
            self.pages = self._new_pages(self.board.next_message_id)
        if new.successor != old.successor:
            self.forwarder.relink()
        else:
            self.forwarder.wake()
        if self.state.committed_seq > committed_before:
            self._on_commit()
        self._want_ack()
        self.report_caught_up()
        if self.state.awaiting_lease:
            log.info(
                "epoch %d: new tail; committing once the control plane grants a read lease "
                "(so that no node it replaced can still serve reads)",
                config.epoch,
            )
            if self.control:
                self.control.beat_soon()
        for listener in self.config_listeners:
            listener()

    # ------------------------------------------------- reports to the control

    def report_failure(self, suspect_id: str) -> None:
        if self.control and self._may_report("failure", suspect_id):
            self.spawn(self.control.report_failure(self.state.position.epoch, suspect_id))

    def report_caught_up(self) -> None:
        """Ask the control plane to promote our learner, if it has caught up."""
        if not self.state.learner_caught_up():
            return
        successor = self.state.position.successor
        if self.control and self._may_report("caught_up", successor.node_id):
            self.spawn(
                self.control.report_caught_up(
                    self.state.position.epoch, successor.node_id, self.state.successor_applied_seq
                )
            )

    def _may_report(self, what: str, about: str) -> bool:
        now = time.monotonic()
        if now - self._last_report.get((what, about), 0.0) < REPORT_INTERVAL:
            return False
        self._last_report[(what, about)] = now
        return True

    def spawn(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def gauges(self) -> dict:
        """Live values for the Prometheus gauges."""
        state = self.state
        return {
            metrics.APPLIED_SEQ: lambda: state.applied_seq,
            metrics.COMMITTED_SEQ: lambda: state.committed_seq,
            metrics.REPLICATION_LAG: lambda: max(0, state.applied_seq - state.committed_seq),
            metrics.SUBSCRIBERS: lambda: len(self.hub),
            metrics.PAGE_CACHE_BYTES: lambda: self.pages.size,
            metrics.EPOCH: lambda: state.position.epoch,
        }

    def status(self) -> cluster_pb2.NodeStatus:
        return cluster_pb2.NodeStatus(
            node_id=self.node_id,
            address=self.config.address,
            role=self.state.position.role,
            epoch=self.state.position.epoch,
            applied_seq=self.state.applied_seq,
            committed_seq=self.state.committed_seq,
            serving_reads=self.state.refuse_read(time.monotonic()) is None,
            subscribers=len(self.hub),
        )


def _unavailable(why: str) -> BoardError:
    return BoardError(grpc.StatusCode.UNAVAILABLE, why)
