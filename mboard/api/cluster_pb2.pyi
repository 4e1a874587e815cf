import datetime

from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from . import razpravljalnica_pb2 as _razpravljalnica_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EntryKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENTRY_KIND_UNSPECIFIED: _ClassVar[EntryKind]
    CREATE_USER: _ClassVar[EntryKind]
    CREATE_TOPIC: _ClassVar[EntryKind]
    POST: _ClassVar[EntryKind]
    UPDATE: _ClassVar[EntryKind]
    DELETE: _ClassVar[EntryKind]
    LIKE: _ClassVar[EntryKind]
ENTRY_KIND_UNSPECIFIED: EntryKind
CREATE_USER: EntryKind
CREATE_TOPIC: EntryKind
POST: EntryKind
UPDATE: EntryKind
DELETE: EntryKind
LIKE: EntryKind

class Entry(_message.Message):
    __slots__ = ("seq", "epoch", "request_id", "kind", "at", "user", "topic", "message", "liker_id")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LIKER_ID_FIELD_NUMBER: _ClassVar[int]
    seq: int
    epoch: int
    request_id: str
    kind: EntryKind
    at: _timestamp_pb2.Timestamp
    user: _razpravljalnica_pb2.User
    topic: _razpravljalnica_pb2.Topic
    message: _razpravljalnica_pb2.Message
    liker_id: int
    def __init__(self, seq: _Optional[int] = ..., epoch: _Optional[int] = ..., request_id: _Optional[str] = ..., kind: _Optional[_Union[EntryKind, str]] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., user: _Optional[_Union[_razpravljalnica_pb2.User, _Mapping]] = ..., topic: _Optional[_Union[_razpravljalnica_pb2.Topic, _Mapping]] = ..., message: _Optional[_Union[_razpravljalnica_pb2.Message, _Mapping]] = ..., liker_id: _Optional[int] = ...) -> None: ...

class ChainConfig(_message.Message):
    __slots__ = ("epoch", "chain", "learners")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    CHAIN_FIELD_NUMBER: _ClassVar[int]
    LEARNERS_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    chain: _containers.RepeatedCompositeFieldContainer[_razpravljalnica_pb2.NodeInfo]
    learners: _containers.RepeatedCompositeFieldContainer[_razpravljalnica_pb2.NodeInfo]
    def __init__(self, epoch: _Optional[int] = ..., chain: _Optional[_Iterable[_Union[_razpravljalnica_pb2.NodeInfo, _Mapping]]] = ..., learners: _Optional[_Iterable[_Union[_razpravljalnica_pb2.NodeInfo, _Mapping]]] = ...) -> None: ...

class Handshake(_message.Message):
    __slots__ = ("epoch", "sender_id", "last_seq", "committed_seq")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_SEQ_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    sender_id: str
    last_seq: int
    committed_seq: int
    def __init__(self, epoch: _Optional[int] = ..., sender_id: _Optional[str] = ..., last_seq: _Optional[int] = ..., committed_seq: _Optional[int] = ...) -> None: ...

class EntryBatch(_message.Message):
    __slots__ = ("entries", "committed_seq", "sender_epoch")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_SEQ_FIELD_NUMBER: _ClassVar[int]
    SENDER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedScalarFieldContainer[bytes]
    committed_seq: int
    sender_epoch: int
    def __init__(self, entries: _Optional[_Iterable[bytes]] = ..., committed_seq: _Optional[int] = ..., sender_epoch: _Optional[int] = ...) -> None: ...

class Truncate(_message.Message):
    __slots__ = ("to_seq",)
    TO_SEQ_FIELD_NUMBER: _ClassVar[int]
    to_seq: int
    def __init__(self, to_seq: _Optional[int] = ...) -> None: ...

class ReplicateRequest(_message.Message):
    __slots__ = ("handshake", "batch", "truncate")
    HANDSHAKE_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_FIELD_NUMBER: _ClassVar[int]
    handshake: Handshake
    batch: EntryBatch
    truncate: Truncate
    def __init__(self, handshake: _Optional[_Union[Handshake, _Mapping]] = ..., batch: _Optional[_Union[EntryBatch, _Mapping]] = ..., truncate: _Optional[_Union[Truncate, _Mapping]] = ...) -> None: ...

