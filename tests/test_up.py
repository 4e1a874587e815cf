"""``mboard up``: the whole cluster as child processes of one command."""

from __future__ import annotations

import contextlib
import os
import signal
import socket

import pytest
from google.protobuf import empty_pb2
from harness import START_TIMEOUT, alive, descendants, free_port, free_ports

from mboard.api import razpravljalnica_pb2_grpc as pb_grpc
from mboard.up import mboard_command

READY = "Ready. Ctrl+C to stop."


def refuses_connections(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def up_command(tmp_path, nodes: int, control: str, base_port: int) -> list[str]:
    return mboard_command(
        "up",
        *("--nodes", str(nodes), "--data-dir", str(tmp_path / "data")),
        *("--control", control, "--base-port", str(base_port)),
    )


def start_up(
    cluster, tmp_path, nodes: int, name: str = "up", ports: tuple[str, int] | None = None
) -> tuple[str, int]:
    """Run ``mboard up`` as process ``name`` until it is ready; return its control address
    and base port (``ports``, or free ones)."""
    control, base_port = ports or (f"127.0.0.1:{free_port()}", free_ports(nodes))
    up = cluster.spawn(name, up_command(tmp_path, nodes, control, base_port))
    cluster.wait_for(lambda: READY in up.log(), START_TIMEOUT * nodes, f"{name} to be ready")
    return control, base_port


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


@pytest.mark.parametrize("nodes", [1, 3])
def test_up_prints_the_addresses_and_stops_cleanly_on_sigterm(cluster, tmp_path, nodes):
    control, base_port = start_up(cluster, tmp_path, nodes)
    output = cluster.processes["up"].log()
    assert f"control  {control}" in output
    roles = ["head+tail"] if nodes == 1 else ["head", "middle", "tail"]
    for number, role in enumerate(roles, start=1):
        assert f"node{number}    127.0.0.1:{base_port + number - 1}  {role}" in output

    state = pb_grpc.ControlPlaneStub(cluster.channel(control)).GetClusterState(
        empty_pb2.Empty(), timeout=5
    )
    assert [n.node_id for n in state.chain] == [f"node{n}" for n in range(1, nodes + 1)]

    assert cluster.stop("up") == 0
    assert "Stopped." in cluster.processes["up"].log()
    for port in [port_of(control), *range(base_port, base_port + nodes)]:
        assert refuses_connections(port), f"something still listens on port {port}"
    for name in ["control", *(f"node{n}" for n in range(1, nodes + 1))]:
        assert (tmp_path / "data" / "logs" / f"{name}.log").exists()


def test_up_restarts_on_existing_data_after_ctrl_c(cluster, tmp_path):
    ports = start_up(cluster, tmp_path, nodes=2, name="first")
    cluster.kill("first", signal.SIGINT)
    assert cluster.processes["first"].popen.wait(START_TIMEOUT) == 0

    start_up(cluster, tmp_path, nodes=2, name="second", ports=ports)
    assert cluster.stop("second") == 0


def test_up_fails_naming_a_child_that_cannot_start(cluster, tmp_path):
    # The control plane's data directory is a file: it cannot start.
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "control").write_text("not a directory")
    control = f"127.0.0.1:{free_port()}"
    up = cluster.spawn("up", up_command(tmp_path, 1, control, free_port()))
    assert up.popen.wait(START_TIMEOUT) == 1
    output = up.log()
    assert "error: control exited with code 1 during start-up; last lines of" in output
    assert "control" in output.split("last lines of", 1)[1]


def test_up_refuses_a_busy_port(cluster, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        control = f"127.0.0.1:{busy.getsockname()[1]}"
        up = cluster.spawn("up", up_command(tmp_path, 1, control, free_port()))
        assert up.popen.wait(START_TIMEOUT) == 1
    assert f"error: cannot listen on {control}" in up.log()


def test_a_second_up_on_the_same_data_dir_says_so_and_starts_nothing(cluster, tmp_path):
    start_up(cluster, tmp_path, nodes=1, name="first")
    second = cluster.spawn(
        "second", up_command(tmp_path, 1, f"127.0.0.1:{free_port()}", free_ports(1))
    )
    assert second.popen.wait(START_TIMEOUT) == 1
    first_pid = cluster.processes["first"].popen.pid
    data = (tmp_path / "data").resolve()
    _, *output = second.log().splitlines()  # the harness's "===== <command>" first
    assert output == [
        f"error: data directory {data} is in use by another mboard up (pid {first_pid})"
    ]


# When the nodes re-register before the control plane's grace period ends, the restarted
# members queue as learners behind learners and run into the bug.
def test_up_restarts_after_everything_was_killed(cluster, tmp_path):
    control, base_port = start_up(cluster, tmp_path, nodes=3, name="first")
    cluster.close()  # SIGKILL to up and, through the harness, to each of its children
    for port in [port_of(control), *range(base_port, base_port + 3)]:
        assert refuses_connections(port), f"something still listens on port {port}"

    start_up(cluster, tmp_path, nodes=3, name="second", ports=(control, base_port))
    assert cluster.stop("second") == 0


def test_up_warns_about_a_child_that_exits(cluster, tmp_path):
    start_up(cluster, tmp_path, nodes=1)
    up = cluster.processes["up"]
    node_pid = int((tmp_path / "data" / "node1" / "LOCK").read_text())  # the node writes it
    os.kill(node_pid, signal.SIGKILL)
    warning = "warning: node1 exited with code -9; see "
    cluster.wait_for(lambda: warning in up.log(), START_TIMEOUT, "the warning about node1")
    assert cluster.stop("up") == 0


def test_children_stop_when_up_is_killed(cluster, tmp_path):
    """SIGKILL leaves `mboard up` no chance to stop its children: they notice it is gone
    (their stdin pipe closes) and stop by themselves, freeing every port."""
    control, base_port = start_up(cluster, tmp_path, nodes=3)
    children = descendants(cluster.processes["up"].popen.pid)
    assert len(children) == 4  # the control plane and three nodes
    try:
        cluster.kill("up")
        ports = [port_of(control), *range(base_port, base_port + 3)]
        cluster.wait_for(
            lambda: not any(alive(pid) for pid in children),
            START_TIMEOUT,
            "the children of a killed `mboard up` to stop",
        )
        assert all(refuses_connections(port) for port in ports)
    finally:
        for pid in children:  # whatever the outcome, leave nothing running
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
