"""Real multi-process clusters for tests: a control plane and nodes as child processes.

Synchronous on purpose (subprocess + sync gRPC stubs) so tests read top to bottom::

    def test_something(cluster):
        cluster.start_control()
        for name in ("n1", "n2", "n3"):
            cluster.start_node(name)
        cluster.wait_chain(["n1", "n2", "n3"])
        cluster.kill("n2")
        cluster.wait_chain(["n1", "n3"])

Every process runs ``python -m mboard control|node --config <yaml>`` with its output in
``<tmp_path>/<name>.log``, in a session of its own, and ``close()`` kills them all (and
whatever they started).
Never sleep to synchronize: wait on a condition with ``wait_for``.
"""

from __future__ import annotations

import contextlib
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import yaml
from google.protobuf import empty_pb2

from mboard.api import cluster_pb2, cluster_pb2_grpc
from mboard.api import razpravljalnica_pb2 as pb
from mboard.api import razpravljalnica_pb2_grpc as pb_grpc
from mboard.grpc_util import FAST_RECONNECT
from mboard.up import mboard_command

REPO = Path(__file__).resolve().parents[1]
CONTROL = "control"
# Short timings so failures are detected quickly in tests.
CONTROL_DEFAULTS = {"heartbeat_interval": 0.2, "failure_timeout": 1.5, "lease": 0.8}
# Generous: a loaded 2-core machine needs a few seconds to start Python with gRPC.
START_TIMEOUT = 30.0
WAIT_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
RPC_TIMEOUT = 2.0
POLL_INTERVAL = 0.05
PORTS_FROM = 10000
LOG_TAIL_LINES = 25

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition did not hold in time; the message carries the processes' log tails."""


