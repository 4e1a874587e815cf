"""``mboard up``: a control plane and N nodes on loopback, as child processes, until Ctrl+C.

Nodes start one at a time, each once the previous one has registered, so on a fresh data
directory the chain is node1, node2, ... (learners are promoted in the order they joined).
We wait for registration rather than for a place in the chain: after a restart on existing
data, a node may have to wait as a learner for a node started after it. Readiness is asked
of the nodes themselves: after a restart the control plane still lists the members it
persisted before they are back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import yaml
from google.protobuf import empty_pb2

from mboard import datadir, grpc_util
from mboard.api import cluster_pb2, cluster_pb2_grpc
from mboard.api import razpravljalnica_pb2 as pb
from mboard.api import razpravljalnica_pb2_grpc as pb_grpc

START_TIMEOUT_S = 30.0  # for each step: the control plane answering, one node joining, ...
STOP_TIMEOUT_S = 10.0  # per child, from SIGTERM to SIGKILL
RPC_TIMEOUT_S = 1.0
POLL_S = 0.1
LOG_TAIL_LINES = 15
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def mboard_command(*args: str) -> list[str]:
    """The command line that runs ``mboard ARGS`` (also from a PyInstaller binary)."""
    if getattr(sys, "frozen", False):
        return [sys.executable, *args]
    return [sys.executable, "-m", "mboard", *args]


@dataclass
class _Child:
    name: str
    address: str
    log_path: Path
    popen: subprocess.Popen

    def exit_code(self) -> int | None:
        return self.popen.poll()

    def log_tail(self) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        return "\n".join(f"  {line}" for line in lines)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _say(f"{self.name} did not stop within {STOP_TIMEOUT_S:g} s: killing it")
                self.popen.kill()
                self.popen.wait()


class _StartFailed(Exception):
    def __init__(self, message: str, child: _Child | None = None) -> None:
        super().__init__(message)
        self.child = child


class _Interrupted(Exception):
    pass


def run(
    nodes: int = 3,
    data_dir: str = "./data",
    control: str = "127.0.0.1:50050",
    base_port: int = 50051,
) -> None:
    """Run the cluster until SIGINT or SIGTERM, then stop it, tail first. Exit 1 if a child
    fails during start-up."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in _STOP_SIGNALS}
    cluster = _Cluster(Path(data_dir).resolve(), control, stop)
    try:
        cluster.start(nodes, base_port)
        cluster.watch()
    except _StartFailed as exc:
        if exc.child is None:
            print(f"error: {exc}", file=sys.stderr)
        else:
            print(f"error: {exc}; last lines of {exc.child.log_path}:", file=sys.stderr)
            print(exc.child.log_tail(), file=sys.stderr)
        raise SystemExit(1) from None
    except _Interrupted:
        pass
    finally:
        cluster.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Cluster:
    def __init__(self, data: Path, control: str, stop: threading.Event) -> None:
        self.data = data
        self.logs = data / "logs"
        self.control_address = control
        self.stop_requested = stop
        self.children: list[_Child] = []
        channel = grpc.insecure_channel(control, options=grpc_util.FAST_RECONNECT)
        self._channels = [channel]
        self._control_plane = pb_grpc.ControlPlaneStub(channel)
        self._node_stubs: dict[str, cluster_pb2_grpc.NodeStub] = {}
        self._lock: int | None = None

    def start(self, nodes: int, base_port: int) -> None:
        # A second `mboard up` on the same directory, on other ports, would get as far as
        # its control plane finding control/ locked: say so before starting anything.
        self._lock = datadir.lock(self.data, "mboard up")
        node_addresses = [f"127.0.0.1:{base_port + i}" for i in range(nodes)]
        # Something else answering on our addresses would be mistaken for our children.
        for address in [self.control_address, *node_addresses]:
            _check_free(address)
        self.logs.mkdir(parents=True, exist_ok=True)
        _say(f"Starting a control plane and {nodes} node(s); logs in {self.logs}")
        control = self._spawn(
            "control",
            self.control_address,
            ["control", "--listen", self.control_address, "--data-dir", str(self.data / "control")],
        )
        self._wait(control, "the control plane to answer", lambda: self._chain() is not None)
        for number, address in enumerate(node_addresses, start=1):
            node = self._start_node(f"node{number}", address)
            self._wait(node, f"{node.name} to register", lambda n=node: self._epoch_of(n) > 0)
        self._wait(self.children[-1], "every node to join the chain", self._all_in_chain)
        self._print_ready()

    def watch(self) -> None:
        """Wait for Ctrl+C or SIGTERM, telling once about any child that exits meanwhile."""
        reported: set[str] = set()
        while not self.stop_requested.wait(POLL_S * 5):
            for child in self.children:
                code = child.exit_code()
                if code is not None and child.name not in reported:
                    reported.add(child.name)
                    _say(f"warning: {child.name} exited with code {code}; see {child.log_path}")

    def stop(self) -> None:
        """Stop the nodes from the tail towards the head (learners first), then the control
        plane: every node leaves a working chain behind it."""
        if not self.children:
            return
        _say("Stopping...")
        control, nodes = self.children[0], self.children[1:]
        chain = self._chain() or []
        by_name = {child.name: child for child in nodes}
        in_chain = [by_name[name] for name in chain if name in by_name]
        others = [child for child in reversed(nodes) if child not in in_chain]
        for child in [*others, *reversed(in_chain)]:
            child.stop()
        control.stop()
        for channel in self._channels:
            channel.close()
        if self._lock is not None:
            os.close(self._lock)
        _say("Stopped.")

    # ------------------------------------------------------------------ internals

    def _start_node(self, name: str, address: str) -> _Child:
        node_dir = self.data / name
        node_dir.mkdir(parents=True, exist_ok=True)
        config = {
            "id": name,
            "listen": address,
            "data_dir": str(node_dir),
            "control": self.control_address,
        }
        config_path = node_dir / "node.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        return self._spawn(name, address, ["node", "--config", str(config_path)])

    def _spawn(self, name: str, address: str, args: list[str]) -> _Child:
        log_path = self.logs / f"{name}.log"
        with log_path.open("ab") as log:
            # Own session: Ctrl+C in the terminal reaches only us, and we stop the children
            # in order. Their stdin is a pipe only we hold: if we die, even by SIGKILL, it
            # closes and they stop too.
            popen = subprocess.Popen(
                mboard_command(*args, "--exit-with-parent"),
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        child = _Child(name, address, log_path, popen)
        self.children.append(child)
        return child

    def _wait(self, child: _Child, what: str, done: Callable[[], bool]) -> None:
        """Poll ``done`` until it holds; fail if any child exits or time runs out."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.stop_requested.is_set():
            for each in self.children:
                code = each.exit_code()
                if code is not None:
                    raise _StartFailed(f"{each.name} exited with code {code} during start-up", each)
            if done():
                return
            if time.monotonic() > deadline:
                raise _StartFailed(
                    f"timed out after {START_TIMEOUT_S:g} s waiting for {what}", child
                )
            self.stop_requested.wait(POLL_S)
        raise _Interrupted

    def _cluster_state(self) -> pb.GetClusterStateResponse | None:
        """The control plane's view of the chain; None if it does not answer."""
        try:
            return self._control_plane.GetClusterState(empty_pb2.Empty(), timeout=RPC_TIMEOUT_S)
        except grpc.RpcError:
            return None

    def _chain(self) -> list[str] | None:
        """The node ids in the chain, head first; None if the control plane does not answer."""
        state = self._cluster_state()
        return None if state is None else [node.node_id for node in state.chain]

    def _all_in_chain(self) -> bool:
        """Every node is in the chain, and every node runs that configuration."""
        state = self._cluster_state()
        if state is None:
            return False
        nodes = self.children[1:]
        if {n.node_id for n in state.chain} != {child.name for child in nodes}:
            return False
        return all(self._epoch_of(child) >= state.epoch for child in nodes)

    def _epoch_of(self, node: _Child) -> int:
        """The configuration epoch the node runs (0 before it registered or if it does not
        answer)."""
        if node.name not in self._node_stubs:
            channel = grpc.insecure_channel(node.address, options=grpc_util.FAST_RECONNECT)
            self._channels.append(channel)
            self._node_stubs[node.name] = cluster_pb2_grpc.NodeStub(channel)
        try:
            status = self._node_stubs[node.name].Status(
                cluster_pb2.StatusRequest(), timeout=RPC_TIMEOUT_S
            )
        except grpc.RpcError:
            return 0
        return status.epoch

    def _print_ready(self) -> None:
        chain = self._chain() or []
        by_name = {child.name: child for child in self.children}
        width = max(len(name) for name in by_name)
        _say(f"  {'control':<{width}}  {self.control_address}")
        for index, name in enumerate(chain):
            _say(f"  {name:<{width}}  {by_name[name].address}  {_role(index, len(chain))}")
        _say("Ready. Ctrl+C to stop.")


def _role(index: int, length: int) -> str:
    if length == 1:
        return "head+tail"
    if index == 0:
        return "head"
    return "tail" if index == length - 1 else "middle"


def _say(line: str) -> None:
    print(line, flush=True)


def _check_free(address: str) -> None:
    """Fail unless something could listen on ``address`` (a host:port)."""
    problem = grpc_util.cannot_listen(address)
    if problem:
        raise _StartFailed(f"cannot listen on {address}: {problem}")
