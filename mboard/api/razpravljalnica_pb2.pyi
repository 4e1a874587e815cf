import datetime

from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OpType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OP_POST: _ClassVar[OpType]
    OP_LIKE: _ClassVar[OpType]
    OP_DELETE: _ClassVar[OpType]
    OP_UPDATE: _ClassVar[OpType]
OP_POST: OpType
OP_LIKE: OpType
OP_DELETE: OpType
OP_UPDATE: OpType

class User(_message.Message):
    __slots__ = ("id", "name")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ...) -> None: ...

class Topic(_message.Message):
    __slots__ = ("id", "name")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("id", "topic_id", "user_id", "text", "created_at", "likes")
    ID_FIELD_NUMBER: _ClassVar[int]
    TOPIC_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LIKES_FIELD_NUMBER: _ClassVar[int]
    id: int
    topic_id: int
    user_id: int
    text: str
    created_at: _timestamp_pb2.Timestamp
    likes: int
    def __init__(self, id: _Optional[int] = ..., topic_id: _Optional[int] = ..., user_id: _Optional[int] = ..., text: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., likes: _Optional[int] = ...) -> None: ...

class Like(_message.Message):
    __slots__ = ("topic_id", "message_id", "user_id")
    TOPIC_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    topic_id: int
    message_id: int
    user_id: int
    def __init__(self, topic_id: _Optional[int] = ..., message_id: _Optional[int] = ..., user_id: _Optional[int] = ...) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("node_id", "address")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    address: str
    def __init__(self, node_id: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class CreateUserRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class CreateTopicRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class PostMessageRequest(_message.Message):
    __slots__ = ("topic_id", "user_id", "text")
    TOPIC_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    topic_id: int
    user_id: int
    text: str
    def __init__(self, topic_id: _Optional[int] = ..., user_id: _Optional[int] = ..., text: _Optional[str] = ...) -> None: ...

class DeleteMessageRequest(_message.Message):
    __slots__ = ("topic_id", "user_id", "message_id")
    TOPIC_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    topic_id: int
    user_id: int
    message_id: int
    def __init__(self, topic_id: _Optional[int] = ..., user_id: _Optional[int] = ..., message_id: _Optional[int] = ...) -> None: ...

class UpdateMessageRequest(_message.Message):
    __slots__ = ("topic_id", "user_id", "message_id", "text")
    TOPIC_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    topic_id: int
    user_id: int
    message_id: int
    text: str
    def __init__(self, topic_id: _Optional[int] = ..., user_id: _Optional[int] = ..., message_id: _Optional[int] = ..., text: _Optional[str] = ...) -> None: ...

class LikeMessageRequest(_message.Message):
    __slots__ = ("topic_id", "message_id", "user_id")
    TOPIC_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    topic_id: int
    message_id: int
    user_id: int
    def __init__(self, topic_id: _Optional[int] = ..., message_id: _Optional[int] = ..., user_id: _Optional[int] = ...) -> None: ...

class ListTopicsResponse(_message.Message):
    __slots__ = ("topics",)
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    topics: _containers.RepeatedCompositeFieldContainer[Topic]
    def __init__(self, topics: _Optional[_Iterable[_Union[Topic, _Mapping]]] = ...) -> None: ...

class GetMessagesRequest(_message.Message):
    __slots__ = ("topic_id", "from_message_id", "limit")
    TOPIC_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    topic_id: int
    from_message_id: int
    limit: int
    def __init__(self, topic_id: _Optional[int] = ..., from_message_id: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class GetMessagesResponse(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    def __init__(self, messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ...) -> None: ...

class SubscribeTopicRequest(_message.Message):
    __slots__ = ("topic_id", "user_id", "from_message_id", "subscribe_token", "from_sequence")
    TOPIC_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FROM_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    topic_id: _containers.RepeatedScalarFieldContainer[int]
    user_id: int
    from_message_id: int
    subscribe_token: str
    from_sequence: int
    def __init__(self, topic_id: _Optional[_Iterable[int]] = ..., user_id: _Optional[int] = ..., from_message_id: _Optional[int] = ..., subscribe_token: _Optional[str] = ..., from_sequence: _Optional[int] = ...) -> None: ...

class SubscriptionNodeRequest(_message.Message):
    __slots__ = ("user_id", "topic_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TOPIC_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: int
    topic_id: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, user_id: _Optional[int] = ..., topic_id: _Optional[_Iterable[int]] = ...) -> None: ...

class SubscriptionNodeResponse(_message.Message):
    __slots__ = ("subscribe_token", "node")
    SUBSCRIBE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    subscribe_token: str
    node: NodeInfo
    def __init__(self, subscribe_token: _Optional[str] = ..., node: _Optional[_Union[NodeInfo, _Mapping]] = ...) -> None: ...

class MessageEvent(_message.Message):
    __slots__ = ("sequence_number", "op", "message", "event_at")
    SEQUENCE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EVENT_AT_FIELD_NUMBER: _ClassVar[int]
    sequence_number: int
    op: OpType
    message: Message
    event_at: _timestamp_pb2.Timestamp
    def __init__(self, sequence_number: _Optional[int] = ..., op: _Optional[_Union[OpType, str]] = ..., message: _Optional[_Union[Message, _Mapping]] = ..., event_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetUserRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: int
    def __init__(self, user_id: _Optional[int] = ...) -> None: ...

class GetClusterStateResponse(_message.Message):
    __slots__ = ("head", "tail", "chain", "epoch")
    HEAD_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    CHAIN_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    head: NodeInfo
    tail: NodeInfo
    chain: _containers.RepeatedCompositeFieldContainer[NodeInfo]
    epoch: int
    def __init__(self, head: _Optional[_Union[NodeInfo, _Mapping]] = ..., tail: _Optional[_Union[NodeInfo, _Mapping]] = ..., chain: _Optional[_Iterable[_Union[NodeInfo, _Mapping]]] = ..., epoch: _Optional[int] = ...) -> None: ...
