"""The control plane's own small database: ``<data_dir>/control.db`` (SQLite, WAL).

It holds the chain configuration, the node cleared to hold a read lease and the cluster
secret, so a restarted control plane continues where it stopped and never reissues an epoch.
A write the disk cannot take raises StorageFailed and changes nothing: the control plane
then makes no change it would need to save, and tries again as things come up.
"""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path

import peewee

from mboard.control.membership import ChainConfig, Node, Saved
from mboard.storage_errors import StorageFailed, writing

log = logging.getLogger("mboard.control")

DB_NAME = "control.db"


class Setting(peewee.Model):
    key = peewee.CharField(primary_key=True)
    value = peewee.TextField()


class Store:
    def __init__(self, data_dir: str | Path) -> None:
        path = Path(data_dir)
        path.mkdir(parents=True, exist_ok=True)
        self.path = path / DB_NAME
        # Why the last write failed, until one succeeds again (shown by ``mboard status``).
        self.failure: StorageFailed | None = None
        self._db = peewee.SqliteDatabase(
            str(self.path), pragmas={"journal_mode": "wal", "synchronous": "full"}
        )
        with writing(self.path), self._db.bind_ctx([Setting]):
            self._db.create_tables([Setting])

    def close(self) -> None:
        self._db.close()

    def load(self) -> Saved | None:
        """The state saved last, or None for a new control plane."""
        values = self._read(
            "epoch", "chain", "learners", "lease_holder", "survivors", "committed_floor"
        )
        if "epoch" not in values:
            return None
        config = ChainConfig(
            epoch=int(values["epoch"]),
            chain=_nodes(values["chain"]),
            learners=_nodes(values["learners"]),
        )
        survivors = tuple(json.loads(values.get("survivors") or "[]"))
        floor = int(values.get("committed_floor") or 0)
        return Saved(config, values.get("lease_holder") or None, survivors, floor)

    def save(self, saved: Saved) -> None:
        """Write ``saved`` durably (one transaction, fsync'd) or raise."""
        config = saved.config
        self._write(
            {
                "epoch": str(config.epoch),
                "chain": _json(config.chain),
                "learners": _json(config.learners),
                "lease_holder": saved.lease_holder or "",
                "survivors": json.dumps(saved.survivors),
                "committed_floor": str(saved.committed_floor),
            }
        )

    def secret(self, configured: str | None) -> bytes:
        """The cluster secret: the configured one, else one generated once and kept."""
        if configured:
            return configured.encode()
        stored = self._read("secret").get("secret")
        if stored:
            return bytes.fromhex(stored)
        generated = secrets.token_bytes(32)
        self._write({"secret": generated.hex()})
        return generated

    def _read(self, *keys: str) -> dict[str, str]:
        with self._db.bind_ctx([Setting]):
            rows = Setting.select().where(Setting.key.in_(keys))
            return {row.key: row.value for row in rows}

    def _write(self, values: dict[str, str]) -> None:
        try:
            with writing(self.path), self._db.bind_ctx([Setting]), self._db.atomic():
                rows = [{"key": key, "value": value} for key, value in values.items()]
                Setting.insert_many(rows).on_conflict_replace().execute()
        except StorageFailed as failure:
            if self.failure is None:  # said once, not at every attempt
                log.error("%s; the chain cannot change until it can", failure)
            self.failure = failure
            raise
        if self.failure is not None:
            log.info("%s can be written again", self.path)
            self.failure = None


def _json(nodes: tuple[Node, ...]) -> str:
    return json.dumps([[n.node_id, n.address] for n in nodes])


def _nodes(text: str) -> tuple[Node, ...]:
    return tuple(Node(node_id, address) for node_id, address in json.loads(text))
