"""The async client: finds the chain through the control plane and follows it through failures.

Writes go to the head, reads to the tail. A call that hits a node which is gone, not (yet) in
the role it was asked for, or too slow is retried against a fresh view of the chain until the
client's overall timeout runs out; a write keeps its ``x-request-id`` across retries, so the
chain applies it at most once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import TypeVar

import grpc
from google.protobuf import empty_pb2

from mboard import grpc_util
from mboard.api import cluster_pb2, cluster_pb2_grpc
from mboard.api import razpravljalnica_pb2 as pb
from mboard.api import razpravljalnica_pb2_grpc as pb_grpc
from mboard.config import DEFAULT_CONTROL

T = TypeVar("T")

# Codes that say "this node cannot do it right now", not "this request is wrong". A node
# that shuts down cancels the calls it has not answered yet (CANCELLED); a call this client
# cancels raises asyncio.CancelledError instead, and is never retried.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
    }
)
# What a call says when it could not reach the server at all.
UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
# A subscription stream that ends with one of these moves to another node and resumes.
RESUMABLE = RETRYABLE | {grpc.StatusCode.RESOURCE_EXHAUSTED}

FIRST_BACKOFF = 0.02
MAX_BACKOFF = 0.3
# One attempt may not eat the whole budget: a hung node must leave time to try the next one.
ATTEMPT_TIMEOUT = 3.0

NO_CHAIN = "no chain: no data node is serving (is `mboard up` running?)"


class BoardError(Exception):
    """A call failed for good: ``code`` is the gRPC status, ``message`` the server's words."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    @classmethod
    def of(cls, exc: grpc.aio.AioRpcError) -> BoardError:
        """The failure a gRPC error reports, in the server's words."""
        return cls(exc.code(), exc.details() or "")


class _Transient(BoardError):
    """A failure worth retrying; it reaches the caller only once the time is up."""


