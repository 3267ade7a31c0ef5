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


@pytest.fixture
def process(monkeypatch):
    """Process `rank` of 2, exiting into a list; the others act at the third poll."""
    exits, polls, acts = [], [], []
    monkeypatch.setattr(peers.os, "_exit", exits.append)
    monkeypatch.setattr("jax.process_count", lambda: 2)

    def sleep(seconds):
        polls.append(seconds)
        if len(polls) == 3:
            for act in acts:
                act()

    monkeypatch.setattr(peers.time, "sleep", sleep)

    def be(rank, *then):
        monkeypatch.setattr("jax.process_index", lambda: rank)
        acts.extend(then)
        return exits, polls

    return be


def test_process_0_failing_first_waits_until_the_other_is_gone(store, process):
    def other_reads_and_goes():
        store.entries[f"{peers.PREFIX}/seen/1"] = store.entries[f"{peers.PREFIX}/gone/1"] = "1"

    exits, polls = process(0, other_reads_and_goes)
    peers.leave(2, "disk full")
    assert store.entries[peers.FAILED] == "process 0 failed: disk full"
    assert exits == [2] and len(polls) == 3


def test_process_1_failing_first_waits_for_process_0_to_read_it(store, process):
    exits, polls = process(1, lambda: store.entries.update({f"{peers.PREFIX}/seen/0": "1"}))
    peers.leave(2, "disk full")
    assert store.entries[peers.FAILED] == "process 1 failed: disk full"
    assert store.entries[f"{peers.PREFIX}/gone/1"] == "1"  # what process 0 waits for
    assert exits == [2] and len(polls) == 3


def test_stopping_for_another_keeps_its_error_and_waits_for_nobody(store, process):
    store.entries[peers.FAILED] = "process 0 failed: disk full"
    exits, polls = process(1)
    peers.leave(2, "process 0 failed: disk full")
    assert store.entries[peers.FAILED] == "process 0 failed: disk full"
    # Failing of itself meanwhile (every process refusing the same grid, say), it says it has
    # read the first failure, or process 0 would wait its whole grace for it.
    assert store.entries[f"{peers.PREFIX}/seen/1"] == store.entries[f"{peers.PREFIX}/gone/1"]
    assert exits == [2] and not polls


def test_a_silent_process_is_waited_for_at_most_the_grace(store, process, monkeypatch):
    clock = iter(range(0, 10**6, 10))
    monkeypatch.setattr(peers.time, "monotonic", lambda: next(clock))
    exits, polls = process(0)
    peers.leave(2, "disk full")
    assert exits == [2] and len(polls) <= peers.GRACE_SECONDS / 10 + 1


def test_lost_coordinator_is_one_clear_error(monkeypatch):
    class Gone:
        def key_value_dir_get(self, prefix):
            raise RuntimeError("UNAVAILABLE: failed to connect")

    monkeypatch.setattr(peers, "_client", Gone)
    with pytest.raises(peers.PeerFailed, match="process 0 stopped"):
        peers.check(1)
