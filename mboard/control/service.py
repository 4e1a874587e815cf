"""gRPC servicers of the control plane: the public ControlPlane and the internal Control.

The rules live in membership.py; this layer turns RPCs into calls on it, persists through
the store (inside Membership, before a change becomes visible), pushes every new
configuration to the nodes and watches for silent members.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable

import grpc
from google.protobuf import empty_pb2

from mboard import grpc_util, metrics
from mboard.api import cluster_pb2, cluster_pb2_grpc
from mboard.api import razpravljalnica_pb2 as pb
from mboard.api import razpravljalnica_pb2_grpc as pb_grpc
from mboard.config import ControlConfig
from mboard.control.membership import (
    ChainConfig,
    Membership,
    Node,
    NotHeard,
    NotWaiting,
    Refused,
)
from mboard.control.push import Pushers
from mboard.control.store import Store
from mboard.storage_errors import StorageFailed

log = logging.getLogger("mboard.control")

PROBE_TIMEOUT_S = 0.3
PROBE_ATTEMPTS = 2


def node_info(node: Node | None) -> pb.NodeInfo:
    return pb.NodeInfo(node_id=node.node_id, address=node.address) if node else pb.NodeInfo()


def changing(method: Callable) -> Callable:
    """An RPC that may change the membership: RESOURCE_EXHAUSTED (gRPC's code for a file
    system out of space) while the change cannot be saved; nothing changed, and the nodes
    try again. Not UNAVAILABLE: clients take that for "cannot reach" and hide the reason."""

    @functools.wraps(method)
    async def handler(self, request, context):
        try:
            return await method(self, request, context)
        except StorageFailed as exc:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"the control plane {exc}; try again later"
            )

    return handler


def config_proto(config: ChainConfig) -> cluster_pb2.ChainConfig:
    return cluster_pb2.ChainConfig(
        epoch=config.epoch,
        chain=[node_info(n) for n in config.chain],
        learners=[node_info(n) for n in config.learners],
    )


class Controller:
    """The control plane's state and the actions shared by both services."""

    def __init__(
        self, config: ControlConfig, store: Store, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self.clock = clock
        self.store = store
        self.secret = store.secret(config.secret)
        self.membership = Membership(
            failure_timeout=config.failure_timeout,
            lease=config.lease,
            started=clock(),
            persist=store.save,
            saved=store.load(),
        )
        self.pushers = Pushers(self.membership.confirm)

    def change(self, change: Callable[[], bool]) -> None:
        """Run a membership change; if it made a new configuration, push it to the nodes."""
        old = self.membership.config
        if not change():
            return
        new = self.membership.config
        metrics.RECONFIGURATIONS.inc()
        kept = {n.node_id for n in new.members()}
        gone = [n for n in old.members() if n.node_id not in kept]
        self.pushers.push(config_proto(new), new.members(), gone)

    def gauges(self) -> dict:
        """Live values for the Prometheus gauges, from what the heartbeats report."""

        def lag() -> int:
            chain = self.membership.config.chain
            progress = self.membership.progress
            if not chain or chain[0].node_id not in progress or chain[-1].node_id not in progress:
                return 0
            return progress[chain[0].node_id].applied_seq - progress[chain[-1].node_id].applied_seq

        return {
            metrics.EPOCH: lambda: self.membership.config.epoch,
            metrics.SUBSCRIBERS: lambda: sum(
                p.subscribers for p in self.membership.progress.values()
            ),
            metrics.REPLICATION_LAG: lag,
        }

    async def probe(self, node: Node) -> bool:
        """Whether ``node`` answers Node.Status at its address (as itself, not another)."""
        async with grpc_util.channel(node.address) as channel:
            stub = cluster_pb2_grpc.NodeStub(channel)
            for _ in range(PROBE_ATTEMPTS):
                try:
                    status = await stub.Status(cluster_pb2.StatusRequest(), timeout=PROBE_TIMEOUT_S)
                    return status.node_id == node.node_id
                except grpc.RpcError:
                    continue
        return False

    async def watch_failures(self) -> None:
        """Remove members that stopped sending heartbeats; runs until cancelled."""
        period = self.config.heartbeat_interval / 4
        last_check = self.clock()
        while True:
            await asyncio.sleep(period)
            now = self.clock()
            # Woken this late, we were stalled ourselves (starved of CPU, stopped): the
            # heartbeats sent meanwhile are still queued, unread.
            stalled = now - last_check - period
            last_check = now
            try:
                if stalled > self.config.heartbeat_interval:
                    log.warning("the control plane was stalled for %.1f s", stalled)
                    self.membership.excuse(stalled, now)
                if self.store.failure is not None:  # a quiet board would not find out
                    self.membership.save()
                members = self.membership.config.members()
                self.change(functools.partial(self.membership.expire, now))
                metrics.HEARTBEAT_MISSES.inc(len(members) - len(self.membership.config.members()))
            except StorageFailed:
                pass  # the store said so once; tried again at the next look
            except Exception:
                log.exception("checking for failed nodes")

    async def close(self) -> None:
        await self.pushers.close()


class ControlService(cluster_pb2_grpc.ControlServicer):
    def __init__(self, controller: Controller) -> None:
        self._controller = controller
        self._membership = controller.membership

    @changing
    async def Register(self, request, context):
        node = Node(request.node.node_id, request.node.address)
        if not node.node_id or not node.address:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "register needs node.node_id and node.address"
            )
        # The same id from another address: a node restarted elsewhere, or a second node
        # given an id in use. Only the first may take the member's place.
        member = self._membership.config.elsewhere(node.node_id, node.address)
        if member is not None and await self._controller.probe(member):
            await context.abort(
                grpc.StatusCode.ALREADY_EXISTS,
                f"node id {node.node_id} is taken by a live node at {member.address}: "
                "give this node another id, or stop that one first",
            )
        now = self._controller.clock()
        self._controller.change(lambda: self._membership.register(node, request.applied_seq, now))
        config = self._controller.config
        return cluster_pb2.RegisterReply(
            config=config_proto(self._membership.config),
            cluster_secret=self._controller.secret,
            heartbeat_interval_s=config.heartbeat_interval,
            subscribe_token_ttl_s=config.subscribe_token_ttl,
        )

    async def Heartbeat(self, request, context):
        answer = self._membership.heartbeat(
            request.node_id,
            epoch=request.epoch,
            applied_seq=request.applied_seq,
            committed_seq=request.committed_seq,
            subscribers=request.subscribers,
            now=self._controller.clock(),
            holds_committed=request.holds_committed,
            address=request.address,
        )
        return cluster_pb2.HeartbeatReply(
            config=config_proto(answer.config), lease_s=answer.lease_s, unknown=answer.unknown
        )

    @changing
    async def ReportCaughtUp(self, request, context):
        self._controller.change(
            lambda: self._membership.caught_up(request.epoch, request.tail_id, request.learner_id)
        )
        return empty_pb2.Empty()

    @changing
    async def ReportFailure(self, request, context):
        suspect = self._membership.config.find(request.suspect_id)
        if suspect is None or await self._controller.probe(suspect):
            return empty_pb2.Empty()
        why = f"{suspect.node_id} unreachable (reported by {request.reporter_id or '?'})"
        self._controller.change(lambda: self._membership.remove(suspect.node_id, why))
        return empty_pb2.Empty()

    @changing
    async def Leave(self, request, context):
        if self._membership.config.elsewhere(request.node_id, request.address):
            return empty_pb2.Empty()  # not the member: an old run, or a node refused its id
        why = f"{request.node_id} left"
        # A node drops its lease before it says it leaves. Only its current run can say so:
        # a Leave from before it registered again (the epoch it knew is older) may arrive
        # late, while its new run holds a lease.
        current = request.epoch == self._membership.config.epoch
        self._controller.change(
            lambda: self._membership.remove(request.node_id, why, serves_no_reads=current)
        )
        return empty_pb2.Empty()

    async def GetStatus(self, request, context):
        members = [
            cluster_pb2.MemberStatus(
                node=node_info(status.node),
                role=status.role,
                applied_seq=status.applied_seq,
                committed_seq=status.committed_seq,
                subscribers=status.subscribers,
                heartbeat_age_s=status.heartbeat_age_s,
            )
            for status in self._membership.statuses(self._controller.clock())
        ]
        failure = self._controller.store.failure
        return cluster_pb2.ClusterStatus(
            config=config_proto(self._membership.config),
            members=members,
            control_address=self._controller.config.listen,
            storage_problem=str(failure) if failure else "",
        )

    @changing
    async def RestartChain(self, request, context):
        floor = self._membership.committed_floor
        try:
            self._controller.change(lambda: self._membership.restart_from(request.node_id))
        except Refused as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except NotWaiting as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except NotHeard as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        return cluster_pb2.RestartChainReply(
            config=config_proto(self._membership.config),
            applied_seq=self._membership.progress[request.node_id].applied_seq,
            committed_floor=floor,
        )


class ControlPlaneService(pb_grpc.ControlPlaneServicer):
    def __init__(self, controller: Controller) -> None:
        self._membership = controller.membership

    async def GetClusterState(self, request, context):
        config = self._membership.config
        return pb.GetClusterStateResponse(
            head=node_info(config.chain[0] if config.chain else None),
            tail=node_info(config.tail),
            chain=[node_info(n) for n in config.chain],
            epoch=config.epoch,
        )
