"""``mboard bench`` against real clusters: every figure present and sane, no event lost, and
Ctrl+C ends a run early but still reports what it measured. Never asserts on speed."""

from __future__ import annotations

import itertools
import json
import re
import signal
from array import array

import pytest
from harness import START_TIMEOUT, WAIT_TIMEOUT, Cluster

from mboard.api import razpravljalnica_pb2 as pb
from mboard.bench import _Listener, format_table, steal_share
from mboard.up import mboard_command

pytestmark = pytest.mark.timeout(240)

# Setup, three short phases and the echo child's start, on a loaded machine.
RUN_TIMEOUT = 120.0


def spawn_bench(cluster: Cluster, *options: str) -> None:
    """Run ``mboard bench --json OPTIONS`` as process "bench" (killed by the fixture)."""
    argv = mboard_command("bench", "--control", cluster.control_address, "--json", *options)
    cluster.spawn("bench", argv)


def bench_figures(cluster: Cluster) -> dict:
    """The bench's one JSON object (its progress lines share the log, on stderr)."""
    lines = cluster.processes["bench"].log().splitlines()
    objects = [json.loads(line) for line in lines if line.startswith("{")]
    assert len(objects) == 1, cluster.logs()
    return objects[0]


def bench_topic(cluster: Cluster) -> int:
    """The id of the topic the bench made for itself (from its setup line)."""
    bench = cluster.processes["bench"]
    setup = cluster.wait_for(
        lambda: re.search(r"setup: user \d+, topic (\d+)", bench.log()), START_TIMEOUT, "setup"
    )
    return int(setup.group(1))


def all_messages(cluster: Cluster, node: str, topic_id: int) -> list[pb.Message]:
    """Every message of the topic, page by page."""
    messages: list[pb.Message] = []
    while True:
        start = messages[-1].id + 1 if messages else 0
        request = pb.GetMessagesRequest(topic_id=topic_id, from_message_id=start)
        page = cluster.board(node).GetMessages(request, timeout=2).messages
        if not page:
            return messages
        messages += page


def wait_exit(cluster: Cluster, timeout: float = RUN_TIMEOUT) -> int:
    return cluster.processes["bench"].popen.wait(timeout)


def test_bench_measures_every_figure_on_a_three_node_chain(cluster):
    cluster.start_chain(["n1", "n2", "n3"])
    spawn_bench(
        cluster,
        *("--duration", "2", "--rounds", "2", "--writers", "4", "--readers", "4"),
        *("--subscribers", "2", "--baseline"),
    )
    assert wait_exit(cluster) == 0, cluster.logs()
    figures = bench_figures(cluster)

    assert figures["errors"] == 0, figures["error_kinds"]
    assert figures["interrupted"] is False
    # The echo server was forked before gRPC ran here (gRPC's fork handlers say so if not).
    assert "fork() handlers" not in cluster.processes["bench"].log()
    for plural, name in [("writes", "write"), ("reads", "read"), ("events", "event"),
                         ("echo_calls", "echo")]:  # fmt: skip
        assert figures[plural] > 0, plural
        assert figures[f"{plural}_per_s"] > 0, plural
        assert 0 < figures[f"{name}_p50_ms"] <= figures[f"{name}_p99_ms"], name
    # Every acknowledged post reached both subscribers, exactly once.
    assert figures["missed_events"] == 0
    assert figures["events"] == 2 * figures["writes"]
    assert 0 < figures["max_write_gap_ms"] < RUN_TIMEOUT * 1000
    # The ratios are the throughputs over the echo ceiling (up to rounding).
    for plural in ("writes", "reads"):
        ratio = figures[f"{plural}_per_s"] / figures["echo_calls_per_s"]
        assert figures[f"{plural}_vs_echo"] == pytest.approx(ratio, abs=0.002)
    assert set(figures["client_cpu"]) == {"write", "read", "echo"}
    # The tests run on Linux: the hypervisor's share of the CPU is measured per phase.
    assert set(figures["cpu_steal"]) == {"write", "read", "echo"}
    assert all(0 <= share <= 1 for share in figures["cpu_steal"].values())
    # The bench wrote through the chain: every replica holds its messages.
    assert len({cluster.node_status(name).digest for name in ("n1", "n2", "n3")}) == 1
    # In two rounds: the posts came in two bursts, a read round and an echo round apart
    # (1 s each), and the phases' times add up over their rounds.
    assert figures["rounds"] == 2
    posted = all_messages(cluster, "n3", bench_topic(cluster))
    assert len(posted) == figures["writes"] + 1  # and the warm-up post
    times = [m.created_at.ToNanoseconds() / 1e9 for m in posted[1:]]
    assert max(b - a for a, b in itertools.pairwise(times)) >= 1.5
    assert figures["writes"] / figures["writes_per_s"] == pytest.approx(2, abs=0.3)


