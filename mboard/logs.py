"""Logging for the long-running roles: readable text or one JSON object per line."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg"}`` (plus ``exc`` with a traceback) per record."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def client_went_away(record: logging.LogRecord) -> bool:
    """False for grpc.aio's ERROR, with a traceback, about a reply it could not send because
    the client had gone (hung up mid-stream): any client can cause as many as it likes,
    and nothing is wrong with the server. Kept at ``debug``."""
    gone = record.getMessage().startswith("ExecuteBatchError raised in core by servicer")
    return not gone or logging.getLogger().isEnabledFor(logging.DEBUG)


def setup(level: str = "info", fmt: str = "text") -> None:
    """Send the root logger's records at ``level`` and above to stderr in ``fmt`` (text|json)."""
    logging.getLogger("grpc._cython.cygrpc").addFilter(client_went_away)
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT, DATE_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
