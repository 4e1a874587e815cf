"""YAML configuration for every role, with errors that name the file, the key and the problem.

Each role has a dataclass; its fields are the YAML keys (nested dataclasses are nested
mappings, e.g. ``metrics: {listen: ...}``). ``load(ControlConfig, path, overrides)`` reads
the file, lays command-line overrides on top and checks every value.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

DEFAULT_CONTROL = "127.0.0.1:50050"
_ADDRESS = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-]+):(\d{1,5})$")
_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")
# The longest max_text_length: a message, at up to 4 bytes a character in UTF-8, then stays
# far inside gRPC's default message limit (4 MiB), which every client and link must meet.
MAX_TEXT_LIMIT = 100_000


class ConfigError(Exception):
    """A configuration value is missing or wrong; the message says where and why."""


def check_address(value: str) -> str | None:
    """Return a problem with a ``host:port`` address, or None if it is fine."""
    match = _ADDRESS.match(value)
    if not match:
        return f"{value!r} is not a host:port address"
    if not 0 < int(match.group(2)) < 65536:
        return f"port {match.group(2)} is out of range 1..65535"
    return None


def _positive(value: float) -> str | None:
    return None if value > 0 else f"must be > 0, got {value}"


def _between(low: int, high: int):
    def check(value: int) -> str | None:
        return None if low <= value <= high else f"must be {low}..{high}, got {value}"

    return check


def _not_negative(value: float) -> str | None:
    return None if value >= 0 else f"must be >= 0, got {value}"


def _choice(*choices: str):
    def check(value: str) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}; got {value!r}"

    return check


def _non_empty(value: str) -> str | None:
    return None if value else "must not be empty (leave the key out to have one generated)"


def _node_id(value: str) -> str | None:
    if _NODE_ID.match(value):
        return None
    return f"{value!r} must be 1..64 letters, digits, '.', '_' or '-'"


def _key(default: Any = dataclasses.MISSING, check=None, **kwargs) -> Any:
    metadata = {"check": check} if check else {}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


@dataclass
class LogConfig:
    level: str = _key("info", _choice("debug", "info", "warning", "error"))
    format: str = _key("text", _choice("text", "json"))


@dataclass
class MetricsConfig:
    listen: str | None = _key(None, check_address)


@dataclass
class ControlConfig:
    listen: str = _key(DEFAULT_CONTROL, check_address)
    data_dir: str = _key("./data/control")
    heartbeat_interval: float = _key(0.5, _positive)
    failure_timeout: float = _key(2.0, _positive)
    # Reads at the tail need a lease; it must run out before the failure timeout does,
    # so a tail that was replaced can no longer serve reads.
    lease: float = _key(1.0, _positive)
    subscribe_token_ttl: float = _key(600.0, _positive)
    # Signs subscribe tokens; generated and persisted in data_dir when absent.
    secret: str | None = _key(None, _non_empty)
    log: LogConfig = field(default_factory=LogConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    def validate(self) -> list[tuple[str, str]]:
        problems = []
        if self.heartbeat_interval >= self.failure_timeout:
            problems.append(("heartbeat_interval", "must be shorter than failure_timeout"))
        if self.lease >= self.failure_timeout:
            problems.append(("lease", "must be shorter than failure_timeout"))
        return problems


@dataclass
class NodeConfig:
    id: str = _key(check=_node_id)
    listen: str = _key(check=check_address)
    # The address others use to reach this node (defaults to listen).
    advertise: str | None = _key(None, check_address)
    data_dir: str | None = _key(None)
    control: str = _key(DEFAULT_CONTROL, check_address)
    # SQLite synchronous mode: full survives power loss, normal only process crashes.
    durability: str = _key("full", _choice("full", "normal"))
    max_text_length: int = _key(4096, _between(1, MAX_TEXT_LIMIT))
    page_max: int = _key(1000, _positive)
    # Megabytes of the newest messages kept in memory for GetMessages pages (0: none).
    page_cache_mb: float = _key(32.0, _not_negative)
    subscriber_queue: int = _key(10000, _positive)
    # A write not committed within this many seconds answers UNAVAILABLE (safe to retry).
    write_timeout: float = _key(5.0, _positive)
    log: LogConfig = field(default_factory=LogConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    @property
    def address(self) -> str:
        return self.advertise or self.listen

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir or f"./data/{self.id}")

    def validate(self) -> list[tuple[str, str]]:
        return []


@dataclass
class ClientConfig:
    control: str = _key(DEFAULT_CONTROL, check_address)
    # Overall deadline of one command, retries and failovers included.
    timeout: float = _key(10.0, _positive)

    def validate(self) -> list[tuple[str, str]]:
        return []


Config = TypeVar("Config", ControlConfig, NodeConfig, ClientConfig)


def load(
    cls: type[Config], path: str | os.PathLike | None, overrides: dict | None = None
) -> Config:
    """Build ``cls`` from the YAML file at ``path`` (optional) with ``overrides`` on top.

    ``overrides`` maps dotted keys (``"metrics.listen"``) to values; None values are ignored,
    so click options that were not given can be passed as they are.
    """
    source = str(path) if path is not None else "command line"
    data: dict = {}
    if path is not None:
        data = _read(Path(path))
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        *parents, last = dotted.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    config = _build(cls, data, source, "")
    for key, problem in config.validate():
        raise ConfigError(f"{source}: {key}: {problem}")
    return config


def _read(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not valid YAML: not UTF-8 text (byte {exc.object[exc.start]:#04x} "
            f"at offset {exc.start})"
        ) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f"line {where.line + 1}: " if where else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: {at}not valid YAML: {problem}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the file must hold a mapping of keys, not {type(data).__name__}"
        )
    return data


def _build(cls: type, data: dict, source: str, prefix: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{source}: {prefix}{key}: unknown key (known keys: {known})")
    values = {}
    for name, spec in fields.items():
        key = f"{prefix}{name}"
        if name not in data:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{source}: {key}: required key is missing")
            continue
        values[name] = _convert(hints[name], data[name], source, key)
        check = spec.metadata.get("check")
        problem = check(values[name]) if check and values[name] is not None else None
        if problem:
            raise ConfigError(f"{source}: {key}: {problem}")
    return cls(**values)


def _convert(hint: Any, value: Any, source: str, key: str) -> Any:
    optional = isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint)
    if optional:
        if value is None:
            return None
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key}: must be a mapping, got {value!r}")
        return _build(hint, value, source, f"{key}.")
    # YAML gives ints for "2"; a float key accepts them. bool is an int in Python: refuse it.
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is str and isinstance(value, str | int) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"{source}: {key}: must be {_type_name(hint)}, got {value!r}")


def _type_name(hint: Any) -> str:
    return {float: "a number", int: "a whole number", str: "a string"}.get(hint, str(hint))
