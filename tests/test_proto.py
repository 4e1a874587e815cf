"""The generated code matches proto/, and the public proto keeps the contract of API.md §1.

The contract is checked on the descriptors the running code uses, so a renumbered, retyped
or renamed field fails here before any Go client notices. Additions (new fields, messages
and methods) are allowed; changes are not.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from mboard.api import razpravljalnica_pb2 as pb
from mboard.api.generate import API_DIR, generate

# API.md §1, message by message: field=number:type.
MESSAGES = {
    "User": "id=1:int64, name=2:string",
    "Topic": "id=1:int64, name=2:string",
    "Message": "id=1:int64, topic_id=2:int64, user_id=3:int64, text=4:string, "
    "created_at=5:google.protobuf.Timestamp, likes=6:int32",
    "Like": "topic_id=1:int64, message_id=2:int64, user_id=3:int64",
    "NodeInfo": "node_id=1:string, address=2:string",
    "CreateUserRequest": "name=1:string",
    "CreateTopicRequest": "name=1:string",
    "PostMessageRequest": "topic_id=1:int64, user_id=2:int64, text=3:string",
    "DeleteMessageRequest": "topic_id=1:int64, user_id=2:int64, message_id=3:int64",
    "UpdateMessageRequest": "topic_id=1:int64, user_id=2:int64, message_id=3:int64, text=4:string",
    "LikeMessageRequest": "topic_id=1:int64, message_id=2:int64, user_id=3:int64",
    "ListTopicsResponse": "topics=1:repeated Topic",
    "GetMessagesRequest": "topic_id=1:int64, from_message_id=2:int64, limit=3:int32",
    "GetMessagesResponse": "messages=1:repeated Message",
    "SubscribeTopicRequest": "topic_id=1:repeated int64, user_id=2:int64, "
    "from_message_id=3:int64, subscribe_token=4:string, from_sequence=5:int64",
    "SubscriptionNodeRequest": "user_id=1:int64, topic_id=2:repeated int64",
    "SubscriptionNodeResponse": "subscribe_token=1:string, node=2:NodeInfo",
    "MessageEvent": "sequence_number=1:int64, op=2:OpType, message=3:Message, "
    "event_at=4:google.protobuf.Timestamp",
    "GetClusterStateResponse": "head=1:NodeInfo, tail=2:NodeInfo, chain=3:repeated NodeInfo",
    "GetUserRequest": "user_id=1:int64",
}
OP_TYPE = {"OP_POST": 0, "OP_LIKE": 1, "OP_DELETE": 2, "OP_UPDATE": 3}
# service -> method -> (request, response), a stream marked as in the .proto
SERVICES = {
    "MessageBoard": {
        "CreateUser": ("CreateUserRequest", "User"),
        "CreateTopic": ("CreateTopicRequest", "Topic"),
        "PostMessage": ("PostMessageRequest", "Message"),
        "UpdateMessage": ("UpdateMessageRequest", "Message"),
        "DeleteMessage": ("DeleteMessageRequest", "google.protobuf.Empty"),
        "LikeMessage": ("LikeMessageRequest", "Message"),
        "GetSubscriptionNode": ("SubscriptionNodeRequest", "SubscriptionNodeResponse"),
        "ListTopics": ("google.protobuf.Empty", "ListTopicsResponse"),
        "GetMessages": ("GetMessagesRequest", "GetMessagesResponse"),
        "SubscribeTopic": ("SubscribeTopicRequest", "stream MessageEvent"),
        "GetUser": ("GetUserRequest", "User"),
    },
    "ControlPlane": {
        "GetClusterState": ("google.protobuf.Empty", "GetClusterStateResponse"),
    },
}
_FIELD = re.compile(r"(\w+)=(\d+):((?:repeated )?[\w.]+)")
_SCALARS = {
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_STRING: "string",
}


def _short(full_name: str) -> str:
    """Names in our package without it (``Topic``); others in full (``google.protobuf.X``)."""
    return full_name.removeprefix(f"{pb.DESCRIPTOR.package}.")


def _streamed(message: Descriptor, stream: bool) -> str:
    return f"stream {_short(message.full_name)}" if stream else _short(message.full_name)


def _field_type(field: FieldDescriptor) -> str:
    if field.message_type is not None:
        name = _short(field.message_type.full_name)
    elif field.enum_type is not None:
        name = _short(field.enum_type.full_name)
    else:
        name = _SCALARS.get(field.type, f"type {field.type}")
    return f"repeated {name}" if field.is_repeated else name


def _fields(message: Descriptor) -> dict[str, tuple[int, str]]:
    return {f.name: (f.number, _field_type(f)) for f in message.fields}


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    written = generate(out_dir=tmp_path)
    assert written, "generate() wrote nothing"
    for fresh in written:
        committed = API_DIR / fresh.name
        assert committed.exists(), f"{committed.name} is missing: run `make proto`"
        assert committed.read_text() == fresh.read_text(), (
            f"mboard/api/{fresh.name} is stale: run `make proto` and commit the result"
        )


def test_package_and_imports() -> None:
    assert pb.DESCRIPTOR.package == "razpravljalnica"
    imports = {dependency.name for dependency in pb.DESCRIPTOR.dependencies}
    assert imports == {"google/protobuf/empty.proto", "google/protobuf/timestamp.proto"}


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_message_keeps_its_fields(name: str) -> None:
    message = pb.DESCRIPTOR.message_types_by_name.get(name)
    assert message is not None, f"message {name} is gone"
    expected = {
        field: (int(number), kind) for field, number, kind in _FIELD.findall(MESSAGES[name])
    }
    assert len(expected) == MESSAGES[name].count("=")  # the table itself parsed whole
    actual = _fields(message)
    # New fields may be added; the contract's fields keep name, number and type.
    assert {field: actual.get(field) for field in expected} == expected


def test_op_type_values() -> None:
    values = {v.name: v.number for v in pb.DESCRIPTOR.enum_types_by_name["OpType"].values}
    assert {name: values.get(name) for name in OP_TYPE} == OP_TYPE


@pytest.mark.parametrize("service_name", sorted(SERVICES))
def test_service_keeps_its_methods(service_name: str) -> None:
    service = pb.DESCRIPTOR.services_by_name.get(service_name)
    assert service is not None, f"service {service_name} is gone"
    actual = {
        m.name: (
            _streamed(m.input_type, m.client_streaming),
            _streamed(m.output_type, m.server_streaming),
        )
        for m in service.methods
    }
    expected = SERVICES[service_name]
    assert {name: actual.get(name) for name in expected} == expected
