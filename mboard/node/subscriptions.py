"""Subscriptions: signed tokens, and the hub that turns committed entries into events.

Tokens are HMAC-SHA256 over (user, topics, node, expiry) with the cluster secret, so any
node can check a token the head issued without asking anyone. The hub keeps the entries a
node applied until they are committed, then offers each event to every subscriber of its
topic, in seq order. A subscriber's queue is bounded: overflow ends that one stream and
never slows the node.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

import grpc

from mboard.api import cluster_pb2
from mboard.api import razpravljalnica_pb2 as pb

from .board import MAX_TOPICS, Board, BoardError, ReplayPage, check_id, event_of, invalid

if TYPE_CHECKING:
    from .core import NodeCore

LOAD_REFRESH = 0.5  # seconds between looks at the subscriber counts heartbeats report
HEAD_WEIGHT = 2  # a subscriber at the head counts double when placing new ones
REPLAY_PAGE = 1000  # events per page of a replay: bounds a subscription's memory


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_token(
    secret: bytes, user_id: int, topic_ids: Iterable[int], node_id: str, expires_at: float
) -> str:
    claims = {"u": user_id, "t": sorted(set(topic_ids)), "n": node_id, "e": int(expires_at)}
    payload = json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()
    signature = hmac.new(secret, payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(signature)}"


def refuse_token(
    secret: bytes, token: str, user_id: int, topic_ids: Iterable[int], node_id: str, now: float
) -> str | None:
    """Why ``token`` does not allow this subscription here, or None if it does."""
    try:
        payload_text, signature_text = token.split(".")
        payload, signature = _unb64(payload_text), _unb64(signature_text)
    except ValueError:
        return "the subscribe token is malformed"
    if not secret or not hmac.compare_digest(
        signature, hmac.new(secret, payload, hashlib.sha256).digest()
    ):
        return "the subscribe token's signature is not valid"
    claims = json.loads(payload)
    if now >= claims["e"]:
        return "the subscribe token has expired; ask the head for a new one"
    if claims["n"] != node_id:
        return f"the subscribe token is for node {claims['n']}, not {node_id}"
    if claims["u"] != user_id:
        return f"the subscribe token is for user {claims['u']}, not {user_id}"
    outside = set(topic_ids) - set(claims["t"])
    if outside:
        return f"the subscribe token does not cover topics {sorted(outside)}"
    return None


class Subscriber:
    """One stream's bounded queue of events, each as (seq, serialized MessageEvent)."""

    def __init__(self, topic_ids: Iterable[int], limit: int) -> None:
        self.topic_ids = frozenset(topic_ids)
        self.limit = limit
        self.events: deque[tuple[int, bytes]] = deque()
        self.wake = asyncio.Event()
        self.overflowed = False
        self.closed_reason: str | None = None

    def offer(self, event: tuple[int, bytes]) -> None:
        if self.overflowed or self.closed_reason:
            return
        if len(self.events) >= self.limit:
            self.overflowed = True  # the stream ends; the node goes on at full speed
            # And lets go of the queue at once: a client that stopped reading keeps its
            # stream stuck in a send for as long as it likes, and the events with it.
            self.events.clear()
        else:
            self.events.append(event)
        self.wake.set()

    def close(self, reason: str) -> None:
        self.closed_reason = reason
        self.wake.set()


