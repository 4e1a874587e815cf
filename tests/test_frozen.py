"""The frozen binary (``make build`` -> dist/mboard) on its own: no Python, no venv.

Every process runs under ``env -i`` with a bare PATH and HOME, so nothing from the
developer's environment (PYTHONPATH, the venv, MBOARD_CONTROL) can help it. In CI
(CI=true) the binary must exist and be newer than the sources: .ci/run builds it first.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
from harness import START_TIMEOUT, STOP_TIMEOUT, WAIT_TIMEOUT, alive, descendants, free_port
from harness import free_ports as free_port_range
from test_client_e2e import EXAMPLE_SESSION

from mboard import __version__

REPO = Path(__file__).resolve().parents[1]
BINARY = REPO / "dist" / "mboard"
READY = "Ready. Ctrl+C to stop."
COMMAND_TIMEOUT = 60  # one short-lived command on a loaded machine, unpacking included

pytestmark = pytest.mark.timeout(300)


def _newest_source() -> Path:
    return max((REPO / "mboard").rglob("*.py"), key=lambda path: path.stat().st_mtime)


@pytest.fixture(scope="module")
def binary() -> Path:
    """dist/mboard, built from the current sources; in CI its absence is a failure."""
    newest = _newest_source()
    problem = None
    if not BINARY.exists():
        problem = f"{BINARY} does not exist: run `make build`"
    elif BINARY.stat().st_mtime < newest.stat().st_mtime:
        problem = f"{BINARY} is older than {newest.relative_to(REPO)}: run `make build`"
    if problem and os.environ.get("CI") == "true":
        pytest.fail(problem)
    if problem:
        pytest.skip(problem)
    return BINARY


class Frozen:
    """Command lines that run the binary in an empty environment rooted in ``home``.

    TMPDIR is ours too: the one-file binary unpacks itself there at start, and must leave
    nothing behind when it stops.
    """

    def __init__(self, binary: Path, home: Path) -> None:
        self.binary = binary
        self.home = home
        self.tmp = home / "tmp"
        self.tmp.mkdir(parents=True)

    def argv(self, *args: str) -> list[str]:
        env = ["PATH=/usr/bin:/bin", f"HOME={self.home}", f"TMPDIR={self.tmp}"]
        return ["/usr/bin/env", "-i", *env, str(self.binary), *args]

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.argv(*args),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            cwd=self.home,
            timeout=COMMAND_TIMEOUT,
        )


def _role(pid: int) -> str:
    """The mboard command a process runs: ``node`` for ``mboard node --config ...``."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1].decode()


def test_version(binary: Path, tmp_path: Path) -> None:
    result = Frozen(binary, tmp_path).run("--version")
    assert (result.returncode, result.stdout) == (0, f"mboard, version {__version__}\n")


def test_up_example_session_subscription_and_clean_shutdown(
    binary: Path, tmp_path: Path, cluster
) -> None:
    frozen = Frozen(binary, tmp_path)
    control, base_port = f"127.0.0.1:{free_port()}", free_port_range(3)
    up = cluster.spawn(
        "up",
        frozen.argv(
            "up",
            *("--nodes", "3", "--data-dir", str(tmp_path / "data")),
            *("--control", control, "--base-port", str(base_port)),
        ),
    )
    cluster.wait_for(lambda: READY in up.log(), START_TIMEOUT * 3, "mboard up to be ready")
    family = descendants(up.popen.pid)
    # The one-file loader's own child runs `up`, which runs a control plane and three nodes:
    # each is the binary itself, so no Python interpreter is involved anywhere.
    assert sorted(_role(pid) for pid in family) == ["control", "node", "node", "node", "up"]
    for pid in [up.popen.pid, *family]:
        assert Path(f"/proc/{pid}/exe").resolve() == binary.resolve(), _role(pid)

    def client(*words: str) -> subprocess.CompletedProcess:
        return frozen.run("client", "--control", control, *words)

    for line, expected in EXAMPLE_SESSION:
        result = client(*line.split())
        assert (result.returncode, result.stdout, result.stderr) == (0, expected + "\n", ""), line

    failed = client("post", "1", "99", "Who am I?")
    assert (failed.returncode, failed.stdout) == (1, "")
    assert failed.stderr == "error: NOT_FOUND: user 99 does not exist\n"

    status = client("status")
    assert status.returncode == 0, status.stderr
    for number, role in enumerate(["head", "middle", "tail"]):
        row = rf"^node{number + 1}\s+127\.0\.0\.1:{base_port + number}\s+{role}\s"
        assert re.search(row, status.stdout, re.MULTILINE), status.stdout

    subscriber = cluster.spawn(
        "subscriber", frozen.argv("client", "--control", control, "subscribe", "1", "1")
    )
    replayed = [
        "Subscribed to topics [1]. Waiting for events (Ctrl+C to stop)...",
        "[POST] Seq=5, Msg ID=1, User=1, Text=Hello everyone!, Likes=1",
        "[POST] Seq=6, Msg ID=2, User=2, Text=Hi Alice!, Likes=0",
    ]
    live = "[POST] Seq=8, Msg ID=3, User=1, Text=New message, Likes=0"

    def output(process) -> list[str]:
        return process.log().splitlines()[1:]  # after the harness's "===== argv" line

    # The replay has arrived, so the stream is open: the next post comes as a live event.
    cluster.wait_for(lambda: output(subscriber) == replayed, WAIT_TIMEOUT, "the replay")
    posted = client("post", "1", "1", "New message")
    assert posted.stdout == "Posted message: ID=3, User=1, Likes=0\n", posted.stderr
    cluster.wait_for(lambda: output(subscriber) == [*replayed, live], WAIT_TIMEOUT, "the event")
    subscriber.popen.send_signal(signal.SIGINT)  # Ctrl+C ends a subscription, successfully
    assert subscriber.popen.wait(STOP_TIMEOUT) == 0

    assert cluster.stop("up") == 0
    assert up.log().rstrip().endswith("Stopped.")
    left = [pid for pid in family if alive(pid)]
    assert not left, f"processes left after mboard up stopped: {left}"
    assert list(frozen.tmp.iterdir()) == [], "the one-file binary left files in TMPDIR"