class HandshakeReply(_message.Message):
    __slots__ = ("accepted", "reason", "last_seq", "last_epoch", "committed_seq")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_EPOCH_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_SEQ_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    reason: str
    last_seq: int
    last_epoch: int
    committed_seq: int
    def __init__(self, accepted: _Optional[bool] = ..., reason: _Optional[str] = ..., last_seq: _Optional[int] = ..., last_epoch: _Optional[int] = ..., committed_seq: _Optional[int] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("applied_seq", "committed_seq")
    APPLIED_SEQ_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_SEQ_FIELD_NUMBER: _ClassVar[int]
    applied_seq: int
    committed_seq: int
    def __init__(self, applied_seq: _Optional[int] = ..., committed_seq: _Optional[int] = ...) -> None: ...

class ReplicateResponse(_message.Message):
    __slots__ = ("reply", "ack")
    REPLY_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    reply: HandshakeReply
    ack: Ack
    def __init__(self, reply: _Optional[_Union[HandshakeReply, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ...) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("node_id", "address", "role", "epoch", "applied_seq", "committed_seq", "subscribers", "digest", "serving_reads")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    APPLIED_SEQ_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_SEQ_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBERS_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SERVING_READS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    address: str
    role: str
    epoch: int
    applied_seq: int
    committed_seq: int
    subscribers: int
    digest: str
    serving_reads: bool
    def __init__(self, node_id: _Optional[str] = ..., address: _Optional[str] = ..., role: _Optional[str] = ..., epoch: _Optional[int] = ..., applied_seq: _Optional[int] = ..., committed_seq: _Optional[int] = ..., subscribers: _Optional[int] = ..., digest: _Optional[str] = ..., serving_reads: _Optional[bool] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ("with_digest",)
    WITH_DIGEST_FIELD_NUMBER: _ClassVar[int]
    with_digest: bool
    def __init__(self, with_digest: _Optional[bool] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("node", "applied_seq")
    NODE_FIELD_NUMBER: _ClassVar[int]
    APPLIED_SEQ_FIELD_NUMBER: _ClassVar[int]
    node: _razpravljalnica_pb2.NodeInfo
    applied_seq: int
    def __init__(self, node: _Optional[_Union[_razpravljalnica_pb2.NodeInfo, _Mapping]] = ..., applied_seq: _Optional[int] = ...) -> None: ...

class RegisterReply(_message.Message):
    __slots__ = ("config", "cluster_secret", "heartbeat_interval_s", "subscribe_token_ttl_s")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_SECRET_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBE_TOKEN_TTL_S_FIELD_NUMBER: _ClassVar[int]
    config: ChainConfig
    cluster_secret: bytes
    heartbeat_interval_s: float
    subscribe_token_ttl_s: float
    def __init__(self, config: _Optional[_Union[ChainConfig, _Mapping]] = ..., cluster_secret: _Optional[bytes] = ..., heartbeat_interval_s: _Optional[float] = ..., subscribe_token_ttl_s: _Optional[float] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("node_id", "epoch", "applied_seq", "committed_seq", "subscribers", "holds_committed", "address")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    APPLIED_SEQ_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_SEQ_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBERS_FIELD_NUMBER: _ClassVar[int]
    HOLDS_COMMITTED_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    epoch: int
    applied_seq: int
    committed_seq: int
    subscribers: int
    holds_committed: bool
    address: str
    def __init__(self, node_id: _Optional[str] = ..., epoch: _Optional[int] = ..., applied_seq: _Optional[int] = ..., committed_seq: _Optional[int] = ..., subscribers: _Optional[int] = ..., holds_committed: _Optional[bool] = ..., address: _Optional[str] = ...) -> None: ...

class HeartbeatReply(_message.Message):
    __slots__ = ("config", "lease_s", "unknown")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    LEASE_S_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    config: ChainConfig
    lease_s: float
    unknown: bool
    def __init__(self, config: _Optional[_Union[ChainConfig, _Mapping]] = ..., lease_s: _Optional[float] = ..., unknown: _Optional[bool] = ...) -> None: ...

class CaughtUpRequest(_message.Message):
    __slots__ = ("epoch", "tail_id", "learner_id", "learner_applied_seq")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    TAIL_ID_FIELD_NUMBER: _ClassVar[int]
    LEARNER_ID_FIELD_NUMBER: _ClassVar[int]
    LEARNER_APPLIED_SEQ_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    tail_id: str
    learner_id: str
    learner_applied_seq: int
    def __init__(self, epoch: _Optional[int] = ..., tail_id: _Optional[str] = ..., learner_id: _Optional[str] = ..., learner_applied_seq: _Optional[int] = ...) -> None: ...

class FailureReport(_message.Message):
    __slots__ = ("epoch", "reporter_id", "suspect_id")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    REPORTER_ID_FIELD_NUMBER: _ClassVar[int]
    SUSPECT_ID_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    reporter_id: str
    suspect_id: str
    def __init__(self, epoch: _Optional[int] = ..., reporter_id: _Optional[str] = ..., suspect_id: _Optional[str] = ...) -> None: ...

class LeaveRequest(_message.Message):
    __slots__ = ("node_id", "epoch", "address")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    epoch: int
    address: str
    def __init__(self, node_id: _Optional[str] = ..., epoch: _Optional[int] = ..., address: _Optional[str] = ...) -> None: ...

class MemberStatus(_message.Message):
    __slots__ = ("node", "role", "applied_seq", "committed_seq", "subscribers", "heartbeat_age_s")
    NODE_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    APPLIED_SEQ_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_SEQ_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBERS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_AGE_S_FIELD_NUMBER: _ClassVar[int]
    node: _razpravljalnica_pb2.NodeInfo
    role: str
    applied_seq: int
    committed_seq: int
    subscribers: int
    heartbeat_age_s: float
    def __init__(self, node: _Optional[_Union[_razpravljalnica_pb2.NodeInfo, _Mapping]] = ..., role: _Optional[str] = ..., applied_seq: _Optional[int] = ..., committed_seq: _Optional[int] = ..., subscribers: _Optional[int] = ..., heartbeat_age_s: _Optional[float] = ...) -> None: ...

class RestartChainRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class RestartChainReply(_message.Message):
    __slots__ = ("config", "applied_seq", "committed_floor")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    APPLIED_SEQ_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FLOOR_FIELD_NUMBER: _ClassVar[int]
    config: ChainConfig
    applied_seq: int
    committed_floor: int
    def __init__(self, config: _Optional[_Union[ChainConfig, _Mapping]] = ..., applied_seq: _Optional[int] = ..., committed_floor: _Optional[int] = ...) -> None: ...

class ClusterStatus(_message.Message):
    __slots__ = ("config", "members", "control_address", "storage_problem")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    CONTROL_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STORAGE_PROBLEM_FIELD_NUMBER: _ClassVar[int]
    config: ChainConfig
    members: _containers.RepeatedCompositeFieldContainer[MemberStatus]
    control_address: str
    storage_problem: str
    def __init__(self, config: _Optional[_Union[ChainConfig, _Mapping]] = ..., members: _Optional[_Iterable[_Union[MemberStatus, _Mapping]]] = ..., control_address: _Optional[str] = ..., storage_problem: _Optional[str] = ...) -> None: ...
