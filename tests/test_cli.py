"""The click CLI without a cluster: flags, one-line errors, configuration and wiring."""

from __future__ import annotations

import importlib.abc
import json
import logging
import re
import sys
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from mboard import __version__, cli, logs
from mboard.__main__ import main as entry_point
from mboard.cli import client_config

pytestmark = pytest.mark.timeout(60)


def invoke(*args: str, env: dict | None = None):
    return CliRunner().invoke(cli.cli, list(args), prog_name="mboard", env=env)


def test_version() -> None:
    result = invoke("--version")
    assert (result.exit_code, result.stdout) == (0, f"mboard, version {__version__}\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["client"], "error: missing command (one of: create-user,"),
        (["client", "frobnicate"], "error: unknown command 'frobnicate'"),
        (["client", "post", "1"], "error: post: missing <user_id>"),
        (
            ["client", "post", "one", "1", "hi"],
            "error: post: topic_id must be an integer, got 'one'",
        ),
        (["client", "like", "1", "2", "3", "4"], "error: like: unexpected argument '4'"),
        (["client", "get-messages", "1", "x"], "error: get-messages: from_id must be an integer"),
        (["client", "subscribe", "1", "2", "x"], "error: subscribe: topic_id must be an integer"),
        (["client", "get-user", str(2**63)], "error: get-user: user_id is out of range"),
        (["client", "shell", "now"], "error: shell: unexpected argument 'now'"),
        (["client", "--timeout", "soon", "list-topics"], "error: Invalid value for '--timeout'"),
        (["client", "--timeout", "0", "list-topics"], "error: command line: timeout: must be > 0"),
        (["client", "--nope", "list-topics"], "error: No such option '--nope'"),
        (["client", "--control", "nowhere", "list-topics"], "error: command line: control:"),
        (["frobnicate"], "error: No such command 'frobnicate'"),
        (["node"], "error: Missing option '--config'"),
        (["up", "--nodes", "0"], "error: Invalid value for '--nodes'"),
        (["up", "--control", "nowhere"], "error: Invalid value for '--control'"),
        (["status", "--watch=yes"], "error: Option '--watch' does not take a value"),
    ],
)
def test_bad_command_line_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(message)


def test_bad_config_file(tmp_path: Path) -> None:
    bad = tmp_path / "client.yaml"
    bad.write_text("control: [127.0.0.1\n")
    result = invoke("client", "--config", str(bad), "list-topics")
    assert result.exit_code == 2
    assert re.fullmatch(
        rf"error: {re.escape(str(bad))}: line \d+: not valid YAML: .*\n", result.stderr
    )

    bad.write_text("controll: 127.0.0.1:1\n")
    result = invoke("client", "--config", str(bad), "list-topics")
    assert (result.exit_code, result.stderr.count("\n")) == (2, 1)
    assert result.stderr.startswith(f"error: {bad}: controll: unknown key")


def test_config_file_that_is_not_utf8_text(tmp_path: Path) -> None:
    bad = tmp_path / "node.yaml"
    bad.write_bytes(b"id: n1\nlisten: 127.0.0.1:1\n# caf\xe9\n")  # Latin-1, not UTF-8
    result = invoke("node", "--config", str(bad))
    assert (result.exit_code, result.stderr) == (
        2,
        f"error: {bad}: not valid YAML: not UTF-8 text (byte 0xe9 at offset 32)\n",
    )


def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    result = invoke("control", "--config", str(missing))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {missing}: cannot read:")


