"""The replication stream between neighbours: gRPC plumbing around ``chain.py``.

The predecessor opens one long-lived bidirectional stream to its successor (``Forwarder``).
Entries go down in batches as soon as they are applied, many in flight at once; cumulative
acks come up on the same stream. The receiving side (``receive``) applies each batch
through the storage writer, which group-commits whatever has arrived.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from functools import partial
from typing import TYPE_CHECKING, NoReturn

import grpc

from mboard.api import cluster_pb2, cluster_pb2_grpc

from .board import prefix_within
from .chain import Peer, plan_resend, refuse_handshake, send_pause

if TYPE_CHECKING:
    from .core import NodeCore

log = logging.getLogger(__name__)

BATCH_ENTRIES = 500  # entries per stream message: big enough to amortise, small enough to pipeline
BATCH_BYTES = 2**20  # and bytes: a quarter of gRPC's default message limit (prefix_within)
MAX_PENDING_APPLIES = 32  # batches handed to the writer but not yet applied, per inbound link
RETRY_DELAY = 0.05


class RecentLog:
    """The newest entries in memory, so forwarding rarely reads the log table.

    Bounded in bytes, not entries: 100,000 entries of long texts would be over a gigabyte.
    """

    def __init__(self, max_bytes: int = 16 * 2**20) -> None:
        self.max_bytes = max_bytes
        self._blobs: deque[bytes] = deque()
        self._bytes = 0  # of the blobs held
        self._last_seq = 0

    def __len__(self) -> int:
        return len(self._blobs)

    def append(self, seq: int, blob: bytes) -> None:
        if seq != self._last_seq + 1:
            self.clear()
        self._blobs.append(blob)
        self._bytes += len(blob)
        self._last_seq = seq
        while self._bytes > self.max_bytes:
            self._bytes -= len(self._blobs.popleft())

    def clear(self) -> None:
        self._blobs.clear()
        self._bytes = 0
        self._last_seq = 0

    def get(self, from_seq: int, limit: int) -> list[bytes] | None:
        """Entries from ``from_seq`` on, or None if they are no longer (or not yet) here."""
        first_seq = self._last_seq - len(self._blobs) + 1
        if not self._blobs or from_seq < first_seq or from_seq > self._last_seq:
            return None
        start = from_seq - first_seq
        return [self._blobs[i] for i in range(start, min(start + limit, len(self._blobs)))]


class LinkRefused(Exception):
    pass


class Forwarder:
    """Keeps the stream to the current successor and pushes entries down it."""

    def __init__(self, core: NodeCore) -> None:
        self.core = core
        self._wake = asyncio.Event()
        self._relink = asyncio.Event()
        self._task: asyncio.Task | None = None
        # The last entry of our log the successor can hold (see ChainState.note_successor_ack).
        self._sent_seq = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="forwarder")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def wake(self) -> None:
        """New entries, a new commit point or a new epoch: send what there is."""
        self._wake.set()

    def relink(self) -> None:
        """The successor or our log changed: drop the current stream and open a new one."""
        self._sent_seq = 0  # what acks still arrive on the old stream say counts no more
        self._relink.set()
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._relink.clear()
            successor = self.core.state.position.successor
            if successor is None:
                await self._wait_wake()
                continue
            try:
                await self._stream_to(successor)
            except asyncio.CancelledError:
                raise
            except LinkRefused as exc:
                log.debug("link to %s refused: %s", successor.node_id, exc)
                await asyncio.sleep(RETRY_DELAY)
            except grpc.aio.AioRpcError as exc:
                if not self._relink.is_set():
                    log.info(
                        "link to %s broke: %s %s", successor.node_id, exc.code().name, exc.details()
                    )
                    self.core.report_failure(successor.node_id)
                    await asyncio.sleep(RETRY_DELAY)
            except Exception:
                log.exception("link to %s failed", successor.node_id)
                await asyncio.sleep(RETRY_DELAY)

    async def _wait_wake(self) -> None:
        await self._wake.wait()
        self._wake.clear()

    async def _stream_to(self, successor: Peer) -> None:
        core = self.core
        epoch = core.state.position.epoch
        stub = cluster_pb2_grpc.NodeStub(core.channel(successor.address))
        call = stub.Replicate()
        try:
            handshake = cluster_pb2.Handshake(
                epoch=epoch, sender_id=core.node_id, last_seq=core.state.applied_seq,
                committed_seq=core.state.committed_seq,
            )  # fmt: skip
            await call.write(cluster_pb2.ReplicateRequest(handshake=handshake))
            response = await asyncio.wait_for(call.read(), timeout=5)
            if response is grpc.aio.EOF or not response.reply.accepted:
                raise LinkRefused(response.reply.reason if response is not grpc.aio.EOF else "EOF")
            reply = response.reply
            my_epoch_at = await core.storage.read(lambda: core.board.epoch_at(reply.last_seq))
            plan = plan_resend(reply, core.state.applied_seq, my_epoch_at)
            if plan.truncate_to is not None:
                log.warning(
                    "%s holds entries the chain never committed (last seq %d epoch %d): "
                    "truncating it to %d",
                    successor.node_id, reply.last_seq, reply.last_epoch, plan.truncate_to,
                )  # fmt: skip
                await call.write(
                    cluster_pb2.ReplicateRequest(
                        truncate=cluster_pb2.Truncate(to_seq=plan.truncate_to)
                    )
                )
            log.info(
                "streaming to %s from seq %d (epoch %d)", successor.node_id, plan.next_seq, epoch
            )
            self._sent_seq = plan.next_seq - 1  # where our logs are alike
            acks = asyncio.create_task(self._read_acks(call))
            acks.add_done_callback(lambda _: self._wake.set())  # the send loop must notice
            try:
                await self._send_loop(call, plan.next_seq, acks)
            finally:
                acks.cancel()
        finally:
            call.cancel()

    async def _read_acks(self, call) -> None:
        while True:
            response = await call.read()
            if response is grpc.aio.EOF:
                return
            self.core.on_successor_ack(response.ack, self._sent_seq)

    async def _send_loop(self, call, next_seq: int, acks: asyncio.Task) -> None:
        core = self.core
        sent_epoch = -1
        while not self._relink.is_set():
            if acks.done():
                await _ended(acks)
            state = core.state
            blobs: list[bytes] = []
            full = False
            if next_seq <= state.applied_seq:
                # Never past our applied seq: while a truncation runs, SQLite still shows
                # the entries it drops.
                count = min(BATCH_ENTRIES, state.applied_seq - next_seq + 1)
                blobs = core.recent.get(next_seq, count)
                if blobs is not None:
                    blobs = prefix_within(blobs, BATCH_BYTES)
                else:  # catching a successor up from older history (within the bytes too)
                    read = partial(core.board.log_blobs, next_seq, count, BATCH_BYTES)
                    blobs = await core.storage.read(read)
                    if self._relink.is_set():  # our log may have changed meanwhile
                        break
                full = len(blobs) < count or len(blobs) == BATCH_ENTRIES  # more may wait
            epoch = state.position.epoch
            # The commit point rides along with entries; a new epoch is announced at once
            # (a new tail waits for it before serving reads).
            if blobs or epoch != sent_epoch:
                batch = cluster_pb2.EntryBatch(
                    entries=blobs, committed_seq=state.committed_seq, sender_epoch=epoch
                )
                next_seq += len(blobs)
                self._sent_seq = next_seq - 1  # before the write: its ack may come first
                try:
                    await call.write(cluster_pb2.ReplicateRequest(batch=batch))
                except asyncio.InvalidStateError:  # the successor ended the stream meanwhile
                    await _ended(acks)
                sent_epoch = epoch
                pause = send_pause(len(blobs), full, next_seq - 1 - state.committed_seq)
                if pause:
                    await asyncio.sleep(pause)
                continue
            await self._wait_wake()


async def _ended(acks: asyncio.Task) -> NoReturn:
    """Raise why a link's stream ended: its error, or LinkRefused if the successor closed it."""
    await acks  # the stream's error, if any
    raise LinkRefused("successor closed the stream")


