"""The client's commands, shared by ``mboard client COMMAND`` and the shell.

A command line is a list of words (the shell splits on whitespace, like the original client).
``parse`` turns it into an Invocation or raises UsageError; ``execute`` runs it and prints the
result, in the original client's words or as JSON. Formatting is plain functions of the result.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import click
from google.protobuf import json_format
from google.protobuf.message import Message as ProtoMessage

from mboard.api import razpravljalnica_pb2 as pb
from mboard.client import status
from mboard.client.core import Client

# Parameters holding words, not integers. The last one on a line takes all remaining words,
# joined by single spaces (`post 1 1 Hello everyone!`, `create-user Alice Smith`).
TEXT_PARAMS = frozenset({"name", "text"})
# Integers go out as the API's int64 fields, but for these int32 ones.
INT32_PARAMS = frozenset({"limit"})
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


class UsageError(Exception):
    """A malformed command line; the message is one line naming the bad argument."""


@dataclass(frozen=True)
class Param:
    name: str
    optional: bool
    rest: bool  # takes all remaining words

    @property
    def text(self) -> bool:
        return self.name in TEXT_PARAMS

    @classmethod
    def from_usage(cls, token: str) -> Param:
        """``<id>`` is required, ``[id]`` optional, a ``...`` suffix takes the rest."""
        name = token[1:-1]
        return cls(name.removesuffix("..."), token.startswith("["), name.endswith("..."))


@dataclass(frozen=True)
class Command:
    usage: str  # exactly as API.md §2 writes it; the parameters are read from it
    summary: str
    run: Callable[..., Any]  # (client, *args) -> awaitable result, or async iterator if streams
    human: Callable[..., str]  # (result, *args) -> the original client's lines
    streams: bool = False
    # (*args) -> the line a stream prints once it is open (run gets an on_open callback)
    banner: Callable[..., str] | None = None

    @property
    def name(self) -> str:
        return self.usage.split()[0]

    @property
    def params(self) -> list[Param]:
        return [Param.from_usage(token) for token in self.usage.split()[1:]]


@dataclass(frozen=True)
class Invocation:
    command: Command
    args: tuple


# ----------------------------------------------------------------- human output


def created_user(user: pb.User, *_: object) -> str:
    return f"Created user: ID={user.id}, Name={user.name}"


def created_topic(topic: pb.Topic, *_: object) -> str:
    return f"Created topic: ID={topic.id}, Name={topic.name}"


def posted(message: pb.Message, *_: object) -> str:
    return f"Posted message: ID={message.id}, User={message.user_id}, Likes={message.likes}"


def updated(message: pb.Message, *_: object) -> str:
    return f"Updated message: ID={message.id}, Text={message.text}"


def deleted(_reply: object, _topic_id: int, message_id: int, _user_id: int) -> str:
    return f"Deleted message: ID={message_id}"


def liked(message: pb.Message, *_: object) -> str:
    return f"Liked message: ID={message.id}, Likes={message.likes}"


def user(found: pb.User, *_: object) -> str:
    return f"User: ID={found.id}, Name={found.name}"


def topics(reply: pb.ListTopicsResponse, *_: object) -> str:
    return "\n".join(["Topics:", *(f"  [{t.id}] {t.name}" for t in reply.topics)])


def messages(reply: pb.GetMessagesResponse, topic_id: int, *_: object) -> str:
    lines = [f"  [{m.id}] User {m.user_id}: {m.text} (Likes: {m.likes})" for m in reply.messages]
    return "\n".join([f"Messages in topic {topic_id}:", *lines])


def subscribed(_user_id: int, topic_id: int, more: Sequence[int] = ()) -> str:
    # Go's %v of a slice: [1 2]
    listed = " ".join(str(t) for t in [topic_id, *more])
    return f"Subscribed to topics [{listed}]. Waiting for events (Ctrl+C to stop)..."


def event(e: pb.MessageEvent, *_: object) -> str:
    op = pb.OpType.Name(e.op).removeprefix("OP_")
    m = e.message
    return (
        f"[{op}] Seq={e.sequence_number}, Msg ID={m.id}, User={m.user_id}, "
        f"Text={m.text}, Likes={m.likes}"
    )


# ----------------------------------------------------------------- JSON output


def to_json(result: ProtoMessage | status.ClusterView) -> str:
    """One JSON object on one line: proto3 JSON with field names as in the .proto."""
    if isinstance(result, status.ClusterView):
        data = result.to_dict()
    else:
        data = json_format.MessageToDict(
            result,
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
            unquote_int64_if_possible=True,  # ids as numbers, not strings
        )
    return json.dumps(data, ensure_ascii=False)


def error_line(exc: Exception) -> str:
    """``error: <what>`` on one line, whatever the server put in its message."""
    return "error: " + " ".join(str(exc).split())


# ----------------------------------------------------------------- the commands


async def _list_topics(client: Client) -> pb.ListTopicsResponse:
    return pb.ListTopicsResponse(topics=await client.list_topics())


async def _get_messages(
    client: Client, topic_id: int, from_id: int = 0, limit: int = 0
) -> pb.GetMessagesResponse:
    return pb.GetMessagesResponse(messages=await client.get_messages(topic_id, from_id, limit))


def _subscribe(
    client: Client,
    user_id: int,
    topic_id: int,
    more: Sequence[int] = (),
    on_open: Callable[[], None] | None = None,
):
    def moved(note: str) -> None:
        click.echo(note, err=True)

    return client.subscribe(user_id, [topic_id, *more], on_move=moved, on_open=on_open)


_COMMANDS = [
    Command("create-user <name>", "Create a user", Client.create_user, created_user),
    Command("create-topic <name>", "Create a topic", Client.create_topic, created_topic),
    Command("post <topic_id> <user_id> <text...>", "Post a message", Client.post, posted),
    Command(
        "update <topic_id> <message_id> <user_id> <text...>",
        "Change your message's text",
        Client.update,
        updated,
    ),
    Command(
        "delete <topic_id> <message_id> <user_id>", "Delete your message", Client.delete, deleted
    ),
    Command("like <topic_id> <message_id> <user_id>", "Like a message", Client.like, liked),
    Command("list-topics", "List all topics", _list_topics, topics),
    Command(
        "get-messages <topic_id> [from_id] [limit]",
        "Messages of a topic (from message id, at most limit)",
        _get_messages,
        messages,
    ),
    Command("get-user <user_id>", "Show a user", Client.get_user, user),
    Command(
        "subscribe <user_id> <topic_id> [topic_id...]",
        "Follow topics live until Ctrl+C",
        _subscribe,
        event,
        streams=True,
        banner=subscribed,
    ),
    Command("status", "The cluster at a glance", status.gather, status.format_table),
]
COMMANDS = {command.name: command for command in _COMMANDS}


def usage_lines(extra: Sequence[tuple[str, str]] = ()) -> list[str]:
    """``usage  summary`` lines, aligned, one per command, then the ``extra`` pairs."""
    entries = [(c.usage, c.summary) for c in _COMMANDS] + list(extra)
    width = max(len(usage) for usage, _ in entries)
    return [f"{usage.ljust(width)}  {summary}" for usage, summary in entries]


HELP_FLAGS = frozenset({"--help", "-h"})


def usage_of(name: str) -> str | None:
    """The usage and summary of command ``name``, or None if there is no such command."""
    command = COMMANDS.get(name)
    return None if command is None else f"usage: {command.usage}\n  {command.summary}"


def help_for(words: Sequence[str]) -> str | None:
    """One command's usage when ``words`` ask for it (``post --help``), else None.

    Only the word right after the command asks: ``post 1 1 see --help`` posts that text.
    """
    if len(words) < 2 or words[1] not in HELP_FLAGS:
        return None
    return usage_of(words[0])


def parse(words: Sequence[str]) -> Invocation:
    """Turn ``["post", "1", "2", "Hi", "there"]`` into an Invocation, or raise UsageError."""
    names = ", ".join(COMMANDS)
    if not words:
        raise UsageError(f"missing command (one of: {names})")
    name, *rest = words
    command = COMMANDS.get(name)
    if command is None:
        raise UsageError(f"unknown command {name!r} (one of: {names})")
    params = command.params
    args: list[Any] = []
    for i, param in enumerate(params):
        takes_rest = param.rest or (param.text and i == len(params) - 1)
        chunk, rest = (rest, []) if takes_rest else (rest[:1], rest[1:])
        if not chunk:
            if param.optional:
                break
            raise UsageError(f"{name}: missing <{param.name}> (usage: {command.usage})")
        if param.text:
            args.append(" ".join(chunk))
        elif param.rest:
            args.append([_integer(name, param, word) for word in chunk])
        else:
            args.append(_integer(name, param, chunk[0]))
    if rest:
        raise UsageError(f"{name}: unexpected argument {rest[0]!r} (usage: {command.usage})")
    return Invocation(command, tuple(args))


def _integer(command: str, param: Param, word: str) -> int:
    try:
        value = int(word)
    except ValueError:
        raise UsageError(f"{command}: {param.name} must be an integer, got {word!r}") from None
    low, high = _INT32 if param.name in INT32_PARAMS else _INT64
    if not low <= value <= high:
        bound = f"at most {high}" if value > high else f"at least {low}"
        raise UsageError(f"{command}: {param.name} is out of range ({bound}), got {word}")
    return value


async def execute(client: Client, invocation: Invocation, as_json: bool = False) -> None:
    """Run one command and print its result on stdout (events one per line as they come)."""
    command, args = invocation.command, invocation.args

    def show(result: Any) -> None:
        click.echo(to_json(result) if as_json else command.human(result, *args))

    if not command.streams:
        show(await command.run(client, *args))
        return

    def opened() -> None:
        if command.banner and not as_json:
            click.echo(command.banner(*args))

    async for item in command.run(client, *args, on_open=opened):
        show(item)
