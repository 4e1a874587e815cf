"""Push every new configuration to the nodes at once, best effort.

One worker task per node sends the newest configuration it has been given, one push at a
time, so a node never receives an older configuration after a newer one, and a slow node
delays nobody else (heartbeat replies carry the configuration too).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

import grpc

from mboard import grpc_util
from mboard.api import cluster_pb2, cluster_pb2_grpc
from mboard.control.membership import Node

log = logging.getLogger("mboard.control")

PUSH_TIMEOUT_S = 0.5

# Called with (node_id, epoch) after a node accepted the configuration of that epoch.
Confirm = Callable[[str, int], None]


class Pushers:
    def __init__(self, confirm: Confirm) -> None:
        self._confirm = confirm
        self._workers: dict[str, _Worker] = {}

    def push(
        self, config: cluster_pb2.ChainConfig, members: Iterable[Node], gone: Iterable[Node]
    ) -> None:
        """Send ``config`` to the members, and a last time to nodes that just left the chain
        (so a removed tail hears that its lease is over)."""
        for node, last in [*((n, False) for n in members), *((n, True) for n in gone)]:
            worker = self._workers.get(node.node_id)
            if worker is None or worker.address != node.address:
                if worker is not None:
                    worker.cancel()
                worker = _Worker(node, self._confirm, self._forget)
                self._workers[node.node_id] = worker
            worker.send(config, last)

    async def close(self) -> None:
        workers = list(self._workers.values())
        self._workers.clear()
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*(w.task for w in workers), return_exceptions=True)

    def _forget(self, worker: _Worker) -> None:
        if self._workers.get(worker.node_id) is worker:
            del self._workers[worker.node_id]


class _Worker:
    def __init__(self, node: Node, confirm: Confirm, forget: Callable[[_Worker], None]) -> None:
        self.node_id = node.node_id
        self.address = node.address
        self._confirm = confirm
        self._forget = forget
        self._latest: cluster_pb2.ChainConfig | None = None
        self._last = False
        self._wake = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name=f"push-{self.node_id}")

    def send(self, config: cluster_pb2.ChainConfig, last: bool) -> None:
        self._latest = config
        self._last = last
        self._wake.set()

    def cancel(self) -> None:
        self.task.cancel()

    async def _run(self) -> None:
        async with grpc_util.channel(self.address) as channel:
            stub = cluster_pb2_grpc.NodeStub(channel)
            while True:
                await self._wake.wait()
                self._wake.clear()
                config, last = self._latest, self._last
                try:
                    await stub.PushConfig(config, timeout=PUSH_TIMEOUT_S)
                    self._confirm(self.node_id, config.epoch)
                except grpc.RpcError as exc:
                    log.debug("push of epoch %d to %s failed: %s", config.epoch, self.node_id, exc)
                if last and not self._wake.is_set():
                    self._forget(self)
                    return