class SubscriptionHub:
    """Fans committed events out to this node's subscribers, in seq order."""

    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()
        self._uncommitted: deque[cluster_pb2.Entry] = deque()

    def __len__(self) -> int:
        return len(self.subscribers)

    def add(self, subscriber: Subscriber) -> None:
        self.subscribers.add(subscriber)

    def remove(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)
        if not self.subscribers:
            self._uncommitted.clear()

    def on_applied(self, entries: Iterable[cluster_pb2.Entry]) -> None:
        # Only entries applied while someone listens are needed: a new subscriber's
        # replay covers everything up to the moment it read the board.
        if self.subscribers:
            self._uncommitted.extend(entries)

    def on_commit(self, committed_seq: int) -> None:
        while self._uncommitted and self._uncommitted[0].seq <= committed_seq:
            entry = self._uncommitted.popleft()
            event = event_of(entry)
            if event is None:
                continue
            topic_id = entry.message.topic_id
            serialized = None  # once for all subscribers, and only if someone wants it
            for subscriber in self.subscribers:
                if topic_id in subscriber.topic_ids:
                    serialized = serialized or (entry.seq, event.SerializeToString())
                    subscriber.offer(serialized)
        # An overflowed subscriber is cut off now, not when its stream next gets to run: a
        # client that stopped reading leaves its stream stuck in a write for as long as it
        # likes, and must not count as load meanwhile.
        for subscriber in [s for s in self.subscribers if s.overflowed]:
            self.remove(subscriber)

    def close_all(self, reason: str) -> None:
        """The node can no longer vouch for its events (it left the chain, or truncated)."""
        for subscriber in list(self.subscribers):
            subscriber.close(reason)
        self._uncommitted.clear()


def _checked_topics(user_id: int, topic_ids: Iterable[int]) -> list[int]:
    """A subscription request's topics, each once and ascending, once its ids are valid."""
    check_id("user_id", user_id)
    topics = sorted(set(topic_ids))
    if not topics:
        raise invalid("topic_id must list at least one topic")
    if len(topics) > MAX_TOPICS:  # more than a board holds (and SQL parameters of a replay)
        raise BoardError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"a subscription may name at most {MAX_TOPICS:,} topics, got {len(topics):,}",
        )
    check_id("topic_id", topics[0])  # the smallest
    return topics


class SubscriptionPlacer:
    """The head's choice of node for a new subscriber: the least loaded serving node.

    Loads come from the heartbeats (through the control plane) plus the subscribers this
    head placed since it last looked, so a burst of subscribers spreads out at once.
    """

    def __init__(self, core: NodeCore) -> None:
        self.core = core
        self._reported: dict[str, int] = {}
        self._placed: Counter[str] = Counter()
        self._looked_at = 0.0

    async def place(self, request: pb.SubscriptionNodeRequest) -> pb.SubscriptionNodeResponse:
        core = self.core
        topic_ids = _checked_topics(request.user_id, request.topic_id)
        core.require_head()
        await core.storage.read(lambda: core.board.require(request.user_id, topic_ids))
        if time.monotonic() - self._looked_at > LOAD_REFRESH:
            self._looked_at = time.monotonic()
            # Cleared before asking: what is placed while the answer is on its way is not
            # in it.
            self._placed.clear()
            self._reported = await core.control.subscriber_counts()
        chain = list(core.state.config.chain)
        head_id = chain[0].node_id

        def load(node: pb.NodeInfo) -> tuple[int, bool]:
            subscribers = self._reported.get(node.node_id, 0) + self._placed[node.node_id]
            # The head also carries every write: streams there slow the whole chain.
            is_head = node.node_id == head_id
            return subscribers * (HEAD_WEIGHT if is_head else 1), is_head

        node = min(chain, key=load)
        self._placed[node.node_id] += 1
        link = core.control
        token = sign_token(
            link.cluster_secret,
            request.user_id,
            topic_ids,
            node.node_id,
            time.time() + link.token_ttl,
        )
        return pb.SubscriptionNodeResponse(subscribe_token=token, node=node)


def _replay_pages(
    board: Board, request: pb.SubscribeTopicRequest, topic_ids: list[int]
) -> Callable[[], ReplayPage]:
    """A function that reads the replay's next page each time it is called (on a reader)."""
    if request.from_sequence > 0:
        after_seq = request.from_sequence

        def next_events() -> ReplayPage:
            nonlocal after_seq
            page = board.events_page(topic_ids, after_seq, REPLAY_PAGE)
            after_seq = page.next_from
            return page

        return next_events
    from_message_id, up_to_seq = request.from_message_id, None

    def next_messages() -> ReplayPage:
        nonlocal from_message_id, up_to_seq
        page = board.snapshot_page(topic_ids, from_message_id, up_to_seq, REPLAY_PAGE)
        # Later pages show only messages posted by the first page's seq: newer ones come
        # as live events, after it.
        from_message_id = page.next_from
        if up_to_seq is None:
            up_to_seq = page.state_seq
        return page

    return next_messages


