"""The optional Prometheus endpoint of a node: the listed metrics exist and move under load."""

from __future__ import annotations

import re
import urllib.request

import grpc
import pytest
from harness import free_port

from mboard.api import razpravljalnica_pb2 as pb

METRICS = (
    "mboard_writes_total",
    "mboard_commits_total",
    "mboard_commit_latency_seconds_count",
    "mboard_applied_seq",
    "mboard_committed_seq",
    "mboard_replication_lag_entries",
    "mboard_subscribers",
    "mboard_page_cache_bytes",
    "mboard_epoch",
    "mboard_reconfigurations_total",
    "mboard_heartbeat_misses_total",
)


def scrape(address: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        match = re.match(r"^(mboard_\w+)(\{[^}]*\})? (\S+)$", line)
        if match:
            samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return samples


def test_node_metrics_move_under_load(cluster):
    cluster.start_control()
    metrics_address = f"127.0.0.1:{free_port()}"
    cluster.start_node("n1", **{"metrics": {"listen": metrics_address}})
    cluster.wait_chain(["n1"])
    board = cluster.board("n1")

    before = scrape(metrics_address)
    for name in METRICS:
        assert any(key.startswith(name) for key in before), f"{name} is not exported"

    user = board.CreateUser(pb.CreateUserRequest(name="metrics"), timeout=10)
    topic = board.CreateTopic(pb.CreateTopicRequest(name="metrics"), timeout=10)
    for i in range(50):
        board.PostMessage(
            pb.PostMessageRequest(topic_id=topic.id, user_id=user.id, text=f"m{i}"), timeout=10
        )
    with pytest.raises(grpc.RpcError):  # a refused write is counted under its status
        board.CreateUser(pb.CreateUserRequest(name="metrics"), timeout=10)
    after = scrape(metrics_address)
    assert after['mboard_writes_total{result="ALREADY_EXISTS"}'] == 1

    assert (
        after['mboard_writes_total{result="OK"}']
        == before.get('mboard_writes_total{result="OK"}', 0) + 52
    )
    assert after["mboard_commits_total"] >= before["mboard_commits_total"] + 52
    assert after["mboard_commit_latency_seconds_count"] >= 52
    buckets = [value for key, value in after.items() if "latency_seconds_bucket" in key]
    assert buckets == sorted(buckets)  # cumulative, ascending bounds
    assert buckets[-1] == after['mboard_commit_latency_seconds_bucket{le="+Inf"}']
    assert buckets[-1] == after["mboard_commit_latency_seconds_count"]
    assert 0 < after["mboard_commit_latency_seconds_sum"] < 52 * 10
    assert after["mboard_applied_seq"] == after["mboard_committed_seq"] >= 52
    assert after["mboard_epoch"] >= 1 and after["mboard_reconfigurations_total"] >= 1
    assert after["mboard_page_cache_bytes"] > before["mboard_page_cache_bytes"] + 50 * 100


def test_control_plane_metrics_count_reconfigurations_and_misses(cluster):
    metrics_address = f"127.0.0.1:{free_port()}"
    cluster.start_control(**{"metrics": {"listen": metrics_address}})
    cluster.start_node("n1")
    cluster.start_node("n2")
    cluster.wait_chain(["n1", "n2"])
    joined = scrape(metrics_address)
    assert joined["mboard_epoch"] >= 3  # n1 joined; n2 joined, then was promoted
    # Only what the control plane measures: no node metrics stuck at 0.
    assert {name.split("{")[0] for name in joined} == {
        "mboard_epoch",
        "mboard_subscribers",
        "mboard_replication_lag_entries",
        "mboard_reconfigurations_total",
        "mboard_heartbeat_misses_total",
    }
    assert joined["mboard_reconfigurations_total"] >= 3

    cluster.pause("n2")  # silent past the failure timeout: removed for missing heartbeats
    try:
        cluster.wait_chain(["n1"])
        cluster.wait_for(
            lambda: scrape(metrics_address)["mboard_heartbeat_misses_total"] >= 1,
            what="a heartbeat miss counted",
        )
    finally:
        cluster.resume("n2")
    assert (
        scrape(metrics_address)["mboard_reconfigurations_total"]
        > joined["mboard_reconfigurations_total"]
    )
