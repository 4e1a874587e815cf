"""Small helpers shared by every gRPC server and client in mboard."""

from __future__ import annotations

import asyncio
import inspect
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, NamedTuple, TypeVar

import grpc
from google.protobuf.message import DecodeError

T = TypeVar("T")

KEEPALIVE_TIME_MS = 10_000
SERVER_OPTIONS = [
    # A taken port must be an error, not a silently shared socket (gRPC's default).
    ("grpc.so_reuseport", 0),
    # Accept the keepalive pings our channels send, also on idle connections. gRPC's
    # default (one ping per 5 minutes) answers them with GOAWAY "too_many_pings", which
    # cut every idle stream (subscriptions, replication links) after about 30 s.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", KEEPALIVE_TIME_MS // 2),
]
# Reconnect to a restarted peer within a fraction of the failure timeout, not after gRPC's
# default backoff (1 s, growing by 1.6x), which outlasts it.
FAST_RECONNECT = [
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 250),
]
CHANNEL_OPTIONS = [
    *FAST_RECONNECT,
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
]


def server(**kwargs) -> grpc.aio.Server:
    """A grpc.aio server that refuses to share its port."""
    return grpc.aio.server(options=SERVER_OPTIONS, **kwargs)


def bind(srv: grpc.aio.Server, address: str, what: str) -> int:
    """Bind ``address`` or raise OSError naming what failed to listen and where."""
    # Asked first with a plain socket, a taken port is one clear line; gRPC would log its
    # own error first and end with advice about GRPC_VERBOSITY.
    problem = cannot_listen(address)
    if problem:
        raise OSError(f"{what} cannot listen on {address}: {problem}")
    try:
        port = srv.add_insecure_port(address)
    except RuntimeError as exc:  # grpc raises RuntimeError when it cannot bind
        raise OSError(f"{what} cannot listen on {address}: {exc}") from exc
    if port == 0:
        raise OSError(f"{what} cannot listen on {address}: address in use or unavailable")
    return port


def cannot_listen(address: str) -> str | None:
    """Why ``address`` (host:port) cannot be listened on now, or None if it can.

    Like gRPC, it takes the address if any of the host's resolved addresses will do.
    """
    host, _, port = address.rpartition(":")
    try:
        resolved = socket.getaddrinfo(
            host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:  # socket.gaierror
        return (exc.strerror or str(exc)).lower()
    problems = []
    for family, kind, proto, _, sockaddr in resolved:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does
                probe.bind(sockaddr)
            return None
        except OSError as exc:
            problems.append((exc.strerror or str(exc)).lower())
    return problems[0] if problems else None


def channel(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)


class GenericOnly:
    """Stands in for a server while generated ``add_*_to_server`` code adds a service: its
    handlers go in as generic handlers only, never as registered methods, and each one
    answers a request that does not parse with INVALID_ARGUMENT (``refusing_malformed``).

    grpc.aio's accept loop keeps one pending call request per registered method and runs
    ``asyncio.wait`` over all of them for every incoming call, so each registered method
    adds to the cost of every call the server takes (our node serves some 20 of them). The
    generic path waits on one request whatever the number of methods.
    ``adapt(method name, handler)``, if given, may change a handler first.
    """

    def __init__(
        self,
        server: grpc.aio.Server,
        adapt: Callable[[str, grpc.RpcMethodHandler], grpc.RpcMethodHandler] | None = None,
    ) -> None:
        self.server = server
        self.adapt = adapt

    def add_generic_rpc_handlers(self, _handlers) -> None:
        pass  # built from the same handlers below, which the generated code passes next

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        adapted = {
            name: refusing_malformed(self.adapt(name, handler) if self.adapt else handler)
            for name, handler in handlers.items()
        }
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, adapted),)
        )


class _Malformed(NamedTuple):
    problem: str


def refusing_malformed(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """``handler``, answering a request whose bytes do not parse with INVALID_ARGUMENT.

    grpc.aio would answer it UNKNOWN, "Unexpected <class 'DecodeError'>: ...", and log a
    traceback for every such call. Streams of requests are our own links: left as they are.
    """
    parse = handler.request_deserializer
    if handler.request_streaming or parse is None:
        return handler

    def parse_or_note(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as exc:
            return _Malformed(str(exc))

    async def refuse(request: _Malformed, context: grpc.aio.ServicerContext) -> None:
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, f"malformed request: {request.problem}"
        )

    if handler.unary_unary:
        answer = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if type(request) is _Malformed:
                await refuse(request, context)
            return await answer(request, context)

        return handler._replace(request_deserializer=parse_or_note, unary_unary=unary_unary)

    stream = handler.unary_stream
    if inspect.iscoroutinefunction(stream):  # it writes its replies (grpc_health's Watch)

        async def writing(request: Any, context: grpc.aio.ServicerContext) -> None:
            if type(request) is _Malformed:
                await refuse(request, context)
            await stream(request, context)

        return handler._replace(request_deserializer=parse_or_note, unary_stream=writing)

    async def yielding(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator:
        if type(request) is _Malformed:
            await refuse(request, context)
        async for response in stream(request, context):
            yield response

    return handler._replace(request_deserializer=parse_or_note, unary_stream=yielding)


def add_health_and_reflection(srv: grpc.aio.Server, service_names: list[str]):
    """Serve grpc.health.v1 and server reflection, so standard gRPC tools work.

    Returns the health servicer; its overall status ("") starts SERVING: set it.
    """
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection

    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, GenericOnly(srv))
    names = [*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
    reflection.enable_server_reflection([*names, reflection.SERVICE_NAME], srv)
    return servicer


_BACKGROUND: set[asyncio.Task] = set()  # keeps the stdin watchers from being collected


def stop_event(exit_with_parent: bool = False) -> asyncio.Event:
    """An event set on SIGINT or SIGTERM and, with ``exit_with_parent``, when stdin closes.

    A parent that keeps our stdin open as a pipe (``mboard up``, the bench's echo server)
    takes us along when it ends, even by SIGKILL: the kernel closes its end of the pipe.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if exit_with_parent:
        task = loop.create_task(_set_when_stdin_closes(stop))
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)
    return stop


async def _set_when_stdin_closes(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    await stdin.read()  # returns at EOF
    stop.set()


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on uvloop (asyncio's own loop without it); its result.

    Servers and clients alike: every gRPC call wakes the loop from gRPC's poller thread,
    and uvloop does that far more cheaply. Measured here, tail reads went from about 0.55x
    to 0.8x of the bare gRPC echo ceiling, and a bench process receiving 100 subscriptions
    spends ~15% less CPU per event.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
