"""`mboard client shell`: the client's commands in a read-eval-print loop.

Interactive on a terminal (prompt_toolkit: history in ~/.mboard_history, completion of command
names); on a pipe it reads lines from stdin and prints no prompt, so a script's output is
exactly the commands' output.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

import click

from mboard.client import commands
from mboard.client.core import BoardError, Client
from mboard.config import ClientConfig

HISTORY = Path.home() / ".mboard_history"
PROMPT = "> "
QUIT = ("quit", "exit")


def help_text() -> str:
    own = [("help", "Show this help"), (" | ".join(QUIT), "Leave the shell")]
    return "\n".join(["Commands:", *(f"  {line}" for line in commands.usage_lines(own))])


def run(config: ClientConfig, as_json: bool = False) -> int:
    """Run commands until quit or end of input.

    Returns 0 if every command succeeded, else 1 (like a script that noticed its errors); an
    error prints ``error: ...`` on stderr and the shell goes on.
    """
    failed = False
    # grpc.aio channels belong to the loop that made them: one loop for the whole session.
    with asyncio.Runner() as runner:
        client = Client(config.control, config.timeout)
        read = _prompter(runner) if sys.stdin.isatty() else _read_piped
        try:
            while (line := read()) is not None:
                words = line.split()
                if not words:
                    continue
                if words[0] in QUIT:
                    break
                if words[0] == "help":
                    asked = words[1] if len(words) > 1 else ""
                    click.echo(commands.usage_of(asked) or help_text())
                    continue
                if (usage := commands.help_for(words)) is not None:
                    click.echo(usage)
                    continue
                try:
                    runner.run(commands.execute(client, commands.parse(words), as_json))
                except (commands.UsageError, BoardError) as exc:
                    click.echo(commands.error_line(exc), err=True)
                    failed = True
                except KeyboardInterrupt:
                    pass  # Ctrl+C ends the running command (a subscription), not the shell
        finally:
            runner.run(client.close())
    return 1 if failed else 0


def _read_piped() -> str | None:
    try:
        return sys.stdin.readline() or None
    except KeyboardInterrupt:
        return None  # Ctrl+C while waiting for input ends it, like end of input


def _prompter(runner: asyncio.Runner) -> Callable[[], str | None]:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.completion import WordCompleter
    from prompt_toolkit.history import FileHistory

    names = [*commands.COMMANDS, "help", *QUIT]
    session: PromptSession[str] = PromptSession(
        history=FileHistory(str(HISTORY)), completer=WordCompleter(names)
    )

    def read() -> str | None:
        while True:
            try:
                return runner.run(session.prompt_async(PROMPT))
            except KeyboardInterrupt:
                continue  # Ctrl+C at the prompt drops the line, as in a shell
            except EOFError:
                return None

    return read
