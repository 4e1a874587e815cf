"""Chain membership: who is in the chain, in which order, and who may serve reads.

Plain synchronous code with the clock passed in, so every rule can be tested without sleeps.
The gRPC layer (service.py) calls these methods and announces a new configuration whenever
one of them returns True.

Every change bumps the epoch. The new configuration is handed to ``persist`` BEFORE it
replaces the current one, so a configuration is never visible (and never announced) unless
it is on disk: a restarted control plane never issues an epoch twice. When ``persist`` cannot
write (StorageFailed), the change does not happen; heartbeats still get answers.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from mboard.storage_errors import StorageFailed

log = logging.getLogger("mboard.control")

FLOOR_SAVE_INTERVAL = 1.0  # seconds between saves of a rising commit floor


@dataclass(frozen=True)
class Node:
    node_id: str
    address: str


@dataclass(frozen=True)
class ChainConfig:
    epoch: int = 0
    chain: tuple[Node, ...] = ()  # head first, tail last
    learners: tuple[Node, ...] = ()  # catching up behind the tail, promoted in this order

    @property
    def tail(self) -> Node | None:
        return self.chain[-1] if self.chain else None

    def members(self) -> tuple[Node, ...]:
        return self.chain + self.learners

    def find(self, node_id: str) -> Node | None:
        return next((n for n in self.members() if n.node_id == node_id), None)

    def elsewhere(self, node_id: str, address: str) -> Node | None:
        """The member ``node_id`` if it is at another address than ``address``: whoever
        speaks from there under its id is not it (an old run, or a second node given the
        id). An empty ``address`` is a node from before messages carried one."""
        member = self.find(node_id)
        return member if member is not None and address and member.address != address else None

    def role(self, node_id: str) -> str:
        ids = [n.node_id for n in self.chain]
        if node_id not in ids:
            return "learner" if self.find(node_id) else ""
        if len(ids) == 1:
            return "head+tail"
        if node_id == ids[0]:
            return "head"
        return "tail" if node_id == ids[-1] else "middle"

    def describe(self) -> str:
        chain = ", ".join(n.node_id for n in self.chain)
        text = f"chain [{chain}]"
        if self.learners:
            text += f" learners [{', '.join(n.node_id for n in self.learners)}]"
        return text


@dataclass(frozen=True)
class Saved:
    """What survives a restart: the configuration, the node cleared to hold a lease,
    (while the chain is empty) the nodes that were its last members, and how far the chain
    is known to have committed."""

    config: ChainConfig
    lease_holder: str | None = None
    survivors: tuple[str, ...] = ()
    committed_floor: int = 0


# Called with the state to write; must raise if it could not be written.
Persist = Callable[[Saved], None]


@dataclass
class Progress:
    """What a member last told us about itself."""

    last_heartbeat: float
    applied_seq: int = 0
    committed_seq: int = 0
    subscribers: int = 0
    heard: bool = True  # False for a persisted member not heard from since our start


@dataclass(frozen=True)
class HeartbeatAnswer:
    config: ChainConfig
    lease_s: float = 0.0
    unknown: bool = False


@dataclass(frozen=True)
class MemberStatus:
    node: Node
    role: str
    applied_seq: int
    committed_seq: int
    subscribers: int
    heartbeat_age_s: float


class Refused(Exception):
    """The chain cannot be restarted from that node now (the message says why)."""


class NotWaiting(LookupError):
    """The node named is not one of those waiting for the chain."""


class NotHeard(Exception):
    """The node has not reported since this control plane started: its log is unknown."""


@dataclass
class _Grant:
    at: float
    dropped: bool = False  # the node has since applied a config in which it is not the tail


@dataclass
class Membership:
    """The chain configuration and the rules that change it.

    Lease rule: at most one node may hold a read lease at any moment. ``lease_holder`` is
    the one node that may have been granted a lease since every other lease was known to be
    over. The tail gets a lease only if it is the holder, or once the holder's lease is over:
    its time ran out, or the holder confirmed the current configuration while not being its
    tail (a node drops its lease when it applies a configuration in which it is not the
    tail). Grant times are when the heartbeat arrived, never earlier than when the node sent
    it, so our view of a lease outlasts the node's.
    """

    failure_timeout: float
    lease: float
    started: float  # when this control plane started
    persist: Persist
    saved: Saved | None = None  # what a previous run persisted
    config: ChainConfig = field(init=False)
    lease_holder: str | None = field(init=False)
    # While the chain is empty: its last members, who hold every committed write. Only one
    # of them may start it again; anyone else would become a head that lacks those writes.
    survivors: tuple[str, ...] = field(init=False)
    # The highest commit point any member reported: a lower bound of what the chain has
    # committed. A last member holding less lost its data (a wiped or replaced disk) and must
    # not restart the chain: its successors would drop what they hold to match its log.
    committed_floor: int = field(init=False)
    progress: dict[str, Progress] = field(init=False, default_factory=dict)
    # Learners promoted to tail (-> the epoch of that) that have not yet said they hold every
    # entry their predecessor had committed: they may still be receiving the last of them.
    unconfirmed: dict[str, int] = field(init=False, default_factory=dict)
    _holder_grant: _Grant | None = field(init=False, default=None)
    _floor_saved_at: float = field(init=False, default=float("-inf"))
    # Leases granted before a restart are unknown; all of them end before this time.
    _restart_fence: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        saved = self.saved or Saved(ChainConfig())
        self.config = saved.config
        self.lease_holder = saved.lease_holder
        self.survivors = saved.survivors
        self.committed_floor = saved.committed_floor
        if self.saved is not None:
            self._restart_fence = self.started + self.lease
        # Persisted members count as alive at start: they get a full failure_timeout to
        # heartbeat back in before they are removed.
        for node in self.config.members():
            self.progress[node.node_id] = Progress(last_heartbeat=self.started, heard=False)
        # Who was promoted just before the restart is unknown: every member but the head
        # says again, with its first heartbeat, that it holds what was committed.
        self.unconfirmed = {n.node_id: self.config.epoch for n in self.config.chain[1:]}

    # ------------------------------------------------------------------ changes

    def register(self, node: Node, applied_seq: int, now: float) -> bool:
        """A node starts (or restarts). Always a new configuration."""
        known = self.config.find(node.node_id) is not None
        why = f"{node.node_id} {'restarted' if known else 'joined'}"
        lease_holder = self.lease_holder
        if lease_holder == node.node_id and self.config.elsewhere(node.node_id, node.address):
            # Another process takes the id (the old one did not answer the probe, yet may
            # live on): it is not the holder, and its word must not end the old lease. The
            # old grant still counts, so nobody gets a lease before it has run out.
            lease_holder = None
        chain, learners, survivors = self._what_remains({node.node_id})
        holds_commits = applied_seq >= self.committed_floor
        if not chain and (not survivors or node.node_id in survivors) and holds_commits:
            chain, survivors = [node], ()
        else:
            learners.append(node)
            if not chain:
                why += f"; the chain waits for one of {', '.join(survivors)} with its data"
                if node.node_id in survivors and not holds_commits:
                    log.warning(
                        "%s was in the chain last but holds seq %d, and the chain committed "
                        "seq %d: its data is gone, so it will not restart the chain. Restore "
                        "its data directory, or start the chain from the waiting node with "
                        "the longest log: `mboard restart-chain NODE` (what it lacks is lost)",
                        node.node_id, applied_seq, self.committed_floor,
                    )  # fmt: skip
        self._reconfigure(chain, learners, why, survivors, lease_holder=lease_holder)
        self.unconfirmed.pop(node.node_id, None)
        self.progress[node.node_id] = Progress(last_heartbeat=now, applied_seq=applied_seq)
        return True

    def heartbeat(
        self,
        node_id: str,
        epoch: int,
        applied_seq: int,
        committed_seq: int,
        subscribers: int,
        now: float,
        holds_committed: bool = True,
        address: str = "",
    ) -> HeartbeatAnswer:
        progress = self.progress.get(node_id)
        # From another address it is not the member: say so, rather than count its progress
        # and grant it the member's lease (it re-registers, and is refused while the member
        # lives).
        if progress is None or self.config.elsewhere(node_id, address):
            return HeartbeatAnswer(self.config, unknown=True)
        progress.last_heartbeat = now
        progress.applied_seq = applied_seq
        progress.committed_seq = committed_seq
        progress.heard = True
        if holds_committed and epoch >= self.unconfirmed.get(node_id, epoch + 1):
            del self.unconfirmed[node_id]
        # Only a chain member of this epoch speaks for the chain's current history: a
        # learner, or a stale heartbeat, may still report commits of a log given up since.
        in_chain = any(n.node_id == node_id for n in self.config.chain)
        if epoch == self.config.epoch and in_chain:
            self._raise_floor(min(committed_seq, applied_seq), now)
        progress.subscribers = subscribers
        self.confirm(node_id, epoch)
        return HeartbeatAnswer(self.config, lease_s=self._grant_lease(node_id, now))

    def confirm(self, node_id: str, epoch: int) -> None:
        """The node has applied configuration ``epoch`` (reported, or a push succeeded)."""
        grant = self._holder_grant
        if grant is None or node_id != self.lease_holder:
            return
        # Only the current epoch counts: an older one may have had this node as its tail,
        # and a node that stays the tail keeps its lease.
        tail = self.config.tail
        if epoch == self.config.epoch and (tail is None or tail.node_id != node_id):
            grant.dropped = True

    def caught_up(self, epoch: int, tail_id: str, learner_id: str) -> bool:
        """The tail says its learner has everything: promote the learner to tail."""
        config = self.config
        if epoch != config.epoch or not config.chain or not config.learners:
            return False
        if config.chain[-1].node_id != tail_id or config.learners[0].node_id != learner_id:
            return False
        if tail_id in self.unconfirmed:  # behind it, the learner could confirm what it lacks
            return False
        # The promoted learner commits at once (see ChainState.adopt): safe only behind a
        # tail that holds the lease, so that no other node can still serve reads. A tail
        # that is itself waiting for one (its old successor may live on) must get it first.
        if self.lease_holder != tail_id:
            return False
        learner = config.learners[0]
        self._reconfigure(
            [*config.chain, learner],
            list(config.learners[1:]),
            f"{learner_id} caught up",
            self.survivors,
        )
        self.unconfirmed[learner_id] = self.config.epoch
        return True

    def restart_from(self, node_id: str) -> bool:
        """The operator's override: start the empty chain from the waiting ``node_id``.

        For when no last member can come back with its data. The new head's log is the
        chain's from now on: committed writes it lacks are lost, and the other nodes drop
        whatever it does not hold. Always a new configuration.
        """
        if self.config.chain:
            head = self.config.chain[0].node_id
            raise Refused(f"the chain is running (head {head}): nothing to restart")
        node = self.config.find(node_id)  # with no chain, every member is waiting
        if node is None:
            waiting = ", ".join(n.node_id for n in self.config.learners) or "none"
            raise NotWaiting(f"{node_id} is not waiting for the chain (waiting: {waiting})")
        waiting = {n.node_id: self.progress[n.node_id] for n in self.config.learners}
        unheard = sorted(n for n, progress in waiting.items() if not progress.heard)
        if unheard:
            names = ", ".join(unheard)
            raise NotHeard(f"not heard from {names} yet, so how far each log goes is unknown")
        applied_seq = waiting[node_id].applied_seq
        longest = max(waiting, key=lambda n: waiting[n].applied_seq)
        if waiting[longest].applied_seq > applied_seq:
            raise Refused(
                f"{longest} holds more ({waiting[longest].applied_seq} entries against "
                f"{applied_seq}): restart the chain from {longest}"
            )
        floor = self.committed_floor
        learners = [n for n in self.config.learners if n.node_id != node_id]
        why = f"restarted from {node_id} by the operator"
        self._reconfigure([node], learners, why, (), committed_floor=applied_seq)
        self.unconfirmed.clear()  # a new history: nothing committed is missing from it
        log.warning(
            "the operator restarted the chain from %s, whose log ends at seq %d; the chain "
            "had committed at least seq %d",
            node_id, applied_seq, floor,
        )  # fmt: skip
        return True

    def remove(self, node_id: str, why: str, serves_no_reads: bool = False) -> bool:
        """Take ``node_id`` out. ``serves_no_reads``: the node said it serves no reads any
        more (it left, having dropped its lease), so its lease is over and the next tail may
        get one, and commit, at once. A node that merely stopped answering may live on, cut
        off from us, and serve reads until its lease has run out."""
        if serves_no_reads and node_id == self.lease_holder and self._holder_grant:
            self._holder_grant.dropped = True
        return self._remove({node_id}, why)

    def excuse(self, seconds: float, now: float) -> None:
        """We could hear nobody for ``seconds`` (this process was stalled): that silence
        counts against no member, or every member would be removed at once."""
        for progress in self.progress.values():
            progress.last_heartbeat = min(progress.last_heartbeat + seconds, now)

    def expire(self, now: float) -> bool:
        """Remove every member that has not sent a heartbeat for failure_timeout."""
        silent = sorted(
            node_id
            for node_id, progress in self.progress.items()
            if now - progress.last_heartbeat > self.failure_timeout
        )
        if not silent:
            return False
        why = f"{', '.join(silent)} failed: no heartbeat for {self.failure_timeout:g} s"
        return self._remove(set(silent), why)

    # ----------------------------------------------------------------- queries

    def statuses(self, now: float) -> list[MemberStatus]:
        result = []
        for node in self.config.members():
            progress = self.progress[node.node_id]
            result.append(
                MemberStatus(
                    node=node,
                    role=self.config.role(node.node_id),
                    applied_seq=progress.applied_seq,
                    committed_seq=progress.committed_seq,
                    subscribers=progress.subscribers,
                    heartbeat_age_s=max(0.0, now - progress.last_heartbeat),
                )
            )
        return result

    # ---------------------------------------------------------------- internals

    def _remove(self, node_ids: set[str], why: str) -> bool:
        node_ids &= self.progress.keys()
        if not node_ids:
            return False
        chain, learners, survivors = self._what_remains(node_ids)
        self._reconfigure(chain, learners, why, survivors)
        for node_id in node_ids:
            del self.progress[node_id]
            self.unconfirmed.pop(node_id, None)
        return True

    def _what_remains(self, gone: set[str]) -> tuple[list[Node], list[Node], tuple[str, ...]]:
        """The chain and learners without ``gone``, and who may restart the chain if no one
        is left in it.

        With the chain gone, learners stay learners: one that is behind would lose
        acknowledged writes if it became the chain; one of the last members restarts it. So
        does a chain that a tail promoted moments ago would head before it said it holds
        what its predecessors committed: it may lack some, and as head it would make every
        node that comes back drop them.
        """
        chain = [n for n in self.config.chain if n.node_id not in gone]
        learners = [n for n in self.config.learners if n.node_id not in gone]
        head = chain[0] if chain else None
        if head and head != self.config.chain[0] and head.node_id in self.unconfirmed:
            log.warning(
                "%s would head the chain but may lack entries its predecessors committed "
                "(it was promoted moments ago): it waits for one of them",
                head.node_id,
            )
            chain, learners = [], chain + learners
        survivors = self.survivors
        if self.config.chain and not chain:  # never empty: the head is never unconfirmed
            survivors = tuple(
                n.node_id
                for n in self.config.chain
                if n not in learners and n.node_id not in self.unconfirmed
            )
        return chain, learners, survivors

    def _reconfigure(
        self,
        chain: list[Node],
        learners: list[Node],
        why: str,
        survivors: tuple[str, ...],
        **saved: Any,
    ) -> None:
        """Take the next configuration, once it is saved; ``saved``: other fields of Saved
        that change with it. Nothing changes if the save fails (StorageFailed)."""
        old = self.config
        new = ChainConfig(old.epoch + 1, tuple(chain), tuple(learners))
        self._save(config=new, survivors=survivors, **saved)
        self.config = new
        self.survivors = survivors
        for name, value in saved.items():  # lease_holder, committed_floor
            setattr(self, name, value)
        log.info("epoch %d -> %d: %s (%s)", old.epoch, new.epoch, new.describe(), why)

    def save(self) -> None:
        """Write the current state again (raises StorageFailed if the disk still cannot take
        it): how a control plane that could not save finds out it can again."""
        self._save()

    def _save(self, **changes: Any) -> None:
        """Write the current state with ``changes`` (fields of Saved) before they take effect."""
        current = Saved(self.config, self.lease_holder, self.survivors, self.committed_floor)
        self.persist(replace(current, **changes))

    def _raise_floor(self, committed_seq: int, now: float) -> None:
        """A chain member committed ``committed_seq``. Saved now and then, not at every
        heartbeat: any saved value keeps a node with an emptied disk from heading the chain."""
        if committed_seq <= self.committed_floor:
            return
        self.committed_floor = committed_seq
        if now - self._floor_saved_at >= FLOOR_SAVE_INTERVAL:
            self._floor_saved_at = now  # tried: a disk that cannot take it is tried again later
            # The heartbeat goes on without it: the saved floor is only ever a lower bound.
            with contextlib.suppress(StorageFailed):
                self._save()

    def _grant_lease(self, node_id: str, now: float) -> float:
        tail = self.config.tail
        if tail is None or tail.node_id != node_id:
            return 0.0
        if self.lease_holder != node_id:
            if not self._other_leases_over(now):
                return 0.0
            # Written before the first grant: after a restart, the holder may keep its
            # lease at once, everyone else waits until any earlier lease has run out.
            try:
                self._save(lease_holder=node_id)
            except StorageFailed:
                return 0.0  # no grant until it can be
            self.lease_holder = node_id
        self._holder_grant = _Grant(at=now)
        return self.lease

    def _other_leases_over(self, now: float) -> bool:
        if now < self._restart_fence:
            return False
        grant = self._holder_grant
        return grant is None or grant.dropped or now >= grant.at + self.lease