def free_port() -> int:
    """A free loopback port for a child process to listen on."""
    return free_ports(1)


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports.

    Chosen below the kernel's ephemeral range: a port from bind(0) could be taken by some
    outgoing connection before the child (slow to start) binds it; these never are.
    """
    while True:
        first = random.randrange(PORTS_FROM, _ephemeral_start() - count)
        ports = range(first, first + count)
        if not _handed_out.intersection(ports) and all(map(_bindable, ports)):
            _handed_out.update(ports)
            return first


_handed_out: set[int] = set()


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class Process:
    name: str
    argv: list[str]
    log_path: Path
    address: str | None = None
    # Returns something true once the process serves (None: nothing to wait for).
    ready: Callable[[], object] | None = None
    popen: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def state(self) -> str:
        if self.popen is None:
            return "not started"
        code = self.popen.poll()
        return "running" if code is None else f"exited with code {code}"


class Cluster:
    def __init__(self, tmp_path: Path) -> None:
        self.dir = Path(tmp_path)
        self.processes: dict[str, Process] = {}
        self._channels: dict[str, grpc.Channel] = {}

    # ------------------------------------------------------------ processes

    @property
    def control_address(self) -> str:
        return self.address(CONTROL)

    def address(self, name: str) -> str:
        address = self.processes[name].address
        assert address, f"{name} has no address"
        return address

    def start_control(self, **overrides: Any) -> str:
        """Start the control plane with test timings (``overrides`` are config keys)."""
        port = free_port()
        settings = {
            "listen": f"127.0.0.1:{port}",
            "data_dir": str(self.dir / CONTROL),
            **CONTROL_DEFAULTS,
            **overrides,
        }
        self._start_with_config(CONTROL, "control", settings, self.cluster_state, wait=True)
        return self.control_address

    def start_node(
        self,
        node_id: str,
        *,
        wait: bool = True,
        max_file_bytes: int | None = None,
        **overrides: Any,
    ) -> str:
        """Start node ``node_id`` against the running control plane; return its address.

        With ``wait`` it returns once the node answers Node.Status (serving, not yet
        necessarily in the chain: use ``wait_chain`` for that). ``max_file_bytes``: no file
        it writes may grow past this, as if its disk were full (``file_size_limited``).
        """
        settings = {
            "id": node_id,
            "listen": f"127.0.0.1:{free_port()}",
            "data_dir": str(self.dir / node_id),
            **overrides,
        }
        if "control" not in settings:  # else a control plane the test fakes
            settings["control"] = self.control_address

        def serving() -> cluster_pb2.NodeStatus:
            return self.node_status(node_id, with_digest=False)

        self._start_with_config(node_id, "node", settings, serving, wait, max_file_bytes)
        return self.address(node_id)

    def start_chain(
        self,
        node_ids: Sequence[str],
        control: dict | None = None,
        max_file_bytes: dict[str, int] | None = None,
        **node_overrides: Any,
    ) -> None:
        """Start a control plane (``control``: its config overrides) and ``node_ids`` in
        order (each with ``node_overrides``, and its ``max_file_bytes`` if it has one);
        return once they form one chain, head first."""
        self.start_control(**(control or {}))
        limits = max_file_bytes or {}
        for node_id in node_ids:
            self.start_node(node_id, max_file_bytes=limits.get(node_id), **node_overrides)
        self.wait_chain(list(node_ids))

    def spawn(
        self,
        name: str,
        argv: list[str],
        address: str | None = None,
        ready: Callable[[], object] | None = None,
        wait: bool = True,
    ) -> Process:
        """Start any command as process ``name`` (output to ``<name>.log``).

        Given ``ready``, it waits (unless not ``wait``) until ``ready()`` returns something
        true; so does ``restart``.
        """
        assert name not in self.processes or not self.processes[name].running, (
            f"{name} is already running"
        )
        process = Process(name, argv, self.dir / f"{name}.log", address, ready)
        self.processes[name] = process
        self._launch(process)
        if ready is not None and wait:
            self._wait_started(process)
        return process

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the process; after SIGKILL, also wait until it is gone."""
        process = self.processes[name]
        if not process.running:
            return
        process.popen.send_signal(sig)
        if sig == signal.SIGKILL:
            process.popen.wait(STOP_TIMEOUT)

    def stop(self, name: str, timeout: float = STOP_TIMEOUT) -> int:
        """Stop gracefully (SIGTERM), SIGKILL after ``timeout``; return the exit code."""
        process = self.processes[name]
        if process.running:
            process.popen.send_signal(signal.SIGCONT)  # a paused process cannot stop
            process.popen.terminate()
            try:
                process.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait(STOP_TIMEOUT)
        return process.popen.returncode

    def pause(self, name: str) -> None:
        self.kill(name, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.kill(name, signal.SIGCONT)

    def restart(self, name: str, *, wait: bool = True) -> None:
        """Stop the process if it still runs, then start it with the same command line."""
        self.stop(name)
        process = self.processes[name]
        self._launch(process)
        if process.ready is not None and wait:
            self._wait_started(process)

    def close(self) -> None:
        """Kill every process started here (and anything they started), close channels."""
        for process in self.processes.values():
            if process.popen is not None:
                _kill_with_descendants(process.popen)
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()

    def logs(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of every process's log, with each process's state."""
        parts = []
        for process in self.processes.values():
            parts.append(f"----- {process.name} ({process.state()}), {process.log_path}")
            parts.append(process.log_tail(lines))
        return "\n".join(parts)

    # ----------------------------------------------------------------- waiting

    def wait_for(
        self,
        predicate: Callable[[], T],
        timeout: float = WAIT_TIMEOUT,
        what: str | Callable[[], str] = "",
        interval: float = POLL_INTERVAL,
    ) -> T:
        """Poll ``predicate`` every ``interval`` seconds until it returns something true and
        return that.

        RPC and OS errors count as "not yet". On timeout, raise WaitTimeout naming ``what``
        (a callable is asked at that moment), the last error and the process logs' tails.
        """
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while True:
            try:
                result = predicate()
                if result:
                    return result
            except (grpc.RpcError, OSError) as exc:
                last_error = exc
            if time.monotonic() >= deadline:
                break
            time.sleep(interval)
        error = f"\nlast error: {_describe(last_error)}" if last_error else ""
        what = what() if callable(what) else what or repr(predicate)
        raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what}{error}\n{self.logs()}")

    def wait_chain(
        self, node_ids: list[str], timeout: float = WAIT_TIMEOUT
    ) -> pb.GetClusterStateResponse:
        """Wait until the chain is exactly ``node_ids``, head first."""

        def chain_matches() -> pb.GetClusterStateResponse | None:
            state = self.cluster_state()
            return state if [n.node_id for n in state.chain] == list(node_ids) else None

        return self.wait_for(
            chain_matches, timeout, lambda: f"chain {node_ids} (now {self._chain_or_error()})"
        )

    # --------------------------------------------------------------- queries

    def cluster_state(self) -> pb.GetClusterStateResponse:
        stub = pb_grpc.ControlPlaneStub(self.channel(self.control_address))
        return stub.GetClusterState(empty_pb2.Empty(), timeout=RPC_TIMEOUT)

    def chain(self) -> list[str]:
        return [n.node_id for n in self.cluster_state().chain]

    def control_status(self) -> cluster_pb2.ClusterStatus:
        """Control.GetStatus: the configuration and every member's reported progress."""
        return self.control_stub().GetStatus(empty_pb2.Empty(), timeout=RPC_TIMEOUT)

    def node_status(self, name: str, with_digest: bool = True) -> cluster_pb2.NodeStatus:
        request = cluster_pb2.StatusRequest(with_digest=with_digest)
        return self.node_stub(name).Status(request, timeout=RPC_TIMEOUT)

    def control_stub(self) -> cluster_pb2_grpc.ControlStub:
        return cluster_pb2_grpc.ControlStub(self.channel(self.control_address))

    def node_stub(self, name: str) -> cluster_pb2_grpc.NodeStub:
        return cluster_pb2_grpc.NodeStub(self.channel(self.address(name)))

    def board(self, name: str) -> pb_grpc.MessageBoardStub:
        """The public MessageBoard service of node ``name``."""
        return pb_grpc.MessageBoardStub(self.channel(self.address(name)))

    def channel(self, address: str) -> grpc.Channel:
        """A cached channel to ``address`` (closed by ``close``)."""
        if address not in self._channels:
            # Reconnects at once to a restarted process instead of backing off for seconds.
            self._channels[address] = grpc.insecure_channel(address, options=FAST_RECONNECT)
        return self._channels[address]

    # -------------------------------------------------------------- internals

    def _start_with_config(
        self,
        name: str,
        role: str,
        settings: dict,
        ready: Callable[[], object],
        wait: bool,
        max_file_bytes: int | None = None,
    ) -> None:
        config_path = self.dir / f"{name}.yaml"
        config_path.write_text(yaml.safe_dump(settings, sort_keys=False))
        argv = mboard_command(role, "--config", str(config_path))
        if max_file_bytes is not None:
            argv = file_size_limited(argv, max_file_bytes)
        self.spawn(name, argv, settings["listen"], ready, wait)

    def _launch(self, process: Process) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        with process.log_path.open("ab") as log:
            log.write(f"===== {' '.join(process.argv)}\n".encode())
            log.flush()
            # Its own process group: close() can kill whatever it starts, and Ctrl+C in a
            # terminal running pytest does not reach it directly.
            process.popen = subprocess.Popen(
                process.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                env=env,
                start_new_session=True,
            )

    def _wait_started(self, process: Process) -> None:
        def started() -> object:
            if not process.running:
                raise WaitTimeout(
                    f"{process.name} {process.state()} during start-up\n{self.logs()}"
                )
            return process.ready()

        self.wait_for(started, START_TIMEOUT, f"{process.name} to start")

    def _chain_or_error(self) -> str:
        try:
            return str(self.chain())
        except grpc.RpcError as exc:
            return _describe(exc)


# Sets the file size limit, then becomes the command: no preexec_fn in a process that
# runs gRPC's threads.
_FILE_SIZE_LIMITED = (
    "import os, resource, sys; limit = int(sys.argv[1]); "
    "_, hard = resource.getrlimit(resource.RLIMIT_FSIZE); "
    "resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard)); "
    "os.execvp(sys.argv[2], sys.argv[2:])"
)


def make_room(pid: int) -> None:
    """Lift the file size limit of a process started ``file_size_limited``."""
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))