def test_ctrl_c_while_the_cli_loads_exits_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    class InterruptedImport(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "mboard.cli":
                raise KeyboardInterrupt  # Ctrl+C while Python loads the command line
            return None

    monkeypatch.delitem(sys.modules, "mboard.cli")
    monkeypatch.setattr(sys, "meta_path", [InterruptedImport(), *sys.meta_path])
    try:
        entry_point()
    except KeyboardInterrupt:  # caught here, or it would end the whole test session
        pytest.fail("Ctrl+C while loading escaped as KeyboardInterrupt: a traceback")
    except SystemExit as exited:
        assert exited.code == 130
    else:
        pytest.fail("the entry point returned after an interrupted load")


def test_bare_mboard_shows_help() -> None:
    result = invoke()
    assert "Usage: mboard" in result.output
    assert "client" in result.output


def test_client_help_lists_the_commands() -> None:
    result = invoke("client", "--help")
    assert result.exit_code == 0
    for usage in ("post <topic_id> <user_id> <text...>", "get-messages <topic_id> [from_id]"):
        assert usage in result.stdout
    assert "  shell " in result.stdout


def test_client_command_help_shows_that_commands_usage() -> None:
    result = invoke("client", "get-messages", "--help")
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout.startswith("usage: get-messages <topic_id> [from_id] [limit]\n")


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_shell_help_shows_its_usage_without_starting_it(flag: str) -> None:
    result = invoke("client", "shell", flag)
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == "usage: shell\n  Interactive shell with the same commands\n"


def test_up_help_says_what_each_option_does() -> None:
    result = invoke("up", "--help")
    assert result.exit_code == 0
    for option, words in [
        ("--nodes", "Data nodes to start"),
        ("--data-dir", "Everything kept"),
        ("--control", "Where the control plane listens"),
        ("--base-port", "node1 listens here"),
    ]:
        line = next(line for line in result.stdout.splitlines() if line.strip().startswith(option))
        assert words in line, line


# ------------------------------------------------------------------ configuration


def test_control_address_precedence(tmp_path: Path) -> None:
    config = tmp_path / "client.yaml"
    config.write_text("control: 10.0.0.1:1\ntimeout: 3\n")
    env = {"MBOARD_CONTROL": "10.0.0.2:2"}
    assert client_config(None, None, None, {}).control == "127.0.0.1:50050"
    assert client_config(str(config), None, None, {}).control == "10.0.0.1:1"
    assert client_config(str(config), None, None, env).control == "10.0.0.2:2"
    assert client_config(str(config), "10.0.0.3:3", None, env).control == "10.0.0.3:3"
    assert client_config(str(config), None, None, {}).timeout == 3
    assert client_config(str(config), None, 0.5, {}).timeout == 0.5


# -------------------------------------------------------- server commands wiring


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list:
    """Replace the server entry points (and logging setup) with recorders."""
    seen: list = []
    for name in ("mboard.control.server", "mboard.node.server", "mboard.up"):
        module = types.ModuleType(name)
        module.run = lambda *args, _name=name, **kwargs: seen.append((_name, args, kwargs))
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(logs, "setup", lambda *args: seen.append(("logs", args, {})))
    return seen


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("failure_timeout: 2\nlease: 2\n", "lease", "must be shorter than failure_timeout"),
        ("heartbeat_interval: 3\n", "heartbeat_interval", "must be shorter than failure_timeout"),
        ("metrics: {listn: 127.0.0.1:9100}\n", "metrics.listn", "unknown key"),
        ("log: {level: info, fromat: json}\n", "log.fromat", "unknown key"),
        ('secret: ""\n', "secret", "must not be empty (leave the key out"),
    ],
)
def test_bad_control_config_names_the_file_key_and_problem(
    calls: list, tmp_path: Path, text: str, key: str, problem: str
) -> None:
    config = tmp_path / "control.yaml"
    config.write_text(text)
    result = invoke("control", "--config", str(config))
    assert (result.exit_code, result.stderr.count("\n")) == (2, 1), result.stderr
    assert result.stderr.startswith(f"error: {config}: {key}: {problem}"), result.stderr
    assert not [call for call in calls if call[0] == "mboard.control.server"]


def test_control_command_applies_overrides(calls: list, tmp_path: Path) -> None:
    config = tmp_path / "control.yaml"
    config.write_text("listen: 127.0.0.1:6000\nlog: {level: debug}\n")
    result = invoke("control", "--config", str(config), "--data-dir", "x", "--log-format", "json")
    assert result.exit_code == 0, result.stderr
    (_, log_args, _), (name, (loaded, exit_with_parent), _) = calls
    assert log_args == ("debug", "json")
    assert name == "mboard.control.server"
    assert (loaded.listen, loaded.data_dir) == ("127.0.0.1:6000", "x")
    assert exit_with_parent is False  # only `mboard up` asks for it


