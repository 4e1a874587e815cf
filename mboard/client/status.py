"""`mboard status`: the cluster at a glance, from the control plane and each node's own view."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass

from mboard.api import cluster_pb2
from mboard.client.core import BoardError, Client

# A node that cannot answer this fast is shown from the control plane's (older) view.
NODE_STATUS_TIMEOUT = 1.0

COLUMNS = (
    "NODE",
    "ADDRESS",
    "ROLE",
    "EPOCH",
    "APPLIED",
    "COMMITTED",
    "LAG",
    "SUBS",
    "HEARTBEAT",
    "STATE",
)


@dataclass
class NodeRow:
    node_id: str
    address: str
    role: str
    # The node's own epoch; None when it did not answer.
    epoch: int | None
    applied_seq: int
    committed_seq: int
    # How far its applied seq trails the most advanced node.
    lag: int
    subscribers: int
    heartbeat_age_s: float
    reachable: bool


@dataclass
class ClusterView:
    control_address: str
    epoch: int
    chain: list[str]
    learners: list[str]
    nodes: list[NodeRow]
    # Why the control plane cannot save its state ("" when it can).
    storage_problem: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


async def gather(client: Client) -> ClusterView:
    """Ask the control plane for the members, then every member (at once) for its live view."""
    status = await client.control_status()
    lives = await asyncio.gather(*(_live(client, m.node.address) for m in status.members))
    rows = [_row(member, live) for member, live in zip(status.members, lives, strict=True)]
    top = max((row.applied_seq for row in rows), default=0)
    for row in rows:
        row.lag = top - row.applied_seq
    return ClusterView(
        control_address=status.control_address or client.control,
        epoch=status.config.epoch,
        chain=[node.node_id for node in status.config.chain],
        learners=[node.node_id for node in status.config.learners],
        nodes=rows,
        storage_problem=status.storage_problem,
    )


async def _live(client: Client, address: str) -> cluster_pb2.NodeStatus | None:
    try:
        return await client.node_status(address, NODE_STATUS_TIMEOUT)
    except BoardError:
        return None


def _row(member: cluster_pb2.MemberStatus, live: cluster_pb2.NodeStatus | None) -> NodeRow:
    # The node's own answer is fresher than what its last heartbeat told the control plane.
    source = live or member
    return NodeRow(
        node_id=member.node.node_id,
        address=member.node.address,
        role=source.role,
        epoch=live.epoch if live else None,
        applied_seq=source.applied_seq,
        committed_seq=source.committed_seq,
        lag=0,
        subscribers=source.subscribers,
        heartbeat_age_s=round(member.heartbeat_age_s, 3),
        reachable=live is not None,
    )


def format_table(view: ClusterView) -> str:
    """A header line and a plain aligned table, one line per node."""
    chain = " -> ".join(view.chain) or "(none)"
    header = f"control {view.control_address}  epoch {view.epoch}  chain {chain}"
    if view.learners:
        header += f"  learners {', '.join(view.learners)}"
    if view.storage_problem:
        header += (
            f"\nwarning: the control plane {view.storage_problem}: "
            "the chain cannot change until it can"
        )
    rows = [COLUMNS] + [
        (
            row.node_id,
            row.address,
            row.role,
            "-" if row.epoch is None else str(row.epoch),
            str(row.applied_seq),
            str(row.committed_seq),
            str(row.lag),
            str(row.subscribers),
            f"{row.heartbeat_age_s:.1f}s",
            "ok" if row.reachable else "unreachable",
        )
        for row in view.nodes
    ]
    widths = [max(len(cells[i]) for cells in rows) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)).rstrip()
        for cells in rows
    ]
    return "\n".join([header, *lines])