class Client:
    """A connection to an mboard cluster; use ``async with Client(...) as c:``.

    Channels are created on first use and belong to the event loop that made them, so one
    Client must stay on one loop.
    """

    def __init__(self, control: str = DEFAULT_CONTROL, timeout: float = 10.0) -> None:
        self.control = control
        self.timeout = timeout
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._boards: dict[str, pb_grpc.MessageBoardStub] = {}
        self._state: pb.GetClusterStateResponse | None = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        self._boards.clear()
        for channel in channels.values():
            await channel.close()

    def _channel(self, address: str) -> grpc.aio.Channel:
        """The one channel to ``address``, created on first use."""
        if address not in self._channels:
            self._channels[address] = grpc_util.channel(address)
        return self._channels[address]

    # ------------------------------------------------------------------ writes (head)

    async def create_user(self, name: str) -> pb.User:
        return await self._write("CreateUser", pb.CreateUserRequest(name=name))

    async def create_topic(self, name: str) -> pb.Topic:
        return await self._write("CreateTopic", pb.CreateTopicRequest(name=name))

    async def post(self, topic_id: int, user_id: int, text: str) -> pb.Message:
        request = pb.PostMessageRequest(topic_id=topic_id, user_id=user_id, text=text)
        return await self._write("PostMessage", request)

    async def update(self, topic_id: int, message_id: int, user_id: int, text: str) -> pb.Message:
        request = pb.UpdateMessageRequest(
            topic_id=topic_id, message_id=message_id, user_id=user_id, text=text
        )
        return await self._write("UpdateMessage", request)

    async def delete(self, topic_id: int, message_id: int, user_id: int) -> empty_pb2.Empty:
        request = pb.DeleteMessageRequest(topic_id=topic_id, message_id=message_id, user_id=user_id)
        return await self._write("DeleteMessage", request)

    async def like(self, topic_id: int, message_id: int, user_id: int) -> pb.Message:
        request = pb.LikeMessageRequest(topic_id=topic_id, message_id=message_id, user_id=user_id)
        return await self._write("LikeMessage", request)

    async def get_subscription_node(
        self, user_id: int, topic_ids: Sequence[int]
    ) -> pb.SubscriptionNodeResponse:
        request = pb.SubscriptionNodeRequest(user_id=user_id, topic_id=list(topic_ids))
        return await self._call("head", "GetSubscriptionNode", request)

    # ------------------------------------------------------------------- reads (tail)

    async def get_user(self, user_id: int) -> pb.User:
        return await self._call("tail", "GetUser", pb.GetUserRequest(user_id=user_id))

    async def list_topics(self) -> list[pb.Topic]:
        reply = await self._call("tail", "ListTopics", empty_pb2.Empty())
        return list(reply.topics)

    async def get_messages(
        self, topic_id: int, from_message_id: int = 0, limit: int = 0
    ) -> list[pb.Message]:
        request = pb.GetMessagesRequest(
            topic_id=topic_id, from_message_id=from_message_id, limit=limit
        )
        reply = await self._call("tail", "GetMessages", request)
        return list(reply.messages)

    # ------------------------------------------------------------------- cluster state

    async def cluster_state(self) -> pb.GetClusterStateResponse:
        """Ask the control plane for the chain now (and remember the answer)."""

        async def attempt(timeout: float) -> pb.GetClusterStateResponse:
            self._state = None
            return await self._cluster_state(timeout)

        return await self._retrying(attempt)

    async def _cluster_state(self, timeout: float) -> pb.GetClusterStateResponse:
        if self._state is None:
            stub = pb_grpc.ControlPlaneStub(self._channel(self.control))
            with self._control_errors():
                self._state = await stub.GetClusterState(empty_pb2.Empty(), timeout=timeout)
        return self._state

    async def control_status(self) -> cluster_pb2.ClusterStatus:
        """The control plane's view of every member (internal Control.GetStatus)."""
        stub = cluster_pb2_grpc.ControlStub(self._channel(self.control))

        async def attempt(timeout: float) -> cluster_pb2.ClusterStatus:
            with self._control_errors():
                return await stub.GetStatus(empty_pb2.Empty(), timeout=timeout)

        return await self._retrying(attempt)

    async def restart_chain(self, node_id: str) -> cluster_pb2.RestartChainReply:
        """Start the stalled chain from the waiting ``node_id`` (Control.RestartChain).

        One attempt: a retry after a success would only hear that the chain is running.
        """
        stub = cluster_pb2_grpc.ControlStub(self._channel(self.control))
        request = cluster_pb2.RestartChainRequest(node_id=node_id)
        with self._control_errors():
            return await stub.RestartChain(request, timeout=self.timeout)

    async def node_status(self, address: str, timeout: float) -> cluster_pb2.NodeStatus:
        """One node's own live view (internal Node.Status), one attempt, no retries."""
        stub = cluster_pb2_grpc.NodeStub(self._channel(address))
        try:
            return await stub.Status(cluster_pb2.StatusRequest(), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise BoardError.of(exc) from None

    @contextlib.contextmanager
    def _control_errors(self) -> Iterator[None]:
        """Name the control plane when it cannot be reached (and keep that retryable)."""
        try:
            yield
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:  # something else listens there
                raise BoardError(
                    exc.code(),
                    f"{self.control} is not an mboard control plane (a node's address?)",
                ) from None
            if exc.code() not in UNREACHABLE:
                raise BoardError.of(exc) from None
            message = f"cannot reach the control plane at {self.control}"
            raise _Transient(grpc.StatusCode.UNAVAILABLE, message) from None

    # ------------------------------------------------------------------ the retry loop

    async def _retrying(self, attempt: Callable[[float], Awaitable[T]]) -> T:
        """Run ``attempt(per_attempt_timeout)`` until it succeeds or the client's timeout is up.

        Retryable failures (see RETRYABLE, no chain, control plane unreachable) forget the
        cached chain, back off with jitter and try again; anything else raises BoardError at
        once. When time runs out the last failure is raised as a BoardError.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        backoff = FIRST_BACKOFF
        while True:
            try:
                return await attempt(min(deadline - loop.time(), ATTEMPT_TIMEOUT))
            except grpc.aio.AioRpcError as exc:
                error = BoardError.of(exc)
                if exc.code() not in RETRYABLE:
                    raise error from None
            except _Transient as exc:
                error = exc
            self._state = None  # the chain may have moved: ask the control plane again
            pause = random.uniform(backoff / 2, backoff)
            if loop.time() + pause >= deadline:
                raise BoardError(error.code, error.message) from None
            await asyncio.sleep(pause)
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _call(
        self,
        role: str,
        method: str,
        request: object,
        metadata: tuple[tuple[str, str], ...] = (),
    ):
        async def attempt(timeout: float):
            address = await self._address(role, timeout)
            call = getattr(self._board(address), method)
            return await call(request, timeout=timeout, metadata=metadata)

        return await self._retrying(attempt)

    async def _write(self, method: str, request: object):
        # One id for every attempt of this write: a new head answers a retry with the
        # original result instead of applying it twice.
        metadata = (("x-request-id", str(uuid.uuid4())),)
        return await self._call("head", method, request, metadata)

    async def _address(self, role: str, timeout: float) -> str:
        state = await self._cluster_state(timeout)
        if not state.head.address:
            raise _Transient(grpc.StatusCode.UNAVAILABLE, NO_CHAIN)
        return state.head.address if role == "head" else state.tail.address

    def _board(self, address: str) -> pb_grpc.MessageBoardStub:
        if address not in self._boards:
            self._boards[address] = pb_grpc.MessageBoardStub(self._channel(address))
        return self._boards[address]

    # -------------------------------------------------------------------- subscriptions

    async def subscribe(
        self,
        user_id: int,
        topic_ids: Sequence[int],
        from_message_id: int = 0,
        on_move: Callable[[str], None] | None = None,
        on_open: Callable[[], None] | None = None,
    ) -> AsyncIterator[pb.MessageEvent]:
        """Yield the events of ``topic_ids``, following the subscription across nodes.

        ``on_open`` is called once, when a node first accepted the subscription (a missing
        user or topic fails before). When the serving node goes away (or drops us), the head
        names a new node and the stream resumes after the last event seen; ``on_move`` hears
        about each move. Gives up with BoardError after ``timeout`` seconds of failed
        resumptions without an event.
        """
        loop = asyncio.get_running_loop()
        last_seq = 0
        failing_since = loop.time()
        while True:
            grant = await self.get_subscription_node(user_id, topic_ids)
            request = pb.SubscribeTopicRequest(
                topic_id=list(topic_ids),
                user_id=user_id,
                from_message_id=from_message_id,
                subscribe_token=grant.subscribe_token,
                from_sequence=last_seq,
            )
            opened = loop.time()
            got_event = False
            call = self._board(grant.node.address).SubscribeTopic(request)
            try:
                if on_open:
                    await call.initial_metadata()  # a node sends it once it accepted us
                    if not call.done():  # else it refused: the error comes below
                        on_open()
                        on_open = None
                async for event in call:
                    got_event = True
                    last_seq = event.sequence_number
                    yield event
                reason = "the stream ended"
            except grpc.aio.AioRpcError as exc:
                if not _resumable(exc):
                    raise BoardError.of(exc) from None
                reason = f"{exc.code().name}: {exc.details()}"
            finally:
                call.cancel()
            now = loop.time()
            # A stream that delivered or lived long was healthy; a run of quick failures
            # longer than the timeout means nothing can serve us.
            if got_event or now - opened >= self.timeout:
                failing_since = now
            elif now - failing_since >= self.timeout:
                raise BoardError(grpc.StatusCode.UNAVAILABLE, f"subscription lost: {reason}")
            self._state = None
            if on_move:
                node = f"{grant.node.node_id} ({grant.node.address})"
                on_move(f"subscription on {node} lost ({reason}); resuming after seq {last_seq}")
            await asyncio.sleep(random.uniform(FIRST_BACKOFF, MAX_BACKOFF))


def _resumable(exc: grpc.aio.AioRpcError) -> bool:
    if exc.code() in RESUMABLE:
        return True
    # An expired token is renewed by asking the head again; a forged one is final.
    return exc.code() == grpc.StatusCode.PERMISSION_DENIED and "expired" in (exc.details() or "")