def test_ctrl_c_ends_the_run_early_and_still_reports(cluster):
    cluster.start_chain(["n1"])
    spawn_bench(
        cluster,
        *("--duration", "600", "--rounds", "1", "--writers", "4", "--subscribers", "1"),
        "--baseline",
    )
    topic_id = bench_topic(cluster)

    def posted() -> int:
        request = pb.GetMessagesRequest(topic_id=topic_id, limit=0)
        return len(cluster.board("n1").GetMessages(request, timeout=2).messages)

    # The warm-up post and 50 more are committed; 4 writers have at most 4 posts unanswered.
    cluster.wait_for(lambda: posted() >= 51, WAIT_TIMEOUT, "50 bench posts")
    cluster.kill("bench", signal.SIGINT)
    assert wait_exit(cluster) == 0, cluster.logs()
    figures = bench_figures(cluster)

    assert figures["interrupted"] is True
    assert figures["writes"] >= 50 - 4
    assert figures["errors"] == 0, figures["error_kinds"]  # cancelled calls are not errors
    # The phases Ctrl+C skipped were not measured, and the cut-short drain checked nothing.
    assert figures["reads"] is None and figures["echo_calls"] is None
    assert figures["missed_events"] is None
    table = format_table(figures)
    assert "(interrupted)" in table
    assert re.search(rf"^write\s+{figures['writes']:,}\s", table, re.MULTILINE)
    assert re.search(r"^read\s+-\s+-\s+-\s+-", table, re.MULTILINE)


# A run's figures without subscribers or baseline, for the table tests.
FIGURES = {
    "control": "127.0.0.1:50050", "writers": 1, "readers": 1, "subscribers": 0,
    "duration_s": 1.0, "interrupted": False, "writes": 10, "writes_per_s": 10.0,
    "write_p50_ms": 1.0, "write_p99_ms": 2.0, "max_write_gap_ms": 3.0, "reads": 10,
    "reads_per_s": 10.0, "read_p50_ms": 1.0, "read_p99_ms": 2.0, "errors": 0,
    "error_kinds": {},
}  # fmt: skip


def test_the_table_points_out_cpu_the_hypervisor_kept() -> None:
    figures = {**FIGURES, "client_cpu": {"write": 0.1, "read": 0.1}}
    quiet = format_table({**figures, "cpu_steal": {"write": 0.004, "read": 0.0}})
    assert "hypervisor" not in quiet
    busy = format_table({**figures, "cpu_steal": {"write": 0.17, "read": 0.004}})
    assert "hypervisor kept part of this machine's CPU (write 17%, read 0%)" in busy
    assert "hypervisor" not in format_table(figures)  # not Linux: nothing measured


def test_steal_share_is_stolen_ticks_over_all_ticks() -> None:
    assert steal_share((10, 1000), (30, 1200)) == pytest.approx(0.1)
    assert steal_share(None, (30, 1200)) is None
    assert steal_share((10, 1000), (10, 1000)) is None  # no time passed


def test_a_subscription_counts_each_acknowledged_post_it_never_got() -> None:
    listener = _Listener(first_id=100)  # the warm-up post
    for message_id in (101, 103, 103, 9000):  # one twice, one far past what it held so far
        listener.mark(message_id)
    acknowledged = array("q", [101, 102, 103, 9000, 9001])
    assert listener.missed(acknowledged) == 2  # 102, and 9001 past everything it saw
    assert listener.highest == 9000
    assert _Listener(first_id=100).missed(acknowledged) == len(acknowledged)


def test_the_table_says_how_many_deliveries_are_missing() -> None:
    figures = {
        **FIGURES, "subscribers": 2, "events": 17, "events_per_s": 17.0, "event_p50_ms": 1.0,
        "event_p99_ms": 2.0, "subscriber_resumes": 1,
    }  # fmt: skip
    assert "3 deliveries MISSING; resumes: 1" in format_table({**figures, "missed_events": 3})
    every = format_table({**figures, "missed_events": 0})
    assert "every subscriber got every acknowledged post" in every and "MISSING" not in every
