"""The processes of a multi-process run meet in the coordination service's key-value store
(`engine.peers`): a failure reaches the others at their next barrier or check, and the
failing process waits for them to read it, not for JAX's shutdown. A stand-in store here;
tests/test_distributed.py runs real processes."""

import pytest

from sweep.engine import peers


class Store:
    """The client's key-value calls over a dict (as jaxlib's: setting a key that exists
    fails unless overwriting)."""

    def __init__(self, **entries):
        self.entries = dict(entries)

    def key_value_set(self, key, value, allow_overwrite=False):
        if key in self.entries and not allow_overwrite:
            raise RuntimeError(f"ALREADY_EXISTS: key {key} already exists")
        self.entries[key] = value

    def key_value_dir_get(self, prefix):
        return [(k, v) for k, v in self.entries.items() if k.startswith(prefix)]


@pytest.fixture
def store(monkeypatch):
    store = Store()
    monkeypatch.setattr(peers, "_client", lambda: store)
    return store


def test_barrier_returns_once_all_arrived(store):
    store.entries[f"{peers.PREFIX}/swept/1"] = "1"
    peers.barrier("swept", 0, 2)
    assert f"{peers.PREFIX}/swept/0" in store.entries


def test_barrier_stops_with_the_failure_and_says_it_read_it(store):
    store.entries[peers.FAILED] = "process 1 failed: cannot write x: disk full"
    with pytest.raises(peers.PeerFailed, match="process 1 failed: cannot write x"):
        peers.barrier("swept", 0, 3)
    assert store.entries[f"{peers.PREFIX}/seen/0"] == "1"
    with pytest.raises(peers.PeerFailed):
        peers.check(2)


def test_leave_writes_the_first_failure_and_waits_for_the_others(store, monkeypatch):
    exits = []
    monkeypatch.setattr(peers.os, "_exit", exits.append)
    monkeypatch.setattr("jax.process_index", lambda: 0)
    monkeypatch.setattr("jax.process_count", lambda: 2)
    slept = []

    def sleep(seconds):  # process 1 reads the failure after a while
        slept.append(seconds)
        if len(slept) == 3:
            store.entries[f"{peers.PREFIX}/seen/1"] = "1"

    monkeypatch.setattr(peers.time, "sleep", sleep)
    peers.leave(2, "disk full")
    assert store.entries[peers.FAILED] == "process 0 failed: disk full"
    assert exits == [2] and len(slept) == 3
    # A second failure (this process stopping because of the first) keeps the first and
    # waits for nobody.
    slept.clear()
    peers.leave(2, "process 0 failed: disk full")
    assert store.entries[peers.FAILED] == "process 0 failed: disk full"
    assert exits == [2, 2] and not slept


def test_lost_coordinator_is_one_clear_error(monkeypatch):
    class Gone:
        def key_value_dir_get(self, prefix):
            raise RuntimeError("UNAVAILABLE: failed to connect")

    monkeypatch.setattr(peers, "_client", Gone)
    with pytest.raises(peers.PeerFailed, match="process 0 stopped"):
        peers.check(1)
