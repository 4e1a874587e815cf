"""The ``mboard`` command line. Commands stay thin: they parse flags and call into the package.

Server roles are imported inside their commands, so client commands start fast.
Every error is one line on stderr, ``error: ...``: exit code 2 for a bad command line or
configuration, 1 for a failed operation.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import click

from mboard import __version__, grpc_util, logs
from mboard.api import cluster_pb2
from mboard.client import BoardError, Client, commands, shell
from mboard.client import status as cluster_status
from mboard.config import (
    DEFAULT_CONTROL,
    ClientConfig,
    Config,
    ConfigError,
    ControlConfig,
    NodeConfig,
    check_address,
    load,
)

CONTROL_ENV = "MBOARD_CONTROL"


class CliError(click.ClickException):
    """Printed as one line, ``error: <message>``, then exit with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        click.echo("error: " + " ".join(self.format_message().split()), err=True)


@contextlib.contextmanager
def _one_line_usage_errors() -> Iterator[None]:
    try:
        yield
    except click.exceptions.NoArgsIsHelpError:
        raise  # a bare `mboard` shows the help
    except click.UsageError as exc:
        raise CliError(exc.format_message(), exit_code=2) from None


class OneLineErrorsGroup(click.Group):
    """A group whose bad command lines (its own or its commands') fail in one line, exit 2,
    instead of click's usage block."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        with _one_line_usage_errors():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        with _one_line_usage_errors():
            return super().invoke(ctx)


def load_config(cls: type[Config], path: str | None, overrides: dict) -> Config:
    try:
        return load(cls, path, overrides)
    except ConfigError as exc:
        raise CliError(str(exc), exit_code=2) from None


def client_config(
    path: str | None,
    control: str | None,
    timeout: float | None,
    environ: Mapping[str, str] = os.environ,
) -> ClientConfig:
    """The client's settings; the control address comes from, first found:
    ``--control``, $MBOARD_CONTROL, the config file, the default (127.0.0.1:50050)."""
    control = control or environ.get(CONTROL_ENV) or None
    return load_config(ClientConfig, path, {"control": control, "timeout": timeout})


def _address(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    problem = value and check_address(value)
    if problem:
        raise click.BadParameter(problem)
    return value


def _serve(run: Callable[[], object]) -> None:
    """Run a server role until it returns; a failure to start is one line, Ctrl+C is quiet."""
    try:
        run()
    except OSError as exc:
        raise CliError(str(exc)) from None
    except KeyboardInterrupt:
        sys.exit(130)


def _exit_with_parent_option(command: Callable) -> Callable:
    return click.option(
        "--exit-with-parent",
        is_flag=True,
        hidden=True,  # for `mboard up`, which keeps our stdin open as a pipe
        help="Also stop when stdin closes.",
    )(command)


def _log_options(command: Callable) -> Callable:
    command = click.option("--log-format", metavar="text|json", help="Log line format.")(command)
    return click.option(
        "--log-level", metavar="debug|info|warning|error", help="Least severe level logged."
    )(command)


@click.group(cls=OneLineErrorsGroup)
@click.version_option(__version__, prog_name="mboard")
def cli() -> None:
    """mboard: a fault-tolerant, chain-replicated message board."""


@cli.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML config.")
@click.option("--listen", metavar="ADDR", help=f"Listen address [default {DEFAULT_CONTROL}].")
@click.option("--data-dir", metavar="DIR", help="Where the control plane keeps its state.")
@_log_options
@_exit_with_parent_option
def control(
    config_path: str | None,
    listen: str | None,
    data_dir: str | None,
    log_level: str | None,
    log_format: str | None,
    exit_with_parent: bool,
) -> None:
    """Run the control plane."""
    overrides = {
        "listen": listen,
        "data_dir": data_dir,
        "log.level": log_level,
        "log.format": log_format,
    }
    config = load_config(ControlConfig, config_path, overrides)
    logs.setup(config.log.level, config.log.format)
    from mboard.control.server import run

    _serve(functools.partial(run, config, exit_with_parent))


@cli.command()
@click.option(
    "--config", "config_path", required=True, type=click.Path(dir_okay=False), help="YAML config."
)
@click.option("--id", "node_id", help="Node id.")
@click.option("--listen", metavar="ADDR", help="Listen address.")
@click.option("--advertise", metavar="ADDR", help="Address others reach this node at.")
@click.option("--data-dir", metavar="DIR", help="Where the node keeps its database.")
@click.option("--control", metavar="ADDR", help="Control plane address.")
@click.option("--durability", metavar="full|normal", help="SQLite synchronous mode.")
@_log_options
@_exit_with_parent_option
def node(
    config_path: str,
    node_id: str | None,
    listen: str | None,
    advertise: str | None,
    data_dir: str | None,
    control: str | None,
    durability: str | None,
    log_level: str | None,
    log_format: str | None,
    exit_with_parent: bool,
) -> None:
    """Run a data node."""
    overrides = {
        "id": node_id,
        "listen": listen,
        "advertise": advertise,
        "data_dir": data_dir,
        "control": control,
        "durability": durability,
        "log.level": log_level,
        "log.format": log_format,
    }
    config = load_config(NodeConfig, config_path, overrides)
    logs.setup(config.log.level, config.log.format)
    from mboard.node.server import run

    _serve(functools.partial(run, config, exit_with_parent))


@cli.command()
@click.option(
    "--nodes",
    type=click.IntRange(1, 64),
    default=3,
    show_default=True,
    help="Data nodes to start (the chain in this order).",
)
@click.option(
    "--data-dir",
    default="./data",
    show_default=True,
    metavar="DIR",
    help="Everything kept: control/, node1/, ... and logs/.",
)
@click.option(
    "--control",
    default=DEFAULT_CONTROL,
    show_default=True,
    metavar="ADDR",
    callback=_address,
    help="Where the control plane listens.",
)
@click.option(
    "--base-port",
    type=click.IntRange(1, 65535),
    default=50051,
    show_default=True,
    help="node1 listens here, node2 on the next port, ...",
)
def up(nodes: int, data_dir: str, control: str, base_port: int) -> None:
    """Run a control plane and NODES data nodes on this machine until Ctrl+C."""
    from mboard.up import run

    _serve(
        functools.partial(run, nodes=nodes, data_dir=data_dir, control=control, base_port=base_port)
    )


def _control_option(command: Callable) -> Callable:
    return click.option(
        "--control",
        metavar="ADDR",
        help=f"Control plane address [env {CONTROL_ENV}; default {DEFAULT_CONTROL}].",
    )(command)


SHELL_SUMMARY = "Interactive shell with the same commands"


def _client_epilog() -> str:
    # \b keeps click from re-wrapping the list.
    lines = commands.usage_lines([("shell", SHELL_SUMMARY)])
    return "\b\nCommands:\n" + "\n".join(f"  {line}" for line in lines)


@cli.command(
    context_settings={"allow_interspersed_args": False},
    epilog=_client_epilog(),
    # Arguments are the board command's own; the client's options come before the command.
    options_metavar="[--control ADDR] [--config FILE] [--timeout S] [--json]",
)
@_control_option
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Client YAML.")
@click.option("--timeout", type=float, metavar="S", help="Deadline of one command [default 10].")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per result.")
@click.argument("words", nargs=-1, metavar="COMMAND [ARGS]...", type=click.UNPROCESSED)
def client(
    control: str | None,
    config_path: str | None,
    timeout: float | None,
    as_json: bool,
    words: tuple[str, ...],
) -> None:
    """Talk to the board: one command, or `shell` for many."""
    config = client_config(config_path, control, timeout)
    if words[:1] == ("shell",):
        if words[1:] and words[1] in commands.HELP_FLAGS:
            click.echo(f"usage: shell\n  {SHELL_SUMMARY}")
            return
        if len(words) > 1:
            raise CliError(f"shell: unexpected argument {words[1]!r}", exit_code=2)
        sys.exit(shell.run(config, as_json))
    if (usage := commands.help_for(words)) is not None:
        click.echo(usage)
        return
    try:
        invocation = commands.parse(words)
    except commands.UsageError as exc:
        raise CliError(str(exc), exit_code=2) from None
    try:
        grpc_util.run(_run_client_command(config, invocation, as_json))
    except BoardError as exc:
        raise CliError(str(exc)) from None
    except KeyboardInterrupt:
        # Ctrl+C is how a subscription ends; anywhere else it interrupts.
        sys.exit(0 if invocation.command.streams else 130)


async def _run_client_command(
    config: ClientConfig, invocation: commands.Invocation, as_json: bool
) -> None:
    async with Client(config.control, config.timeout) as board:
        await commands.execute(board, invocation, as_json)


@cli.command()
@_control_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object (per refresh).")
@click.option("--watch", is_flag=True, help="Refresh every second until Ctrl+C.")
def status(control: str | None, as_json: bool, watch: bool) -> None:
    """The cluster at a glance: every node's role, sequence numbers, lag and subscribers."""
    config = client_config(None, control, None)
    try:
        grpc_util.run(_watch_status(config, as_json, watch))
    except BoardError as exc:
        raise CliError(str(exc)) from None
    except KeyboardInterrupt:
        sys.exit(0 if watch else 130)


