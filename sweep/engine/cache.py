"""Compiled kernels kept across runs, so that a grid run again starts at once.

`kernels/<key>.bin` under the cache directory (`$LLM_MEMORY_SWEEP_CACHE`, else
`$XDG_CACHE_HOME/llm-memory-sweep`, else `~/.cache/llm-memory-sweep`; `off` disables it) holds
the serialized executables of one kernel and its plan, keyed by everything its tracing reads
(the sweep package's source and catalogs, JAX's version, the devices, the layout, the grid's
objectives and constraints, the fixed values and the framework codes; not the swept values,
which are the programs' arguments): a hit skips tracing, lowering and compiling.
Entries are written atomically (a temporary file renamed into place); a corrupt or stale
entry is recompiled and replaced. At most `KEEP` kernels are kept, the least recently used
removed first.

JAX's own persistent compilation cache is not used: an executable it loads serializes without
its CPU functions here (jax 0.10: "Function add_select_fusion not found" on the next load).
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import sys
import time
from pathlib import Path

import jax
import numpy as np

from sweep.outdir import writer_id

ENV = "LLM_MEMORY_SWEEP_CACHE"
KEEP = 64


def directory() -> Path | None:
    """The cache directory, or None when caching is off."""
    configured = os.environ.get(ENV)
    if configured is not None:
        return None if configured.strip().lower() in ("", "off", "0", "none") else Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llm-memory-sweep"


@functools.cache
def source_hash() -> str:
    """Hash of the sweep package's source: any change to a formula invalidates the kernels."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    for path in sorted(package.rglob("*")):
        if path.suffix in (".py", ".toml") and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(package)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def kernel_key(*parts) -> str:
    """A key from the source, JAX's version, the devices and `parts` (reprs and arrays)."""
    digest = hashlib.sha256(source_hash().encode())
    digest.update(f"{jax.__version__} {sys.version_info[:2]}".encode())
    for part in parts:
        if isinstance(part, dict):
            for name in sorted(part):
                digest.update(name.encode())
                digest.update(np.ascontiguousarray(part[name]).tobytes())
        else:
            digest.update(repr(part).encode())
    return digest.hexdigest()[:32]


def load(key: str):
    """The cached object under `key`, or None (absent, unreadable, or from another build)."""
    root = directory()
    if root is None:
        return None
    path = root / "kernels" / f"{key}.bin"
    try:
        with open(path, "rb") as fh:
            value = pickle.load(fh)
        os.utime(path)  # recently used
        return value
    except FileNotFoundError:
        return None
    except Exception as err:  # noqa: BLE001 - any damage means: compile again
        print(f"note: recompiling: cached kernel {path} is unreadable ({type(err).__name__})",
              file=sys.stderr)
        return None


def store(key: str, value) -> None:
    """Write `value` under `key` atomically; a cache that cannot be written is skipped."""
    root = directory()
    if root is None:
        return
    folder = root / "kernels"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{key}.{writer_id()}.tmp"
        with open(tmp, "wb") as fh:
            pickle.dump(value, fh)
        os.replace(tmp, folder / f"{key}.bin")
        entries = sorted(folder.glob("*.bin"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[KEEP:]:
            old.unlink(missing_ok=True)
        for stale in folder.glob(".*.tmp"):  # left by a killed run
            if time.time() - stale.stat().st_mtime > 3600:
                stale.unlink(missing_ok=True)
    except OSError as err:
        print(f"note: not caching the compiled kernel ({err.strerror or err})", file=sys.stderr)