@pytest.mark.parametrize("role", ["control", "node"])
def test_servers_can_be_told_to_exit_with_their_parent(
    calls: list, tmp_path: Path, role: str
) -> None:
    config = tmp_path / "node.yaml"
    config.write_text("id: n1\nlisten: 127.0.0.1:6001\n")
    needs = ["--config", str(config)] if role == "node" else []  # a node has no defaults
    result = invoke(role, *needs, "--exit-with-parent")
    assert result.exit_code == 0, result.stderr
    name, (_, exit_with_parent), _ = calls[-1]
    assert (name, exit_with_parent) == (f"mboard.{role}.server", True)


def test_control_command_runs_without_a_config_file(calls: list) -> None:
    assert invoke("control").exit_code == 0
    assert calls[-1][1][0].listen == "127.0.0.1:50050"


def test_node_command_applies_overrides(calls: list, tmp_path: Path) -> None:
    config = tmp_path / "node.yaml"
    config.write_text("id: n1\nlisten: 127.0.0.1:6001\n")
    result = invoke(
        "node", "--config", str(config), "--id", "n9", "--advertise", "10.1.1.1:6001",
        "--durability", "normal",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    name, (loaded, _), _ = calls[-1]
    assert name == "mboard.node.server"
    assert (loaded.id, loaded.address, loaded.durability) == ("n9", "10.1.1.1:6001", "normal")


def test_node_command_rejects_a_bad_override(calls: list, tmp_path: Path) -> None:
    config = tmp_path / "node.yaml"
    config.write_text("id: n1\nlisten: 127.0.0.1:6001\n")
    result = invoke("node", "--config", str(config), "--durability", "sometimes")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {config}: durability: must be one of full, normal")
    assert not [c for c in calls if c[0] == "mboard.node.server"]


def test_up_command_passes_its_options(calls: list) -> None:
    result = invoke("up", "--nodes", "5", "--base-port", "7001", "--data-dir", "d")
    assert result.exit_code == 0, result.stderr
    assert calls[-1] == (
        "mboard.up",
        (),
        {"nodes": 5, "data_dir": "d", "control": "127.0.0.1:50050", "base_port": 7001},
    )


def test_server_that_cannot_listen_is_one_line(
    calls: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    def busy(config: object, exit_with_parent: bool) -> None:
        raise OSError("control plane cannot listen on 127.0.0.1:50050: address in use")

    monkeypatch.setattr(sys.modules["mboard.control.server"], "run", busy)
    result = invoke("control")
    assert (result.exit_code, result.stderr) == (
        1,
        "error: control plane cannot listen on 127.0.0.1:50050: address in use\n",
    )


# ------------------------------------------------------------------------ logging


@pytest.fixture
def root_logger():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield root
    root.handlers[:], level = saved
    root.setLevel(level)


def test_text_logs(root_logger: logging.Logger, capsys: pytest.CaptureFixture) -> None:
    logs.setup("info", "text")
    logging.getLogger("mboard.node").info("applied %d entries", 3)
    logging.getLogger("mboard.node").debug("hidden")
    line = capsys.readouterr().err
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} INFO mboard.node: applied 3 entries\n", line
    )


def test_a_client_hanging_up_mid_stream_is_no_error_in_the_log(
    root_logger: logging.Logger, capsys: pytest.CaptureFixture
) -> None:
    grpc_log = logging.getLogger("grpc._cython.cygrpc")
    gone = "ExecuteBatchError raised in core by servicer method [/razpravljalnica.X/Y]"
    try:
        logs.setup("info", "text")
        grpc_log.error(gone)
        grpc_log.error("something else went wrong")
        assert capsys.readouterr().err.count("ERROR grpc._cython.cygrpc") == 1
        logs.setup("debug", "text")  # kept for whoever debugs
        grpc_log.error(gone)
        assert "ExecuteBatchError" in capsys.readouterr().err
    finally:
        grpc_log.filters.clear()


def test_json_logs(root_logger: logging.Logger, capsys: pytest.CaptureFixture) -> None:
    logs.setup("debug", "json")
    logging.getLogger("mboard.control").debug("epoch %d", 7)
    entry = json.loads(capsys.readouterr().err)
    assert entry["msg"] == "epoch 7"
    assert (entry["level"], entry["logger"]) == ("DEBUG", "mboard.control")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", entry["ts"])
