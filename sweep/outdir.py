"""An output directory the tool owns only in part: what it wrote, it may replace; nothing else.

Layout of the tool's own bookkeeping, inside the output directory:

    .sweep/owned.json   every file the tool wrote here (relative paths), registered before the
                        file is moved into place, so that a run killed at any point leaves no
                        file of ours unlisted
    .sweep/grid.json    the hash and name of the grid being written, set before anything else
    .sweep/lock         pid and host of the one process writing the directory
    .sweep/tmp/         temporary files; readers of the outputs never look here, and every
                        start removes what a killed run left
    .sweep/state/       resumable partial results (the engine's)

`--force` removes only the files in `owned.json` and refuses a directory that holds anything
else, naming it. A second writer of the same directory is refused while the lock's owner lives.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

from sweep.errors import SweepError

TOOL_DIR = ".sweep"
LEGACY_STATE_DIR = ".state"  # engine 0.2 kept its resumable state here
NAME_MAX_BYTES = 255  # longest file-name component on Linux and macOS file systems
NAME_LENGTH = 100  # longest grid name: it becomes a directory name and Parquet metadata
SHOWN = 5  # foreign files named in a refusal
_HELD: dict[str, int] = {}  # directories this process holds the lock of, with nesting depth


def check_name(name, where: str) -> str:
    """A grid name: letters, digits, '.', '_' and '-', not '.' or '..', at most 100 chars."""
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    if not isinstance(name, str) or not name or len(name) > NAME_LENGTH \
            or name in (".", "..") or not set(name) <= allowed or name[0] in ".-":
        raise SweepError(f"{where}: `name` must be 1-{NAME_LENGTH} letters, digits, '.', '_' "
                         f"or '-', not starting with '.' or '-', got {_shown(name)}.")
    return name


def safe_name(text: str) -> str:
    """`text` made a valid name: other characters become '_', cut to the allowed length."""
    name = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in text)
    return name.lstrip(".-")[:NAME_LENGTH] or "grid"


def check_path(path, where: str, key: str, *, relative_only: bool = False) -> Path:
    """An output path: no NUL or control characters, no component over 255 bytes; with
    `relative_only` (paths read from grid files) no '..' component either."""
    if not isinstance(path, str | os.PathLike) or not str(path):
        raise SweepError(f"{where}: `{key}` must be a path string, got {_shown(path)}.")
    text = str(path)
    if any(ord(c) < 32 for c in text):
        raise SweepError(f"{where}: `{key}` must not contain NUL or control characters, "
                         f"got {_shown(text)}.")
    parts = Path(text).parts
    long = [p for p in parts if len(p.encode("utf-8", "surrogateescape")) > NAME_MAX_BYTES]
    if long:
        raise SweepError(f"{where}: `{key}`: the path component {_shown(long[0])} is longer "
                         f"than {NAME_MAX_BYTES} bytes.")
    if relative_only and ".." in parts:
        raise SweepError(f"{where}: `{key}` must not contain '..' (it would write outside the "
                         f"directory the grid names), got {text!r}.")
    return Path(text)


def writer_id() -> str:
    """This process among all that may share a directory (hosts of a multi-host run, a
    cache on a shared home): host and pid, for temporary file names."""
    return f"{safe_name(socket.gethostname())}.{os.getpid()}"


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "...'"


def io_error(err: OSError, path: Path, doing: str = "write") -> SweepError:
    """A clear one-line error for a failed file operation, naming the path and the cause."""
    cause = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
             errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
             errno.EROFS: "read-only file system"}.get(err.errno, err.strerror or str(err))
    return SweepError(f"cannot {doing} {path}: {cause}. Nothing written so far is lost: free "
                      "the space or fix the permission, then run the same command again.")


class OutputDir:
    """The output directory `root` and the tool's bookkeeping in `root/.sweep/`."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.internal = self.root / TOOL_DIR
        self.tmp = self.internal / "tmp"
        self.state = self.internal / "state"
        self._owned: set[str] | None = None

    # ---- what is ours ---------------------------------------------------------------------

    def owned(self) -> set[str]:
        """Relative paths of the files the tool wrote here (from `owned.json`, or, for a
        directory written by engine 0.2, the files its manifest lists and its state)."""
        if self._owned is None:
            self._owned = set(self._read_json("owned.json", []))
            manifest = self._read_manifest()
            if not (self.internal / "owned.json").exists() and manifest:
                listed = manifest.get("files", [])
                self._owned = {str(f) for f in listed if isinstance(f, str)} | {"manifest.json"}
                self._owned |= {str(p.relative_to(self.root)) for p in
                                (self.root / LEGACY_STATE_DIR).glob("*") if p.is_file()}
                self._owned |= {str(p.relative_to(self.root)) for p in
                                (self.root / "feasible").glob("chunk-*.parquet")}
        return self._owned

    def register(self, relative: str) -> None:
        """Record `relative` as ours, durably, before it is written."""
        owned = self.owned()
        if relative in owned:
            return
        owned.add(relative)
        self._write_internal("owned.json", json.dumps(sorted(owned), indent=0).encode())

    def foreign_files(self) -> list[str]:
        """Files under the root that the tool did not write (its bookkeeping excluded)."""
        if not self.root.is_dir():
            return []
        owned = self.owned()
        out = []
        for path in sorted(self.root.rglob("*")):
            relative = path.relative_to(self.root)
            if relative.parts[0] in (TOOL_DIR, LEGACY_STATE_DIR):
                continue
            if (path.is_file() or path.is_symlink()) and str(relative) not in owned:
                out.append(str(relative))
        return out

    def grid_hash(self) -> str | None:
        """Hash of the grid this directory holds (or is being written for), if known."""
        marker = self._read_json("grid.json", {})
        if isinstance(marker, dict) and isinstance(marker.get("hash"), str):
            return marker["hash"]
        manifest = self._read_manifest()
        value = manifest.get("grid_hash") if manifest else None
        return value if isinstance(value, str) else None

    # ---- claiming the directory -------------------------------------------------------------

    def claim(self, grid_hash: str, grid_name: str, *, force: bool, what: str = "a grid") -> bool:
        """Make the directory ours for this grid: True to resume (same grid, or empty), after
        removing the previous grid's files with `force`. Refuses foreign files and, without
        `force`, another grid's output. Call while holding the lock."""
        self._check_is_directory()
        foreign = self.foreign_files()
        previous = self.grid_hash()
        if foreign:
            shown = ", ".join(foreign[:SHOWN]) + (f" and {len(foreign) - SHOWN} more"
                                                  if len(foreign) > SHOWN else "")
            raise SweepError(f"{self.root} holds files this tool did not write ({shown}); "
                             "it writes only into an empty directory or its own output. "
                             "Choose another --out or [output] dir.")
        if previous not in (None, grid_hash):
            if self.owned() and not force:
                raise SweepError(f"{self.root} holds the output of a different grid; use "
                                 "--force to replace it (only the files this tool wrote there "
                                 "are removed) or choose another --out.")
            self.remove_owned()
        self._write_internal("grid.json", json.dumps({"hash": grid_hash, "name": grid_name,
                                                      "what": what}).encode())
        return previous == grid_hash

    def _check_is_directory(self) -> None:
        for folder in (self.root, *self.root.parents):
            if folder.exists() and not folder.is_dir():
                raise SweepError(f"{folder} is a file, not a directory; choose another --out.")

    def remove_owned(self) -> None:
        """Remove every file the tool wrote here, its state, and the folders left empty."""
        for relative in sorted(self.owned()):
            path = self.root / relative
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            self._prune(path.parent)
        shutil.rmtree(self.root / LEGACY_STATE_DIR, ignore_errors=True)
        shutil.rmtree(self.state, ignore_errors=True)
        (self.internal / "owned.json").unlink(missing_ok=True)
        (self.internal / "grid.json").unlink(missing_ok=True)
        self._owned = set()

    def _prune(self, folder: Path) -> None:
        """Remove `folder` and its parents up to the root while they are empty."""
        while folder != self.root and self.root in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold `.sweep/lock` (pid and host) while writing; a live owner is refused, a dead
        one's lock (same host, no such process) is taken over. Temporaries are swept.
        Re-entrant within a process (`fewest` holds it around the sweep it runs)."""
        key = str(self.root.resolve())
        if _HELD.get(key):
            _HELD[key] += 1
            try:
                yield
            finally:
                _HELD[key] -= 1
            return
        self._check_is_directory()
        try:
            self.internal.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise io_error(err, self.internal, "create") from None
        path = self.internal / "lock"
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._read_json("lock", {})
                if self._alive(owner):
                    raise SweepError(
                        f"{self.root} is being written by another process (pid "
                        f"{owner.get('pid')} on {owner.get('host')}); wait for it, or choose "
                        f"another --out. If that process is gone, delete {path}.") from None
                path.unlink(missing_ok=True)
                continue
            except OSError as err:
                raise io_error(err, path, "create") from None
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            break
        _HELD[key] = 1
        try:
            self.sweep_temporaries()
            yield
        finally:
            _HELD.pop(key, None)
            shutil.rmtree(self.tmp, ignore_errors=True)
            path.unlink(missing_ok=True)

    @staticmethod
    def _alive(owner) -> bool:
        if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int):
            return False  # unreadable: a writer killed while creating it
        if owner.get("host") != socket.gethostname():
            return True  # another machine's process: cannot tell, assume it lives
        try:
            os.kill(owner["pid"], 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def sweep_temporaries(self) -> None:
        """Remove what killed runs left: `.sweep/tmp/` and engine 0.2's `.name.tmp-<pid>`."""
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.root.is_dir():
            for stale in self.root.rglob(".*.tmp*"):
                if stale.is_file() and TOOL_DIR not in stale.relative_to(self.root).parts:
                    stale.unlink(missing_ok=True)

    # ---- writing ----------------------------------------------------------------------------

    def write(self, relative: str, produce: Callable[[Path], None]) -> Path:
        """Write `root/relative` atomically: `produce(tmp)` writes a temporary file in
        `.sweep/tmp/`, which is moved into place once complete. Registered first."""
        target = self.root / relative
        self.register(relative)
        return self._replace(target, produce)

    def write_bytes(self, relative: str, data: bytes) -> Path:
        return self.write(relative, lambda tmp: tmp.write_bytes(data))

    def write_json(self, relative: str, payload) -> Path:
        text = json.dumps(payload, indent=2, sort_keys=True) + "\n"
        return self.write_bytes(relative, text.encode())

    def remove(self, relative: str) -> None:
        """Remove one file of ours (and the folders it leaves empty)."""
        if relative in self.owned():
            path = self.root / relative
            path.unlink(missing_ok=True)
            self._prune(path.parent)
            self._owned.discard(relative)
            self._write_internal("owned.json", json.dumps(sorted(self._owned), indent=0)
                                 .encode())

    def write_state(self, name: str, produce: Callable[[Path], None]) -> Path:
        """Write `.sweep/state/name` atomically (internal: removed with the directory's
        state, never listed as an output)."""
        return self._replace(self.state / name, produce)

    def _write_internal(self, name: str, data: bytes) -> None:
        self._replace(self.internal / name, lambda tmp: tmp.write_bytes(data))

    def _replace(self, target: Path, produce: Callable[[Path], None]) -> Path:
        """Produce the file in `.sweep/tmp/`, then move it into place in one rename (`_place`).
        Temporary names carry the host and pid: the processes of a multi-host run share the
        directory."""
        writer = writer_id()
        partial = self.tmp / f"{target.name}.{writer}.partial"
        stage = self.tmp / f"{writer}.stage"
        try:
            partial.parent.mkdir(parents=True, exist_ok=True)
            produce(partial)
            _place(partial, target, stage)
        except OSError as err:
            raise io_error(err, target) from None
        finally:
            partial.unlink(missing_ok=True)
            shutil.rmtree(stage, ignore_errors=True)
        return target

    # ---- reading ----------------------------------------------------------------------------

    def _read_json(self, name: str, default):
        try:
            return json.loads((self.internal / name).read_text("utf-8"))
        except (OSError, ValueError):
            return default

    def _read_manifest(self) -> dict | None:
        """The manifest, or None when missing or unreadable (a truncated file included)."""
        try:
            manifest = json.loads((self.root / "manifest.json").read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return manifest if isinstance(manifest, dict) else None


PLACE_TRIES = 8  # each lost race means another writer made a folder: few can be missing


def _place(file: Path, target: Path, stage: Path) -> None:
    """Move `file` to `target` in one rename. Folders the target needs are built in `stage`
    around it and moved with it, so that no empty folder (which trips readers such as
    polars' hive scan) is ever visible. Another process may make the same folder meanwhile
    (every process of a multi-process run keeps its state in `.sweep/state/`): the rename
    onto it fails, and the file goes into the folder that is now there."""
    for _ in range(PLACE_TRIES):
        missing = _highest_missing(target.parent)
        if missing is None:
            os.replace(file, target)
            return
        staged = stage / target.relative_to(missing.parent)
        staged.parent.mkdir(parents=True, exist_ok=True)
        os.replace(file, staged)
        file = staged
        try:
            os.replace(stage / missing.name, missing)
            return
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    raise OSError(errno.EAGAIN, "other writers keep making its folders", str(target))


def _highest_missing(folder: Path) -> Path | None:
    """The outermost missing folder on the way to `folder` (None when it exists)."""
    if folder.exists():
        return None
    while not folder.parent.exists():
        folder = folder.parent
    return folder

