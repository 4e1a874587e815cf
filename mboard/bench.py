"""``mboard bench``: a bounded load on a running cluster, through the client library.

Setup makes a fresh user and topic, posts a warm-up message and opens the subscribers
(``--subscribers``); a subscriber is ready once the warm-up post reached it. Then the phases
run, one at a time so each figure is clean:

- write: N writers post while the subscribers listen; each subscriber must receive every
  acknowledged post (checked at the end).
- read: N readers page through the topic (GetMessages, limit 10).
- echo (``--baseline``): a bare grpc.aio echo server in a child process, driven with the
  writers' concurrency the same way: the machine's gRPC ceiling, which the project's
  performance targets are stated against.

Each phase gets ``duration`` seconds in all, cut into rounds of about ``ROUND_S`` that take
turns (write, read, echo, write, ...): a machine whose speed drifts during the run (a shared
virtual machine) then slows every phase alike, and the ratios against the echo hold. After
each write round the subscribers catch up before the next phase starts.

Every loop is bounded in time and in count. Errors are counted, never fatal. The first Ctrl+C
ends the current round, skips the rest and reports what was measured (a second one aborts).
Latencies are client-side: from sending the call to its answer, retries included. An event's
latency is from ``event_at`` (stamped by the head when it accepted the write) to the moment
the subscriber got it, both on this machine's wall clock: it covers replication, commit,
fan-out and delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sys
import time
import uuid
from array import array
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, TextIO, TypeVar

import grpc

from mboard import grpc_util
from mboard.client import BoardError, Client
from mboard.up import mboard_command

# Per phase: the loops stop at the deadline or after this many operations, whichever is first.
MAX_OPS_PER_PHASE = 2_000_000
MAX_EVENT_SAMPLES = 2_000_000  # event latencies kept (all events are still counted)
READ_LIMIT = 10
SETUP_TIMEOUT_S = 30.0  # subscribers ready, echo server started
DRAIN_TIMEOUT_S = 15.0  # subscribers catching up after a write round
STOP_TIMEOUT_S = 5.0
PROGRESS_EVERY_S = 0.5
ROUND_S = 2.0  # the length a phase's rounds aim at (see the module docstring)
POLL_S = 0.05
STEAL_NOTE = 0.02  # steal share of the CPU from which the table points it out

ECHO_SERVICE = "mboard.bench.Echo"
ECHO_METHOD = f"/{ECHO_SERVICE}/Call"
ECHO_PAYLOAD = b"x" * 32  # about the size of a small post

T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    control: str
    writers: int = 64
    readers: int = 64
    subscribers: int = 0
    duration: float = 10.0
    baseline: bool = False
    timeout: float = 10.0  # the client's deadline for one call, retries included
    rounds: int | None = None  # None: about one per ROUND_S of duration

    @property
    def round_count(self) -> int:
        return self.rounds or max(1, round(self.duration / ROUND_S))


class Interrupted(Exception):
    """Ctrl+C came before the bench had anything to measure."""


class Phase:
    """One phase's measurements over its rounds: each success's latency, errors by code."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.latencies = array("d")  # seconds, one per successful operation
        self.errors: Counter[str] = Counter()
        self.started = 0  # operations begun (the count bound)
        self.rounds = 0
        self.elapsed = 0.0  # seconds: each round's start to the end of its last operation
        self.longest_gap: float | None = None  # between two successes in one round
        self.cpu = 0.0  # this process's CPU seconds during the phase
        self.machine: tuple[int, int] | None = None  # (stolen, all) CPU ticks of its rounds

    @property
    def ran(self) -> bool:
        return self.rounds > 0

    @property
    def ops(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.ops / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def steal(self) -> float | None:
        """The share of the machine's CPU its hypervisor kept during this phase."""
        return steal_share((0, 0), self.machine) if self.machine else None

    def add_machine(self, before: tuple[int, int] | None, after: tuple[int, int] | None) -> None:
        if before is None or after is None:
            return  # not Linux
        stolen, ticks = self.machine or (0, 0)
        self.machine = (stolen + after[0] - before[0], ticks + after[1] - before[1])

    def summary(self) -> str:
        p50, p99 = percentiles(self.latencies)
        return (
            f"{self.name}: {self.ops:,} ok in {self.elapsed:.1f} s, {self.rate:,.0f}/s, "
            f"p50 {_ms_text(p50)} ms, p99 {_ms_text(p99)} ms, "
            f"{sum(self.errors.values())} errors"
        )


class _Listener:
    """One subscription's record: which of the bench's messages reached it."""

    def __init__(self, first_id: int) -> None:
        self.first_id = first_id  # the warm-up post; every later bench message has a larger id
        self.seen = bytearray()  # seen[message_id - first_id] == 1 once delivered
        self.highest = 0
        self.ready = False
        self.done = False  # the subscription gave up

    def mark(self, message_id: int) -> None:
        index = message_id - self.first_id
        if index >= len(self.seen):
            self.seen.extend(bytes(index + 1 - len(self.seen) + 4096))
        self.seen[index] = 1
        self.highest = max(self.highest, message_id)

    def missed(self, message_ids: array) -> int:
        seen, first = self.seen, self.first_id
        return sum(1 for m in message_ids if m - first >= len(seen) or not seen[m - first])


class _Events:
    """What all subscribers received: counts and latencies of live events."""

    def __init__(self) -> None:
        self.count = 0
        self.latencies = array("d")  # seconds from event_at to receipt
        self.last_at = 0.0  # perf_counter of the latest event
        self.active = 0.0  # seconds from each write round's start to its last event
        self.resumes = 0  # times a subscription moved or resumed (library on_move)


class Progress:
    """A live status line on a terminal; elsewhere (pipes, logs) one line per phase."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()

    def show(self, text: str) -> None:
        if self.live:
            self.stream.write(f"\r{text}\x1b[K")
            self.stream.flush()

    def line(self, text: str) -> None:
        self.stream.write(("\r\x1b[K" if self.live else "") + text + "\n")
        self.stream.flush()


# ------------------------------------------------------------------------ the run


async def run(settings: Settings, progress: Progress) -> dict[str, Any]:
    """Run the bench against ``settings.control`` and return the results (see ``results``).

    Raises BoardError if the setup fails (no cluster), Interrupted on Ctrl+C during setup.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_ctrl_c() -> None:
        progress.line("stopping: Ctrl+C (again to abort)")
        stop.set()
        loop.remove_signal_handler(signal.SIGINT)  # the next Ctrl+C interrupts for real

    loop.add_signal_handler(signal.SIGINT, on_ctrl_c)
    try:
        async with contextlib.AsyncExitStack() as stack:
            # Before this process opens any gRPC channel: a fork while gRPC's threads are
            # busy runs gRPC's fork handlers, and the child crashed in them (SIGSEGV).
            echo = Phase("echo") if settings.baseline else None
            echo_address = await _start_echo_server(echo, stack) if echo else None
            client = await stack.enter_async_context(Client(settings.control, settings.timeout))
            return await _bench(client, settings, stop, progress, echo, echo_address)
    finally:
        loop.remove_signal_handler(signal.SIGINT)


async def _bench(
    client: Client,
    settings: Settings,
    stop: asyncio.Event,
    progress: Progress,
    echo: Phase | None,
    echo_address: str | None,
) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    user = await _unless_stopped(client.create_user(f"bench-{tag}"), stop)
    topic = await _unless_stopped(client.create_topic(f"bench-{tag}"), stop)
    warmup = await _unless_stopped(client.post(topic.id, user.id, "warm-up"), stop)
    await _unless_stopped(client.get_messages(topic.id, limit=1), stop)  # open the tail channel
    progress.line(f"setup: user {user.id}, topic {topic.id} on {settings.control}")

    errors: Counter[str] = Counter()
    events = _Events()
    listeners = [_Listener(warmup.id) for _ in range(settings.subscribers)]
    listening = [
        asyncio.create_task(_listen(client, user.id, topic.id, listener, events, errors))
        for listener in listeners
    ]
    writes, reads = Phase("write"), Phase("read")
    acked_ids = array("q")  # the ids of the acknowledged posts

    async def write(worker: int, number: int) -> None:
        message = await client.post(topic.id, user.id, f"bench {worker}-{number}")
        acked_ids.append(message.id)

    async def read(_worker: int, _number: int) -> None:
        start = random.choice(acked_ids) if acked_ids else 0
        await client.get_messages(topic.id, from_message_id=start, limit=READ_LIMIT)

    def events_so_far() -> str:
        return f", {events.count:,} events" if listeners else ""

    drained = True
    rounds = settings.round_count
    seconds = settings.duration / rounds
    try:
        async with contextlib.AsyncExitStack() as stack:
            if listeners:
                await _wait_ready(listeners, stop, progress, errors)
            echo_call = (
                await _echo_operation(echo, settings, echo_address, stack) if echo_address else None
            )
            for number in range(1, rounds + 1):
                if stop.is_set():
                    break
                label = f" {number}/{rounds}" if rounds > 1 else ""
                began = time.perf_counter()
                await _run_round(
                    writes, settings, seconds, settings.writers, write, stop, progress,
                    label, events_so_far,
                )  # fmt: skip
                drained = await _drain(listeners, acked_ids, stop, progress)
                events.active += max(events.last_at - began, 0.0)
                if stop.is_set():
                    break
                await _run_round(
                    reads, settings, seconds, settings.readers, read, stop, progress, label
                )
                if echo_call and not stop.is_set():
                    await _run_round(
                        echo, settings, seconds, settings.writers, echo_call, stop, progress,
                        label,
                    )  # fmt: skip
    finally:
        for task in listening:
            task.cancel()
        await asyncio.gather(*listening, return_exceptions=True)
    missed = sum(listener.missed(acked_ids) for listener in listeners) if drained else None

    for phase in (writes, reads, echo):
        if phase is not None and phase.ran:
            progress.line(phase.summary())
    for phase in (writes, reads, echo):
        if phase is not None:
            errors.update({f"{phase.name} {code}": n for code, n in phase.errors.items()})
    return results(
        settings, writes, reads, echo, events if listeners else None, missed, errors,
        interrupted=stop.is_set(),
    )  # fmt: skip


async def _unless_stopped(awaitable: Awaitable[T], stop: asyncio.Event) -> T:
    """Await ``awaitable``, unless Ctrl+C comes first: then cancel it, raise Interrupted."""
    work = asyncio.ensure_future(awaitable)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([work, stopped], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if not work.done():
        work.cancel()
        raise Interrupted
    return work.result()


async def _run_round(
    phase: Phase,
    settings: Settings,
    seconds: float,
    concurrency: int,
    operation: Callable[[int, int], Awaitable[None]],
    stop: asyncio.Event,
    progress: Progress,
    label: str = "",
    extra: Callable[[], str] | None = None,
) -> None:
    """One round of ``phase``: ``operation(worker, number)`` in ``concurrency`` loops for
    ``seconds``; what it measures adds to ``phase``.

    After the deadline no operation starts, and the ones in flight may finish (a call gives
    up by itself after ``settings.timeout``); Ctrl+C cancels them at once, uncounted.
    """
    clock = time.perf_counter
    began = ended = clock()
    deadline = began + seconds
    cpu_before = time.process_time()
    machine_before = machine_cpu()
    acked_at = array("d")  # perf_counter at each success, in completion order

    async def worker(index: int) -> None:
        nonlocal ended
        while not stop.is_set() and clock() < deadline and phase.started < MAX_OPS_PER_PHASE:
            phase.started += 1
            number = phase.started
            started = clock()
            try:
                await operation(index, number)
            except BoardError as exc:
                phase.errors[exc.code.name] += 1
                ended = clock()
                continue
            ended = done = clock()
            phase.latencies.append(done - started)
            acked_at.append(done)

    async def show_progress() -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            elapsed = clock() - began
            progress.show(
                f"{phase.name}{label}: {min(elapsed, seconds):.1f}/{seconds:g} s, "
                f"{phase.ops:,} ok, {phase.ops / (phase.elapsed + elapsed):,.0f}/s, "
                f"{sum(phase.errors.values())} errors{extra() if extra else ''}"
            )

    workers = [asyncio.create_task(worker(index)) for index in range(concurrency)]
    everyone = asyncio.gather(*workers, return_exceptions=True)
    ticker = asyncio.create_task(show_progress())
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait(
            [everyone, stopped],
            timeout=seconds + settings.timeout + STOP_TIMEOUT_S,
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        for task in (*workers, ticker, stopped):
            task.cancel()
        await asyncio.wait(workers)
    for task in workers:
        if not task.cancelled() and task.exception():
            raise task.exception()  # a worker's unexpected exception: a bug, not a figure
    phase.rounds += 1
    phase.elapsed += ended - began
    gap = max((b - a for a, b in pairwise(acked_at)), default=None)
    if gap is not None:
        phase.longest_gap = max(gap, phase.longest_gap or 0.0)
    phase.cpu += time.process_time() - cpu_before
    phase.add_machine(machine_before, machine_cpu())


def machine_cpu() -> tuple[int, int] | None:
    """(stolen, total) CPU ticks of the whole machine so far, from Linux's /proc/stat."""
    try:
        with open("/proc/stat") as stat:
            ticks = [int(field) for field in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return None  # not Linux: the figure is left out
    # user nice system idle iowait irq softirq steal (guest time is already in user)
    return (ticks[7] if len(ticks) == 8 else 0), sum(ticks)


def steal_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The share of the machine's CPU stolen between two ``machine_cpu()`` readings."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


# ------------------------------------------------------------------ subscriptions


async def _listen(
    client: Client,
    user_id: int,
    topic_id: int,
    listener: _Listener,
    events: _Events,
    errors: Counter[str],
) -> None:
    def moved(_why: str) -> None:
        events.resumes += 1

    subscription = client.subscribe(
        user_id, [topic_id], from_message_id=listener.first_id, on_move=moved
    )
    try:
        async for event in subscription:
            message_id = event.message.id
            if message_id == listener.first_id:  # the warm-up post: this subscription is live
                listener.ready = True
                continue
            received = time.time()
            events.count += 1
            events.last_at = time.perf_counter()
            if len(events.latencies) < MAX_EVENT_SAMPLES:
                stamp = event.event_at
                events.latencies.append(received - stamp.seconds - stamp.nanos * 1e-9)
            listener.mark(message_id)
    except BoardError as exc:
        errors[f"subscribe {exc.code.name}"] += 1
    finally:
        listener.done = True
        await subscription.aclose()


async def _wait_ready(
    listeners: list[_Listener], stop: asyncio.Event, progress: Progress, errors: Counter[str]
) -> None:
    """Wait (bounded) until every subscription delivered the warm-up post."""
    deadline = time.perf_counter() + SETUP_TIMEOUT_S
    while not stop.is_set() and time.perf_counter() < deadline:
        ready = sum(listener.ready for listener in listeners)
        progress.show(f"subscribers: {ready}/{len(listeners)} ready")
        if all(listener.ready or listener.done for listener in listeners):
            break
        await asyncio.sleep(POLL_S)
    late = sum(not (listener.ready or listener.done) for listener in listeners)
    if late and not stop.is_set():
        errors["subscribe not ready in time"] += late
    progress.line(f"subscribers: {sum(lis.ready for lis in listeners)}/{len(listeners)} ready")


async def _drain(
    listeners: list[_Listener], acked_ids: array, stop: asyncio.Event, progress: Progress
) -> bool:
    """Wait (bounded) until every live subscription got the last acknowledged post.

    False if Ctrl+C cut it short (then "missed" would mean nothing).
    """
    if not listeners or not acked_ids:
        return True
    last = max(acked_ids)
    deadline = time.perf_counter() + DRAIN_TIMEOUT_S
    while time.perf_counter() < deadline:
        if stop.is_set():
            return False
        behind = sum(lis.highest < last and not lis.done for lis in listeners)
        if not behind:
            break
        progress.show(f"subscribers: {behind} still catching up")
        await asyncio.sleep(POLL_S)
    return True


# ------------------------------------------------------------------------- baseline


async def _start_echo_server(phase: Phase, stack: contextlib.AsyncExitStack) -> str | None:
    """Start the bare echo server for the run (it stops with ``stack``); its address, or
    None if it did not start (counted as the phase's error)."""
    try:
        return await stack.enter_async_context(_echo_server())
    except OSError as exc:
        phase.errors[f"server did not start ({exc})"] += 1
        return None


async def _echo_operation(
    phase: Phase, settings: Settings, address: str, stack: contextlib.AsyncExitStack
) -> Callable[[int, int], Awaitable[None]] | None:
    """The operation that drives the echo server at ``address`` like the writers drive the
    head; None if it does not answer (counted as the phase's error)."""
    channel = grpc_util.channel(address)
    stack.push_async_callback(channel.close)
    call = channel.unary_unary(ECHO_METHOD)  # bytes in, bytes out

    async def echo(_worker: int, _number: int) -> None:
        try:
            await call(ECHO_PAYLOAD, timeout=settings.timeout)
        except grpc.aio.AioRpcError as exc:
            raise BoardError.of(exc) from None

    try:
        await echo(0, 0)  # connect before the clock starts
    except BoardError as exc:
        phase.errors[exc.code.name] += 1
        return None
    return echo


@contextlib.asynccontextmanager
async def _echo_server() -> AsyncIterator[str]:
    """Start ``mboard bench --serve-echo`` as a child; yield its address; stop it."""
    child = await asyncio.create_subprocess_exec(
        *mboard_command("bench", "--serve-echo"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # Ctrl+C in the terminal is the parent's to handle
    )
    try:
        try:
            line = await asyncio.wait_for(child.stdout.readline(), SETUP_TIMEOUT_S)
        except TimeoutError:
            line = b""
        if not line.strip().isdigit():
            raise OSError(f"the echo server did not start: {await _stderr_tail(child)}")
        yield f"127.0.0.1:{int(line)}"
    finally:
        child.stdin.close()  # the child stops when its stdin closes
        try:
            await asyncio.wait_for(child.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            child.kill()
            await child.wait()


async def _stderr_tail(child: asyncio.subprocess.Process) -> str:
    if child.returncode is None:
        child.kill()
    await child.wait()
    text = (await child.stderr.read()).decode(errors="replace").strip()
    return text.splitlines()[-1] if text else f"exit code {child.returncode}"


def serve_echo() -> None:
    """The baseline's child process: a bare grpc.aio server with one unary echo method.

    It runs on the nodes' event loop (uvloop): a ceiling measured on a slower loop would
    flatter every ratio against it (asyncio's own loop does about a tenth fewer calls/s).
    Prints its port on stdout once it serves; stops when stdin closes (so it never outlives
    the bench) or on SIGTERM.
    """
    grpc_util.run(_serve_echo())


async def _serve_echo() -> None:
    async def echo(request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
        return request

    server = grpc_util.server()
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                ECHO_SERVICE, {"Call": grpc.unary_unary_rpc_method_handler(echo)}
            )
        ]
    )
    port = grpc_util.bind(server, "127.0.0.1:0", "the echo server")
    await server.start()
    print(port, flush=True)

    stop = grpc_util.stop_event(exit_with_parent=True)
    await stop.wait()
    await server.stop(grace=0.5)


# -------------------------------------------------------------------------- results


def percentiles(samples: array) -> tuple[float | None, float | None]:
    """(p50, p99) of ``samples`` by nearest rank; (None, None) without samples."""
    if not samples:
        return None, None
    ordered = sorted(samples)
    last = len(ordered) - 1
    return ordered[round(0.50 * last)], ordered[round(0.99 * last)]


def results(
    settings: Settings,
    writes: Phase,
    reads: Phase,
    echo: Phase | None,
    events: _Events | None,
    missed: int | None,
    errors: Counter[str],
    interrupted: bool,
) -> dict[str, Any]:
    """The figures as one flat JSON-ready dict (ms and per-second, rounded); None = not measured."""
    out: dict[str, Any] = {
        "control": settings.control,
        "writers": settings.writers,
        "readers": settings.readers,
        "subscribers": settings.subscribers,
        "duration_s": settings.duration,
        "rounds": settings.round_count,
        "interrupted": interrupted,
    }
    out.update(_phase_figures("write", "writes", writes))
    out["max_write_gap_ms"] = _ms(writes.longest_gap)
    out.update(_phase_figures("read", "reads", reads))
    if events is not None:
        p50, p99 = percentiles(events.latencies)
        out["events"] = events.count
        span = events.active
        out["events_per_s"] = round(events.count / span, 1) if events.count and span > 0 else 0.0
        out["event_p50_ms"], out["event_p99_ms"] = _ms(p50), _ms(p99)
        out["missed_events"] = missed
        out["subscriber_resumes"] = events.resumes
    if echo is not None:
        out.update(_phase_figures("echo", "echo_calls", echo))
        ceiling = echo.rate
        for plural, phase in (("writes", writes), ("reads", reads)):
            ratio = phase.rate / ceiling if ceiling and phase.ran else None
            out[f"{plural}_vs_echo"] = None if ratio is None else round(ratio, 3)
    out["errors"] = sum(errors.values())
    out["error_kinds"] = dict(errors)
    cpu = {p.name: round(p.cpu / p.elapsed, 2) for p in (writes, reads, echo) if p and p.elapsed}
    out["client_cpu"] = cpu  # the bench's own CPU, in cores: near 1.0 means it was the limit
    # On a virtual machine, the CPU its hypervisor gave to others meanwhile (Linux only):
    # a few percent of it already moves the figures between runs.
    out["cpu_steal"] = {
        p.name: round(p.steal, 3) for p in (writes, reads, echo) if p and p.steal is not None
    }
    return out


def _phase_figures(name: str, plural: str, phase: Phase) -> dict[str, Any]:
    """Count, rate and latency of one phase; all None if it never ran (Ctrl+C came first)."""
    ran = phase.ran
    p50, p99 = percentiles(phase.latencies)
    return {
        plural: phase.ops if ran else None,
        f"{plural}_per_s": round(phase.rate, 1) if ran else None,
        f"{name}_p50_ms": _ms(p50),
        f"{name}_p99_ms": _ms(p99),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def _ms_text(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def _in_rounds(rounds: int) -> str:
    return f" in {rounds} rounds" if rounds > 1 else ""


def format_table(figures: dict[str, Any]) -> str:
    """The results for people: one row per measured stream, then the checks."""

    def cell(value: Any, spec: str = ",.1f") -> str:
        return "-" if value is None else format(value, spec)

    cpu = figures.get("client_cpu", {})
    head = (
        f"mboard bench: {figures['writers']} writers, {figures['readers']} readers, "
        f"{figures['subscribers']} subscribers, {figures['duration_s']:g} s per phase"
        f"{_in_rounds(figures.get('rounds', 1))}, "
        f"control {figures['control']}" + (" (interrupted)" if figures["interrupted"] else "")
    )
    columns = f"{'':8}{'count':>10}{'per s':>12}{'p50 ms':>10}{'p99 ms':>10}{'vs echo':>9}"
    lines = [head, "", columns + f"{'bench cpu':>11}"]
    rows = [
        ("write", "writes", "write", figures.get("writes_vs_echo")),
        ("read", "reads", "read", figures.get("reads_vs_echo")),
        ("events", "events", "event", None),
        ("echo", "echo_calls", "echo", None),
    ]
    for label, plural, name, ratio in rows:
        if plural not in figures:
            continue
        load = cpu.get(name)
        lines.append(
            f"{label:8}{cell(figures[plural], ','):>10}{cell(figures[f'{plural}_per_s']):>12}"
            f"{cell(figures[f'{name}_p50_ms']):>10}{cell(figures[f'{name}_p99_ms']):>10}"
            f"{cell(ratio, '.2f'):>9}{cell(load, '.0%'):>11}"
        )
    lines.append("")
    lines.append(f"longest gap between acknowledged writes: {cell(figures['max_write_gap_ms'])} ms")
    if "missed_events" in figures:
        missed = figures["missed_events"]
        verdict = (
            "not checked (interrupted)" if missed is None
            else "every subscriber got every acknowledged post" if missed == 0
            else f"{missed:,} deliveries MISSING"
        )  # fmt: skip
        lines.append(f"subscriptions: {verdict}; resumes: {figures['subscriber_resumes']}")
    steal = figures.get("cpu_steal", {})
    if any(share >= STEAL_NOTE for share in steal.values()):
        shares = ", ".join(f"{name} {share:.0%}" for name, share in steal.items())
        lines.append(
            f"the hypervisor kept part of this machine's CPU ({shares}): "
            "figures vary between runs, compare alternating runs"
        )
    kinds = ", ".join(f"{kind}: {n:,}" for kind, n in sorted(figures["error_kinds"].items()))
    lines.append(f"errors: {figures['errors']:,}" + (f" ({kinds})" if kinds else ""))
    return "\n".join(lines)
