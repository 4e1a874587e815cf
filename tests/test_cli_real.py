"""The `mboard` command line against real node processes (issue 2, "done when").

The original README's example session, run as one-shot commands and through a piped shell,
prints exactly the original client's lines; `mboard node` refuses a broken configuration and
a data directory another node holds, each in one line, and so does a second control plane
on the running one's data directory; a node given an id a live node holds stops and says so.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml
from harness import Cluster, free_port
from test_client_e2e import EXAMPLE_SESSION, mboard

pytestmark = pytest.mark.timeout(240)

# Generous: the first read waits for the new tail's lease, on a machine that may be loaded.
CLIENT_TIMEOUT = "30"


def start_single_node(cluster: Cluster) -> str:
    cluster.start_chain(["n1"])
    return cluster.control_address


def client(control: str, *words: str, input: str | None = None):
    return mboard("client", "--control", control, "--timeout", CLIENT_TIMEOUT, *words, input=input)


def test_example_session_one_shot_against_a_real_node(cluster: Cluster) -> None:
    control = start_single_node(cluster)
    for line, expected in EXAMPLE_SESSION:
        result = client(control, *line.split())
        assert (result.returncode, result.stderr) == (0, ""), line
        assert result.stdout == expected + "\n", line


def test_example_session_through_a_piped_shell_against_a_real_node(cluster: Cluster) -> None:
    control = start_single_node(cluster)
    script = "".join(f"{line}\n" for line, _ in EXAMPLE_SESSION) + "quit\n"
    result = client(control, "shell", input=script)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "".join(f"{expected}\n" for _, expected in EXAMPLE_SESSION)


# ------------------------------------------------------------ mboard node

VALID_NODE = {"id": "n1", "listen": "127.0.0.1:1", "control": "127.0.0.1:2"}


@pytest.mark.parametrize(
    ("change", "key", "problem"),
    [
        ({"listne": "127.0.0.1:3"}, "listne", "unknown key"),
        ({"id": None}, "id", "required key is missing"),
        ({"listen": "nowhere"}, "listen", "is not a host:port address"),
        ({"control": "127.0.0.1:70000"}, "control", "out of range"),
        ({"max_text_length": "many"}, "max_text_length", "must be a whole number"),
        ({"max_text_length": 200_000}, "max_text_length", "must be 1..100000, got 200000"),
        ({"durability": "fast"}, "durability", "must be one of full, normal"),
        ({"log": {"level": "loud"}}, "log.level", "must be one of debug"),
    ],
)
def test_broken_node_config_is_one_line_naming_file_key_and_problem(
    tmp_path: Path, change: dict, key: str, problem: str
) -> None:
    settings = {**VALID_NODE, "data_dir": str(tmp_path / "data"), **change}
    config = tmp_path / "node.yaml"
    config.write_text(yaml.safe_dump({k: v for k, v in settings.items() if v is not None}))
    result = mboard("node", "--config", str(config))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: {config}: {key}: "), result.stderr
    assert problem in result.stderr
    assert not (tmp_path / "data").exists()  # it stopped before touching anything


def test_node_config_that_is_not_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "node.yaml"
    config.write_text("id: n1\nlisten: [127.0.0.1:1\n")
    result = mboard("node", "--config", str(config))
    assert (result.returncode, result.stdout, result.stderr.count("\n")) == (2, "", 1)
    assert result.stderr.startswith(f"error: {config}: line "), result.stderr
    assert "not valid YAML" in result.stderr


@pytest.mark.parametrize("role", ["node", "control"])
def test_a_taken_port_is_one_line(tmp_path: Path, role: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        config = tmp_path / f"{role}.yaml"
        settings = {"listen": address, "data_dir": str(tmp_path / role)}
        config.write_text(yaml.safe_dump({"id": "n1", **settings} if role == "node" else settings))
        result = mboard(role, "--config", str(config))
    what = "node n1" if role == "node" else "control plane"
    assert (result.returncode, result.stderr) == (
        1,
        f"error: {what} cannot listen on {address}: address already in use\n",
    )


def test_second_node_on_the_same_data_dir_refuses(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_chain(["n1"])
    data_dir = tmp_path / "n1"  # the harness puts n1's data here
    assert (data_dir / "board.db").exists()
    intruder = tmp_path / "n2.yaml"
    intruder.write_text(
        yaml.safe_dump(
            {
                "id": "n2",
                "listen": f"127.0.0.1:{free_port()}",
                "data_dir": str(data_dir),
                "control": cluster.control_address,
            }
        )
    )
    result = mboard("node", "--config", str(intruder))
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1, result.stderr
    pid = cluster.processes["n1"].popen.pid
    assert result.stderr == (
        f"error: data directory {data_dir} is in use by another mboard node (pid {pid})\n"
    )
    # The refused node never joined, and the one that owns the directory still serves.
    assert [m.node.node_id for m in cluster.control_status().members] == ["n1"]
    assert cluster.node_status("n1").role == "head+tail"


@pytest.mark.parametrize("role", ["node", "control"])
def test_a_full_disk_at_start_up_is_one_line(tmp_path: Path, role: str) -> None:
    data_dir = tmp_path / role
    if role == "node":
        config = tmp_path / "node.yaml"
        settings = {**VALID_NODE, "listen": f"127.0.0.1:{free_port()}", "data_dir": str(data_dir)}
        config.write_text(yaml.safe_dump(settings))
        args, database = ["node", "--config", str(config)], data_dir / "board.db"
    else:
        args = ["control", "--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(data_dir)]
        database = data_dir / "control.db"
    result = mboard(*args, max_file_bytes=1000)  # room for the LOCK file, not the database
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: cannot write {database}: disk I/O error (SQLITE_")
    assert result.stderr.count("\n") == 1, result.stderr


def test_second_control_plane_on_the_same_data_dir_refuses(cluster: Cluster) -> None:
    cluster.start_chain(["n1", "n2"])
    before = cluster.control_status()
    data_dir = cluster.dir / "control"  # the harness puts the control plane's state here
    assert (data_dir / "control.db").exists()
    result = mboard("control", "--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(data_dir))
    pid = cluster.processes["control"].popen.pid
    assert (result.returncode, result.stderr) == (
        1,
        f"error: data directory {data_dir} is in use by another mboard control plane (pid {pid})\n",
    )
    # It never ran: a second control plane on the same state would have found the nodes
    # silent (they heartbeat to the first) and saved a new epoch without them.
    after = cluster.control_status()
    assert after.config.epoch == before.config.epoch
    assert [m.node.node_id for m in after.members] == ["n1", "n2"]
    assert cluster.node_status("n1").role == "head"


def test_a_node_given_an_id_a_live_node_holds_stops_and_says_so(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.start_chain(["n1", "n2"])
    before = cluster.control_status()
    config = tmp_path / "second-n2.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "id": "n2",
                "listen": f"127.0.0.1:{free_port()}",
                "data_dir": str(tmp_path / "second-n2"),
                "control": cluster.control_address,
            }
        )
    )
    result = mboard("node", "--config", str(config))
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"error: the control plane at {cluster.control_address} refused node n2: node id n2 "
        f"is taken by a live node at {cluster.address('n2')}: give this node another id, "
        "or stop that one first"
    )
    # The chain never changed: the live n2 is still the tail, serving reads.
    assert cluster.control_status().config == before.config
    assert cluster.node_status("n2").serving_reads
