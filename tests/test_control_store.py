"""The control plane's database: configuration, lease holder and secret survive a restart."""

from __future__ import annotations

from mboard.control.membership import ChainConfig, Membership, Node, Saved
from mboard.control.store import Store

N1, N2 = Node("n1", "127.0.0.1:5001"), Node("n2", "[::1]:5002")


def test_new_store_has_no_state(tmp_path):
    store = Store(tmp_path / "control")
    assert store.load() is None
    assert (tmp_path / "control" / "control.db").exists()
    store.close()


def test_saved_state_is_loaded_after_reopening(tmp_path):
    store = Store(tmp_path)
    saved = Saved(ChainConfig(7, (N1,), (N2,)), lease_holder="n1")
    store.save(saved)
    assert store.load() == saved  # the lease holder too
    store.save(Saved(ChainConfig(8, (N1, N2), ()), lease_holder=None))
    store.close()
    reopened = Store(tmp_path)
    assert reopened.load() == Saved(ChainConfig(8, (N1, N2), ()), lease_holder=None)
    reopened.close()


def test_generated_secret_is_kept_and_a_configured_one_wins(tmp_path):
    store = Store(tmp_path)
    secret = store.secret(None)
    assert len(secret) == 32
    store.close()
    store = Store(tmp_path)
    assert store.secret(None) == secret
    assert store.secret("configured") == b"configured"
    assert store.secret(None) == secret
    store.close()


def test_membership_restarted_from_the_store_never_reissues_an_epoch(tmp_path):
    store = Store(tmp_path)
    first = Membership(failure_timeout=2, lease=1, started=0, persist=store.save)
    first.register(N1, applied_seq=0, now=0)
    first.register(N2, applied_seq=0, now=0)
    store.close()

    store = Store(tmp_path)
    second = Membership(
        failure_timeout=2, lease=1, started=50, persist=store.save, saved=store.load()
    )
    assert second.config == first.config
    second.remove("n2", "n2 left")
    assert second.config.epoch == first.config.epoch + 1
    store.close()
    store = Store(tmp_path)
    assert store.load().config == second.config
    store.close()


def test_survivors_are_saved(tmp_path):
    store = Store(tmp_path)
    store.save(Saved(ChainConfig(9), None, survivors=("n1", "n2"), committed_floor=42))
    store.close()
    loaded = Store(tmp_path).load()
    assert (loaded.survivors, loaded.committed_floor) == (("n1", "n2"), 42)
