"""gRPC servicers of a node: small classes that translate calls into ``NodeCore`` calls."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
from google.protobuf import empty_pb2
from google.protobuf.message import Message as ProtoMessage

from mboard import grpc_util
from mboard.api import cluster_pb2_grpc
from mboard.api import razpravljalnica_pb2_grpc as pb_grpc

from . import replication, subscriptions
from .board import BoardError, invalid
from .core import NodeCore
from .storage import StorageFailed

MAX_REQUEST_ID_LENGTH = 128


def request_id_of(context: grpc.aio.ServicerContext) -> str:
    """The client's ``x-request-id`` (idempotent retries), or "" when it sent none."""
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id":
            if not 0 < len(value) <= MAX_REQUEST_ID_LENGTH:
                raise invalid(f"x-request-id must be 1..{MAX_REQUEST_ID_LENGTH} characters")
            return value
    return ""


class BoardService(pb_grpc.MessageBoardServicer):
    """The public MessageBoard API: writes at the head, reads at the tail."""

    def __init__(self, core: NodeCore) -> None:
        self.core = core
        self.placer = subscriptions.SubscriptionPlacer(core)

    async def _answer(self, call: Callable[[], Awaitable], context):
        """Await ``call()``; a refusal becomes the call's status code and message."""
        try:
            return await call()
        except BoardError as error:
            await context.abort(error.code, error.message)

    async def _write(self, kind: str, request, context):
        return await self._answer(
            lambda: self.core.write(kind, request, request_id_of(context)), context
        )

    async def _read(self, fn, context):
        return await self._answer(lambda: self.core.read(fn), context)

    async def CreateUser(self, request, context):
        return await self._write("create_user", request, context)

    async def CreateTopic(self, request, context):
        return await self._write("create_topic", request, context)

    async def PostMessage(self, request, context):
        return await self._write("post_message", request, context)

    async def UpdateMessage(self, request, context):
        return await self._write("update_message", request, context)

    async def DeleteMessage(self, request, context):
        return await self._write("delete_message", request, context)

    async def LikeMessage(self, request, context):
        return await self._write("like_message", request, context)

    async def ListTopics(self, request, context):
        return await self._answer(self.core.list_topics, context)

    async def GetMessages(self, request, context):
        return await self._answer(
            lambda: self.core.get_messages(
                request.topic_id, request.from_message_id, request.limit
            ),
            context,
        )

    async def GetSubscriptionNode(self, request, context):
        return await self._answer(lambda: self.placer.place(request), context)

    async def SubscribeTopic(self, request, context):
        try:
            opened = lambda: context.send_initial_metadata(())  # noqa: E731
            async for event in subscriptions.stream(self.core, request, opened):
                yield event
        except BoardError as error:
            await context.abort(error.code, error.message)

    async def GetUser(self, request, context):
        return await self._read(lambda: self.core.board.get_user(request.user_id), context)


def _as_bytes(reply: ProtoMessage | bytes) -> bytes:
    return reply if isinstance(reply, bytes) else reply.SerializeToString()


# Methods whose replies the node serializes itself: the hub serializes each event once for
# all of its subscribers, a page of messages is joined from serialized messages kept in
# memory or stored (pages.py, board.join_page), and the list of topics is kept serialized.
PRESERIALIZED = ("SubscribeTopic", "GetMessages", "ListTopics")


def _preserialized(name: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    if name in PRESERIALIZED:
        return handler._replace(response_serializer=_as_bytes)
    return handler


def add_board_service(server: grpc.aio.Server, core: NodeCore) -> None:
    """Serve the public MessageBoard API of ``core`` on ``server``."""
    pb_grpc.add_MessageBoardServicer_to_server(
        BoardService(core), grpc_util.GenericOnly(server, adapt=_preserialized)
    )


class NodeService(cluster_pb2_grpc.NodeServicer):
    """The internal API: replication from the predecessor, config pushes, status."""

    def __init__(self, core: NodeCore) -> None:
        self.core = core

    async def Replicate(self, request_iterator, context):
        try:
            await replication.receive(self.core, context)
        except StorageFailed:  # the node stops (node/server.py); its predecessor hears why
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, f"{self.core.node_id} cannot store entries now"
            )

    async def PushConfig(self, request, context):
        self.core.apply_config(request)
        return empty_pb2.Empty()

    async def Status(self, request, context):
        status = self.core.status()
        if request.with_digest:
            status.digest = await self.core.storage.read(self.core.board.digest)
        return status
