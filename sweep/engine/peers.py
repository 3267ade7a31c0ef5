"""The processes of one run under `jax.distributed`: barriers that also carry a failure.

JAX's own barrier (`multihost_utils.sync_global_devices`, a collective) waits without end for
a process that stopped with an error, and JAX's shutdown at exit waits up to 300 s for every
process to reach it: one process refusing to write (a full disk, a foreign file under
`--force`) left the others waiting at a barrier, or ending in a traceback from a collective's
timeout (measured here: two processes, process 0 refusing the directory: process 1 failed
after 30 s with "Gloo context initialization failed: DEADLINE_EXCEEDED").

Here the processes meet in the coordination service's key-value store (`barrier`), and a
process that fails writes its error there first (`leave`): every other process stops with
that error at its next barrier or checkpoint (`check`, every 10 s of a sweep), and none waits
for the shutdown. A process killed outright writes nothing: the service notices its missing
heartbeats (100 s, `jax.distributed.initialize`), and JAX stops the others.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

from sweep.errors import SweepError

PREFIX = "llm-memory-sweep"
FAILED = f"{PREFIX}/failed"
POLL_SECONDS = 0.02
GRACE_SECONDS = 30.0  # at most, a failing process waits for the others to read its error


class PeerFailed(SweepError):
    """Another process of the run failed: this one stops with its error."""


def _client():
    """The coordination service's client, or None outside a multi-process run (JAX keeps it
    private: its key-value store has no public interface in jax 0.10)."""
    if "jax" not in sys.modules:
        return None
    from jax._src import distributed

    return distributed.global_state.client


def active() -> bool:
    return _client() is not None


def _key(kind: str, rank: int) -> str:
    return f"{PREFIX}/{kind}/{rank}"


def _entries(client) -> dict[str, str]:
    try:
        return dict(client.key_value_dir_get(f"{PREFIX}/"))
    except Exception as err:  # noqa: BLE001 - jaxlib raises a plain runtime error
        # Process 0 hosts the service: it is gone when process 0 is.
        raise PeerFailed(f"lost the run's coordinator (process 0 stopped: see its error; "
                         f"{type(err).__name__})") from None


def _set(client, key: str, value: str = "1") -> bool:
    """Set `key` unless it is set already (then False: for `FAILED`, another process failed
    first; for an acknowledgement, it was said before)."""
    try:
        client.key_value_set(key, value)
        return True
    except Exception:  # noqa: BLE001 - jaxlib's ALREADY_EXISTS is a plain runtime error
        return False


def _raise_if_failed(client, entries: dict, rank: int) -> None:
    if FAILED in entries:
        _set(client, _key("seen", rank))
        raise PeerFailed(entries[FAILED])


def check(rank: int) -> None:
    """Raise `PeerFailed` if another process has failed (called between chunks, so that a
    long sweep does not go on for nothing)."""
    client = _client()
    _raise_if_failed(client, _entries(client), rank)


def barrier(name: str, rank: int, ranks: int) -> None:
    """Wait until every process has reached `name`; raise `PeerFailed` with the error of a
    process that failed instead, as soon as one has."""
    client = _client()
    client.key_value_set(_key(name, rank), "1")
    arrived = {_key(name, r) for r in range(ranks)}
    while True:
        entries = _entries(client)
        _raise_if_failed(client, entries, rank)
        if arrived <= entries.keys():
            return
        time.sleep(POLL_SECONDS)


def leave(code: int, error: str) -> None:
    """This process stops with `error`: tell the others (the first failure is the one they
    all report) and exit with `code`, without JAX's shutdown barrier; never returns. The
    first to fail waits until every other process has read its error; process 0, which
    hosts the coordination service, waits until the others are gone (were it gone first,
    JAX would abort them: "Terminating process because the JAX distributed service
    detected fatal errors"). Each wait lasts `GRACE_SECONDS` at most."""
    import jax

    client, rank = _client(), jax.process_index()
    others = [r for r in range(jax.process_count()) if r != rank]
    deadline = time.monotonic() + GRACE_SECONDS
    with contextlib.suppress(PeerFailed):  # the service is gone: then just go
        if _set(client, FAILED, f"process {rank} failed: {error}"):
            _wait(client, {_key("seen", r) for r in others}, deadline)
        else:  # another failed first (perhaps of the same cause): it waits for this one
            _set(client, _key("seen", rank))
        if rank == 0:
            _wait(client, {_key("gone", r) for r in others}, deadline)
        else:
            _set(client, _key("gone", rank))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _wait(client, keys: set[str], deadline: float) -> None:
    while not keys <= _entries(client).keys() and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