def file_size_limited(argv: list[str], max_bytes: int) -> list[str]:
    """``argv``, run so that no file it writes grows past ``max_bytes``: a write beyond
    fails (EFBIG) as on a full disk. Python ignores SIGXFSZ, which would kill it instead.
    Only the soft limit: ``make_room`` can lift it again (``resource.prlimit`` on the pid,
    which stays the same through the exec)."""
    return [sys.executable, "-c", _FILE_SIZE_LIMITED, str(max_bytes), *argv]


def _kill_with_descendants(popen: subprocess.Popen) -> None:
    """SIGKILL the process, its group and every process it started (``mboard up`` puts its
    children in sessions of their own)."""
    family = []
    if popen.poll() is None:
        os.kill(popen.pid, signal.SIGSTOP)  # frozen, it starts nothing new while we look
        family = descendants(popen.pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signal.SIGKILL)
    for pid in family:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        popen.wait(STOP_TIMEOUT)
    # They are not our children, so we cannot wait() for them: watch them die instead.
    deadline = time.monotonic() + STOP_TIMEOUT
    while any(alive(pid) for pid in family) and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL)


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs. A zombie whose threads have all exited has released its
    ports; its main thread alone may turn zombie while the others still tear down."""
    fields = _stat_fields(Path(f"/proc/{pid}/stat"))
    if fields is None:
        return False
    if fields[0] not in ("Z", "X"):
        return True
    try:
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except OSError:
        return False


def _stat_fields(stat: Path) -> list[str] | None:
    """The fields of /proc/<pid>/stat after "pid (comm)": state, ppid, ...; None once gone."""
    try:
        # comm may hold spaces and parentheses: split after the last ")".
        return stat.read_text().rpartition(")")[2].split()
    except OSError:
        return None


def descendants(pid: int) -> list[int]:
    """Pids of the processes below ``pid`` (Linux /proc; none elsewhere)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat_fields(stat)
        if fields:
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found.extend(below)
        todo.extend(below)
    return found


def _describe(error: Exception) -> str:
    if isinstance(error, grpc.RpcError) and hasattr(error, "code"):
        return f"{error.code().name}: {error.details()}"
    return repr(error)