async def receive(core: NodeCore, context: grpc.aio.ServicerContext) -> None:
    """Serve one inbound replication stream from a predecessor."""
    first = await context.read()
    if first is grpc.aio.EOF or first.WhichOneof("body") != "handshake":
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, "the stream must open with a handshake"
        )
    handshake = first.handshake
    reason = refuse_handshake(core.state.position, handshake)
    if reason:
        reply = cluster_pb2.HandshakeReply(accepted=False, reason=reason)
        await context.write(cluster_pb2.ReplicateResponse(reply=reply))
        return
    sender = handshake.sender_id
    await core.drain_writes()  # so the reply states where this log really ends
    reply = cluster_pb2.HandshakeReply(
        accepted=True, last_seq=core.state.applied_seq, last_epoch=core.last_epoch,
        committed_seq=core.state.committed_seq,
    )  # fmt: skip
    await context.write(cluster_pb2.ReplicateResponse(reply=reply))
    log.info("accepted stream from %s at seq %d", sender, core.state.applied_seq)
    # The first ack goes once the sender's first message is in: if it is a truncate, an
    # ack before it would count entries we are about to drop.
    acks = asyncio.Event()
    core.ack_events.add(acks)
    pump = asyncio.create_task(_pump_acks(core, context, sender, acks))
    # (future, last seq it carries): applies handed to the writer, oldest first.
    pending: deque[tuple[asyncio.Future, int]] = deque()
    try:
        while True:
            request = await context.read()
            if request is grpc.aio.EOF:
                return
            predecessor = core.state.position.predecessor
            if predecessor is None or predecessor.node_id != sender:
                await context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"{sender} is no longer the predecessor (epoch {core.state.position.epoch})",
                )
            body = request.WhichOneof("body")
            if body == "batch":
                batch = request.batch
                if batch.entries:
                    last_seq = cluster_pb2.Entry.FromString(batch.entries[-1]).seq
                    pending.append((core.apply_batch(list(batch.entries)), last_seq))
                core.on_predecessor_word(batch.sender_epoch, batch.committed_seq)
            elif body == "truncate":
                pending.append((core.truncate(request.truncate.to_seq), 0))
            acks.set()
            while pending and (pending[0][0].done() or len(pending) > MAX_PENDING_APPLIES):
                future, last_seq = pending.popleft()
                await future  # raises if the apply failed: the sender re-handshakes
                # The writer's own count: core.state hears of a finished apply from the
                # future's done-callback, which may not have run yet (a false gap).
                if core.board.applied_seq < last_seq:
                    await context.abort(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"gap in the log after seq {core.board.applied_seq}: handshake again",
                    )
            if pump.done():
                pump.result()
    finally:
        core.ack_events.discard(acks)
        pump.cancel()
        # Our predecessor's stream broke: if it died, say so now rather than leave it to
        # missed heartbeats (the failure timeout). A live one answers the control's probe.
        predecessor = core.state.position.predecessor
        healthy = not core.stopping and core.storage.failure is None  # else it is our fault
        if predecessor is not None and predecessor.node_id == sender and healthy:
            core.report_failure(sender)


async def _pump_acks(core: NodeCore, context, sender: str, wanted: asyncio.Event) -> None:
    """Send the latest ack whenever it says something new; many changes make one ack.

    Only while ``sender`` is still our predecessor: after that our commit point is about
    another log (say, ours as the new head), and a former head that hears it would count
    its own never-forwarded entries as committed and acknowledge them.
    """
    last = None
    while True:
        await wanted.wait()
        wanted.clear()
        predecessor = core.state.position.predecessor
        if predecessor is None or predecessor.node_id != sender:
            return  # the stream ends at the sender's next message
        ack = core.state.ack_to_send(last)
        if ack is not None:
            await context.write(cluster_pb2.ReplicateResponse(ack=ack))
            last = ack
