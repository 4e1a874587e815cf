"""Run the control plane: ``run(config)`` blocks until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

from grpc_health.v1 import health_pb2

from mboard import datadir, grpc_util, metrics
from mboard.api import cluster_pb2, cluster_pb2_grpc
from mboard.api import razpravljalnica_pb2 as pb
from mboard.api import razpravljalnica_pb2_grpc as pb_grpc
from mboard.config import ControlConfig
from mboard.control.service import Controller, ControlPlaneService, ControlService
from mboard.control.store import Store

log = logging.getLogger("mboard.control")

SERVICES = [
    pb.DESCRIPTOR.services_by_name["ControlPlane"].full_name,
    cluster_pb2.DESCRIPTOR.services_by_name["Control"].full_name,
]
STOP_GRACE_S = 1.0


def run(config: ControlConfig, exit_with_parent: bool = False) -> None:
    """Serve the control plane on ``config.listen`` until SIGINT or SIGTERM (or, with
    ``exit_with_parent``, until stdin closes)."""
    grpc_util.run(_serve(config, exit_with_parent))


async def _serve(config: ControlConfig, exit_with_parent: bool) -> None:
    stop = grpc_util.stop_event(exit_with_parent)
    lock = datadir.lock(Path(config.data_dir), "mboard control plane")
    store = Store(config.data_dir)
    try:
        controller = Controller(config, store)
        server = grpc_util.server()
        services = grpc_util.GenericOnly(server)
        cluster_pb2_grpc.add_ControlServicer_to_server(ControlService(controller), services)
        pb_grpc.add_ControlPlaneServicer_to_server(ControlPlaneService(controller), services)
        health_servicer = grpc_util.add_health_and_reflection(server, SERVICES)
        grpc_util.bind(server, config.listen, "control plane")
        metrics.serve(config.metrics.listen, controller.gauges(), exclude=metrics.NODE_ONLY)
        await server.start()
        for name in ["", *SERVICES]:
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        current = controller.membership.config
        log.info(
            "control plane listening on %s, epoch %d: %s",
            config.listen,
            current.epoch,
            current.describe(),
        )
        watcher = asyncio.create_task(controller.watch_failures())
        try:
            await stop.wait()
        finally:
            log.info("control plane stopping")
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await health_servicer.enter_graceful_shutdown()
            await server.stop(STOP_GRACE_S)
            await controller.close()
    finally:
        store.close()
        os.close(lock)