async def _watch_status(config: ClientConfig, as_json: bool, watch: bool) -> None:
    async with Client(config.control, config.timeout) as board:
        while True:
            try:
                view = await cluster_status.gather(board)
                text = commands.to_json(view) if as_json else cluster_status.format_table(view)
            except BoardError as exc:
                if not watch:
                    raise
                text = commands.error_line(exc)  # keep watching: the cluster may come back
            if watch and not as_json:
                click.clear()
            click.echo(text)
            if not watch:
                return
            await asyncio.sleep(1)


@cli.command("restart-chain")
@_control_option
@click.argument("node_id")
def restart_chain(control: str | None, node_id: str) -> None:
    """Start a stalled chain from NODE_ID, giving up the committed writes it lacks.

    Only for when the chain's last members cannot come back with their data (the control
    plane's log says the chain waits for them): `mboard status` shows the waiting nodes and
    how far each one's log goes.
    """
    config = client_config(None, control, None)
    try:
        reply = grpc_util.run(_restart_chain(config, node_id))
    except BoardError as exc:
        raise CliError(str(exc)) from None
    click.echo(f"restarted the chain from {node_id} at seq {reply.applied_seq}")
    if reply.committed_floor > reply.applied_seq:
        click.echo(
            f"lost: the committed writes after seq {reply.applied_seq} "
            f"(the chain had committed at least seq {reply.committed_floor})"
        )


