"""``mboard node``: assemble storage, core and servicers; talk to the control plane."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time

import grpc
from google.protobuf import empty_pb2
from grpc_health.v1 import health_pb2

from mboard import datadir, grpc_util, metrics
from mboard.api import cluster_pb2, cluster_pb2_grpc
from mboard.api import razpravljalnica_pb2 as pb
from mboard.config import NodeConfig
from mboard.storage_errors import writing

from .board import Board
from .core import NodeCore
from .service import NodeService, add_board_service
from .storage import Storage, StorageFailed

log = logging.getLogger(__name__)
CONTROL_CALL_TIMEOUT = 1.0
# Longer: the control plane may first probe a member that had this id (about 0.6 s when
# that one is frozen), and every retry would probe again.
REGISTER_TIMEOUT = 3.0
# Answers to Register that no retry changes: the node stops and says why.
REGISTRATION_REFUSALS = frozenset(
    {grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.INVALID_ARGUMENT}
)
# How often the chain's last member, its disk full, tries to store a write again.
RETRY_WRITES_S = 2.0
GC_THRESHOLDS = (10_000, 20, 100)  # gc.set_threshold; Python's defaults are (700, 10, 10)


class RegistrationRefused(OSError):
    """The control plane will not take this node (an OSError: the CLI says it in one line)."""


class ControlLink:
    """Registration, heartbeats (which carry config and read leases) and reports."""

    def __init__(self, core: NodeCore, config: NodeConfig) -> None:
        self.core = core
        self.config = config
        self.stub = cluster_pb2_grpc.ControlStub(core.channel(config.control))
        self.heartbeat_interval = 0.5
        self.cluster_secret = b""
        self.token_ttl = 600.0
        self._reachable = True
        self._beat_now = asyncio.Event()
        self.registered = False

    async def run(self) -> None:
        await self.register()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.heartbeat_interval):
                    await self._beat_now.wait()
            self._beat_now.clear()
            await self.heartbeat()

    def beat_soon(self) -> None:
        """Send the next heartbeat now rather than at the next interval."""
        self._beat_now.set()

    async def register(self) -> None:
        request = cluster_pb2.RegisterRequest(
            node=pb.NodeInfo(node_id=self.core.node_id, address=self.config.address),
            applied_seq=self.core.state.applied_seq,
        )
        delay = 0.05
        while True:
            try:
                reply = await self.stub.Register(request, timeout=REGISTER_TIMEOUT)
                break
            except grpc.aio.AioRpcError as exc:
                if exc.code() in REGISTRATION_REFUSALS:
                    raise RegistrationRefused(
                        f"the control plane at {self.config.control} refused node "
                        f"{self.core.node_id}: {exc.details()}"
                    ) from None
                self._unreachable(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        self.registered = True
        self._reachable = True
        self.heartbeat_interval = reply.heartbeat_interval_s or self.heartbeat_interval
        self.cluster_secret = reply.cluster_secret
        self.token_ttl = reply.subscribe_token_ttl_s or self.token_ttl
        log.info("registered with the control plane at %s", self.config.control)
        self.core.apply_config(reply.config)

    async def heartbeat(self) -> None:
        state = self.core.state
        request = cluster_pb2.HeartbeatRequest(
            node_id=self.core.node_id, epoch=state.position.epoch, applied_seq=state.applied_seq,
            committed_seq=state.committed_seq, subscribers=len(self.core.hub),
            holds_committed=state.holds_committed(), address=self.config.address,
        )  # fmt: skip
        sent_at = time.monotonic()  # a lease counts from when we asked for it
        try:
            reply = await self.stub.Heartbeat(request, timeout=max(self.heartbeat_interval, 0.5))
        except grpc.aio.AioRpcError as exc:
            self._unreachable(exc)
            return
        if not self._reachable:
            log.info("the control plane at %s answers again", self.config.control)
            self._reachable = True
        if reply.unknown:
            log.info("the control plane does not know this node (removed): registering again")
            self.core.state.drop_lease()  # whoever it takes us for, we are out of its chain
            await self.register()
            return
        self.core.apply_config(reply.config)
        if reply.lease_s > 0:
            self.core.grant_lease(reply.config.epoch, sent_at + reply.lease_s)
        self.core.report_caught_up()
        if state.committed_seq > self.core.board.saved_committed_seq:
            self.core.storage.submit(lambda: self.core.board.save_committed(state.committed_seq))

    def _unreachable(self, exc: grpc.aio.AioRpcError) -> None:
        metrics.HEARTBEAT_MISSES.inc()
        if self._reachable:
            # Its details say why: not listening, or its own words (it cannot save a change).
            log.warning(
                "a call to the control plane at %s failed (%s: %s); retrying",
                self.config.control, exc.code().name, " ".join((exc.details() or "").split()),
            )  # fmt: skip
            self._reachable = False

    async def report_failure(self, epoch: int, suspect_id: str) -> None:
        report = cluster_pb2.FailureReport(
            epoch=epoch, reporter_id=self.core.node_id, suspect_id=suspect_id
        )
        await self._call_quietly(self.stub.ReportFailure, report)

    async def report_caught_up(self, epoch: int, learner_id: str, learner_applied_seq: int) -> None:
        request = cluster_pb2.CaughtUpRequest(
            epoch=epoch, tail_id=self.core.node_id, learner_id=learner_id,
            learner_applied_seq=learner_applied_seq,
        )  # fmt: skip
        await self._call_quietly(self.stub.ReportCaughtUp, request)

    async def subscriber_counts(self) -> dict[str, int]:
        """Subscribers per node as the heartbeats last reported them ({} if unknown)."""
        try:
            status = await self.stub.GetStatus(empty_pb2.Empty(), timeout=CONTROL_CALL_TIMEOUT)
        except grpc.aio.AioRpcError:
            return {}
        return {member.node.node_id: member.subscribers for member in status.members}

    async def leave(self) -> None:
        await self._call_quietly(
            self.stub.Leave,
            cluster_pb2.LeaveRequest(
                node_id=self.core.node_id,
                epoch=self.core.state.position.epoch,
                address=self.config.address,
            ),
        )

    async def _call_quietly(self, method, request) -> None:
        try:
            await method(request, timeout=CONTROL_CALL_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            log.debug("control call %s failed: %s", type(request).__name__, exc.code().name)


def _storage_failure(core: NodeCore) -> asyncio.Future[StorageFailed]:
    """A future set when the node must stop because it cannot write its database.

    Fail-stop is what chain replication counts on: kept running, the node would hold up
    every write, and the chain goes on without it. Only the chain's last member stays, to
    go on serving reads and subscriptions (its writes answer UNAVAILABLE) until its disk
    has room again: a disk that every node shares (``mboard up``) must not take the reads
    down too.
    """
    failed: asyncio.Future[StorageFailed] = asyncio.get_running_loop().create_future()
    retrying = False

    def stop_unless_last(failure: StorageFailed) -> None:
        nonlocal retrying
        if [node.node_id for node in core.state.config.chain] != [core.node_id]:
            failed.set_result(failure)
            return
        log.error(
            "node %s: %s. It is the chain's last member: it goes on serving reads, and "
            "takes writes again once there is room (it tries every %g s)",
            core.node_id, failure, RETRY_WRITES_S,
        )  # fmt: skip
        if not retrying:  # one task, for this failure and any later one
            retrying = True
            core.spawn(_retry_writes(core))

    core.storage.on_failure = stop_unless_last
    return failed


async def _retry_writes(core: NodeCore) -> None:
    """While the storage fails, now and then a small write: once one is stored, the node
    takes writes again.

    Safe for the last member alone: it heads the chain, so what it applies comes from its
    own database, which the failed batches left as it was (see ``Storage.retry``).
    """
    board = core.board
    while True:
        await asyncio.sleep(RETRY_WRITES_S)
        if core.storage.failure:
            with contextlib.suppress(StorageFailed):
                await core.storage.retry(
                    lambda: board.save_committed(core.state.committed_seq, every=0)
                )


async def serve(
    config: NodeConfig, stop: asyncio.Event | None = None, exit_with_parent: bool = False
) -> None:
    """Run a node until ``stop`` is set (when None: until SIGINT or SIGTERM, or with
    ``exit_with_parent`` until stdin closes)."""
    lock = datadir.lock(config.data_path, "mboard node")
    path = config.data_path / "board.db"
    with writing(path):  # a full disk at start-up: one line, not a traceback
        storage = Storage(path, config.durability)
        board = Board(storage, config.max_text_length, config.page_max)
    core = NodeCore(config, storage, board)
    failed = _storage_failure(core)
    core.start()
    # Before the server starts: handlers and reports reach the control plane through it.
    control = ControlLink(core, config)
    core.control = control

    server = grpc_util.server()
    add_board_service(server, core)
    cluster_pb2_grpc.add_NodeServicer_to_server(NodeService(core), grpc_util.GenericOnly(server))
    health = grpc_util.add_health_and_reflection(
        server,
        [
            pb.DESCRIPTOR.services_by_name["MessageBoard"].full_name,
            cluster_pb2.DESCRIPTOR.services_by_name["Node"].full_name,
        ],
    )

    async def update_health() -> None:
        status = health_pb2.HealthCheckResponse
        serving = core.state.position.in_chain
        await health.set("", status.SERVING if serving else status.NOT_SERVING)

    await update_health()  # grpc_health starts out SERVING; a node out of the chain is not
    core.config_listeners.append(lambda: core.spawn(update_health()))
    grpc_util.bind(server, config.listen, f"node {config.id}")
    metrics.serve(config.metrics.listen, core.gauges())
    await server.start()
    log.info(
        "node %s serving on %s (data %s, applied seq %d)",
        config.id, config.listen, config.data_path, board.applied_seq,
    )  # fmt: skip

    link = asyncio.create_task(control.run())
    if stop is None:
        stop = grpc_util.stop_event(exit_with_parent)
    stopped = asyncio.create_task(stop.wait())
    # The link to the control plane ends on its own only when the control plane refuses
    # this node (RegistrationRefused): then the node stops, and says why.
    await asyncio.wait([link, stopped, failed], return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    refused = link.exception() if link.done() else None
    failure = failed.result() if failed.done() else None
    if failure:
        log.error(
            "node %s stops: %s. The chain goes on without it; make room (or repair the disk), "
            "then start it again",
            config.id, failure,
        )  # fmt: skip

    leaves = control.registered and not refused
    log.info("node %s stopping%s", config.id, ": leaving the chain" if leaves else "")
    core.begin_shutdown()
    core.state.drop_lease()  # before Leave: the control plane then lets the next tail commit
    link.cancel()
    if leaves:
        await control.leave()
    await server.stop(grace=1.0)
    await core.stop()
    storage.close()
    os.close(lock)
    log.info("node %s stopped", config.id)
    if refused or failure:
        raise refused or failure


def run(config: NodeConfig, exit_with_parent: bool = False) -> None:
    """Blocking entry point for ``mboard node``."""
    # What is loaded by now (modules, grpc, peewee, protobuf) lives as long as the process:
    # keep it out of the full collections. Measured under the subscriber bench, they stalled
    # every node's event loop for 11-33 ms a few times in 10 s; 0.7-1 ms with this.
    gc.collect()
    gc.freeze()
    # Every call allocates dozens of short-lived objects (futures, tasks, protobuf messages),
    # so with the default young generation (700 objects) the collector runs hundreds of times
    # a second. Collected far less often, the head, whose GIL bounds the chain's write rate,
    # commits a few per cent more writes/s (README, Benchmark).
    gc.set_threshold(*GC_THRESHOLDS)
    grpc_util.run(serve(config, exit_with_parent=exit_with_parent))