def _require_known_sequence(core: NodeCore, from_sequence: int) -> None:
    """Refuse a resume after a seq this node has not applied: it would skip every event up
    to it. A resume names an event the client got, so a committed seq, which every node
    but a tail has applied: the head says when one cannot exist (INVALID_ARGUMENT); a tail
    just promoted may still trail its predecessor, so it only says to try again
    (UNAVAILABLE: the client asks the head for a node again)."""
    applied_seq = core.state.applied_seq
    if from_sequence <= applied_seq:
        return
    if core.state.position.is_head:
        raise invalid(
            f"from_sequence {from_sequence} is beyond the last event (seq {applied_seq}); "
            "resume after an event the stream sent"
        )
    raise BoardError(
        grpc.StatusCode.UNAVAILABLE,
        f"{core.node_id} has not received seq {from_sequence} yet (it has {applied_seq}); "
        "ask the head for a node again",
    )


def _ended(subscriber: Subscriber, last_seq: int) -> BoardError | None:
    """Why the stream must end now, with where to resume; None if it goes on."""
    resume = f"; resume with from_sequence={last_seq}" if last_seq else ""
    if subscriber.overflowed:
        return BoardError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"the subscriber fell more than {subscriber.limit} events behind{resume}",
        )
    if subscriber.closed_reason:
        return BoardError(grpc.StatusCode.UNAVAILABLE, f"{subscriber.closed_reason}{resume}")
    return None


async def stream(
    core: NodeCore,
    request: pb.SubscribeTopicRequest,
    opened: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[pb.MessageEvent]:
    """Replay, then live committed events, strictly increasing in seq.

    ``opened()`` is awaited once the subscription is accepted, before any event: the
    service sends the stream's headers then, so a client on a quiet topic can tell an
    open stream from one still being checked.
    """
    topic_ids = _checked_topics(request.user_id, request.topic_id)
    for field in ("from_message_id", "from_sequence"):
        if getattr(request, field) < 0:
            raise invalid(f"{field} must be >= 0, got {getattr(request, field)}")
    reason = refuse_token(
        core.control.cluster_secret, request.subscribe_token, request.user_id, topic_ids,
        core.node_id, time.time(),
    )  # fmt: skip
    if reason:
        raise BoardError(grpc.StatusCode.PERMISSION_DENIED, reason)
    if not core.state.position.in_chain or core.stopping:
        raise BoardError(
            grpc.StatusCode.UNAVAILABLE,
            f"{core.node_id} is not serving subscriptions now; ask the head for another node",
        )
    _require_known_sequence(core, request.from_sequence)
    subscriber = Subscriber(topic_ids, core.config.subscriber_queue)
    core.hub.add(subscriber)  # first, so nothing committed from here on is missed
    try:
        # The replay goes page by page, so any history streams in bounded memory.
        next_page = _replay_pages(core.board, request, topic_ids)
        last_seq = request.from_sequence
        while True:
            page = await core.storage.read(next_page)
            # What this node read may not be committed yet (it is not the tail): wait for it.
            await core.wait_committed(page.state_seq)
            # Closed meanwhile (it truncated, or left the chain)? The page may hold entries
            # the chain never committed, and the seqs waited for may now be other entries.
            # Overflowed? The stream ends now, not after the rest of a long replay.
            ended = _ended(subscriber, last_seq)
            if ended:
                raise ended
            if opened:
                await opened()
                opened = None
            for event in page.events:
                yield event
            last_seq = max(last_seq, page.covered_seq)
            if page.done:
                break
        while True:
            await subscriber.wake.wait()
            subscriber.wake.clear()
            while subscriber.events:
                seq, event = subscriber.events.popleft()
                if seq > last_seq:
                    last_seq = seq
                    yield event
            ended = _ended(subscriber, last_seq)
            if ended:
                raise ended
    finally:
        core.hub.remove(subscriber)