async def _restart_chain(config: ClientConfig, node_id: str) -> cluster_pb2.RestartChainReply:
    async with Client(config.control, config.timeout) as board:
        return await board.restart_chain(node_id)


@cli.command()
@_control_option
@click.option(
    "--writers",
    type=click.IntRange(1, 10_000),
    default=64,
    show_default=True,
    metavar="N",
    help="Concurrent posting loops (write phase; also the echo's concurrency).",
)
@click.option(
    "--readers",
    type=click.IntRange(1, 10_000),
    default=64,
    show_default=True,
    metavar="N",
    help="Concurrent GetMessages loops (read phase).",
)
@click.option(
    "--subscribers",
    type=click.IntRange(0, 10_000),
    default=0,
    show_default=True,
    metavar="N",
    help="Subscriptions on the bench topic during the write phase.",
)
@click.option(
    "--duration",
    type=click.FloatRange(0.1, 3600),
    default=10.0,
    show_default=True,
    metavar="S",
    help="Seconds per phase, in all.",
)
@click.option(
    "--rounds",
    type=click.IntRange(1, 1000),
    default=None,
    metavar="N",
    help="Rounds the phases take turns in (default: one per ~2 s of --duration).",
)
@click.option("--baseline", is_flag=True, help="Also measure a bare gRPC echo server: the ceiling.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of the table.")
@click.option("--serve-echo", is_flag=True, hidden=True)  # the --baseline child process
def bench(
    control: str | None,
    writers: int,
    readers: int,
    subscribers: int,
    duration: float,
    rounds: int | None,
    baseline: bool,
    as_json: bool,
    serve_echo: bool,
) -> None:
    """Measure a running cluster: throughput and latency of writes, reads, events."""
    from mboard import bench as benchmark

    if serve_echo:
        benchmark.serve_echo()
        return
    config = client_config(None, control, None)
    settings = benchmark.Settings(
        config.control, writers, readers, subscribers, duration, baseline, config.timeout, rounds
    )
    try:
        figures = grpc_util.run(benchmark.run(settings, benchmark.Progress()))
    except BoardError as exc:
        raise CliError(str(exc)) from None
    except (KeyboardInterrupt, benchmark.Interrupted):
        sys.exit(130)
    click.echo(json.dumps(figures) if as_json else benchmark.format_table(figures))


def main() -> None:
    cli(prog_name="mboard")
