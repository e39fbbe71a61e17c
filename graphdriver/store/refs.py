"""Mount reference counts that survive across processes and restarts.

A count lives in ``<runtime dir>/<id>`` (see :func:`runtime_dir`) as ``<count> <mount id> <boot id>``.
The kernel's mount table is the truth: a count whose mount is gone, or that was written in an earlier
boot, reads as zero.

The record has a fixed width (zero-padded numbers) and is rewritten in place with one ``pwrite``: no
temporary file, no rename (on ext4 a rename over a file forces its data out, which cost more than the
mount itself). Writers hold the root lock; a process dying mid-call cannot leave half a record, and a
crash of the machine starts a new boot, which voids every record anyway.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from functools import lru_cache
from typing import NamedTuple

from .files import KeptFd


def _on_tmpfs(path: str) -> bool:
    from ..kernel.probe import backing_fs

    try:
        return backing_fs(path) == "tmpfs"
    except OSError:
        return False


@lru_cache(maxsize=64)
def runtime_dir(home: str) -> str:
    """Where a root's mount references live: volatile state on a tmpfs.

    ``$GRAPHDRIVER_RUNTIME``, else ``/run/graphdriver`` or ``/dev/shm/graphdriver`` (whichever is a
    tmpfs), in a directory named after the root. A tmpfs empties at reboot, and writing there never
    dirties the backing filesystem — an overlay unmount syncs its upper filesystem, so a count kept on
    ext4 would make every ``put`` pay for a journal commit. Without a tmpfs: ``<home>/.refs``.
    """
    digest = hashlib.sha256(os.fsencode(home)).hexdigest()[:16]
    base = os.environ.get("GRAPHDRIVER_RUNTIME")
    if not base:
        for candidate in ("/run", "/dev/shm"):
            if _on_tmpfs(candidate):
                base = os.path.join(candidate, "graphdriver")
                break
        else:
            return os.path.join(home, ".refs")
    return os.path.join(base, f"{os.path.basename(home)}-{digest}")


@lru_cache(maxsize=1)
def boot_id() -> str:
    """This boot's id from /proc/sys/kernel/random/boot_id."""
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()


class Ref(NamedTuple):
    """A layer's mount references: how many, and which kernel mount they share (0: none needed)."""

    count: int = 0
    mnt_id: int = 0


_READ = 256  # more than a record: a longer file is not ours to trust


def _record(ref: Ref) -> bytes:
    """The fixed-width line for ``ref`` (a line: whatever follows the newline is never read)."""
    count = max(ref.count, 0)
    return b"%010d %020d %s\n" % (count, ref.mnt_id if count else 0, _boot_id_bytes())


@lru_cache(maxsize=1)
def _boot_id_bytes() -> bytes:
    return boot_id().encode()


def _parse(raw: bytes) -> Ref:
    fields = raw.split(b"\n", 1)[0].split()
    if len(fields) != 3 or fields[2] != _boot_id_bytes():
        return Ref()
    try:
        return Ref(int(fields[0]), int(fields[1]))
    except ValueError:
        return Ref()


class RefRecord:
    """One layer's record: ``ref`` as read, :meth:`set` rewrites it in place (one descriptor for both)."""

    def __init__(self, store: RefStore, layer_id: str) -> None:
        self._store = store
        self._id = layer_id
        try:
            self._fd = store.open(layer_id, os.O_RDWR | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            self._fd = -1
        self.ref = _parse(os.pread(self._fd, _READ, 0)) if self._fd >= 0 else Ref()

    def set(self, ref: Ref) -> None:
        """Store ``ref`` (creating the record when there was none)."""
        if self._fd < 0:
            self._store.write(self._id, ref)
        else:
            os.pwrite(self._fd, _record(ref), 0)
        self.ref = ref

    def __enter__(self) -> RefRecord:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class RefStore:
    """Reads and writes reference counts under a directory. Callers hold the root lock."""

    def __init__(self, directory: str, home: str = "") -> None:
        self.dir = directory
        self.home = home
        self._dir_fd: KeptFd | None = None

    def open(self, layer_id: str, flags: int) -> int:
        """os.open of ``layer_id``'s record, looked up from a kept descriptor of the directory.

        FileNotFoundError when the directory or the record is not there. A directory removed and made
        again by another process (the kept one then has no links) is opened afresh.
        """
        held = self._dir_fd
        if held is None:
            held = self._dir_fd = KeptFd(self.dir, os.O_PATH | os.O_DIRECTORY)
        try:
            return os.open(layer_id, flags, 0o600, dir_fd=held.fd)
        except FileNotFoundError:
            if os.fstat(held.fd).st_nlink:
                raise
        self._dir_fd = None  # gone: look the directory up again (FileNotFoundError when still absent)
        held = self._dir_fd = KeptFd(self.dir, os.O_PATH | os.O_DIRECTORY)
        return os.open(layer_id, flags, 0o600, dir_fd=held.fd)

    def _make_dir(self) -> None:
        """Create the directory on first use, naming the root it belongs to (see :func:`prune_runtime`)."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        with open(os.path.join(self.dir, ".home"), "w") as f:
            f.write(self.home)

    def path(self, layer_id: str) -> str:
        """The file holding ``layer_id``'s count."""
        return f"{self.dir}/{layer_id}"  # ids are checked: no slash, no '..'

    def read(self, layer_id: str) -> Ref:
        """The stored reference, or an empty one (absent, unreadable, or from an earlier boot)."""
        with self.record(layer_id) as rec:
            return rec.ref

    def write(self, layer_id: str, ref: Ref) -> None:
        """Store ``ref`` in place; a zero count zeroes an existing record (and creates none)."""
        flags = os.O_WRONLY | os.O_CLOEXEC | (os.O_CREAT if ref.count > 0 else 0)
        try:
            fd = self.open(layer_id, flags)
        except FileNotFoundError:
            if ref.count <= 0:
                return
            self._make_dir()
            fd = self.open(layer_id, flags)
        try:
            os.pwrite(fd, _record(ref), 0)
        finally:
            os.close(fd)

    def record(self, layer_id: str) -> RefRecord:
        """``layer_id``'s record open for reading and rewriting with one descriptor (use ``with``)."""
        return RefRecord(self, layer_id)

    def drop(self, layer_id: str) -> None:
        """Forget ``layer_id``'s references."""
        try:
            os.unlink(self.path(layer_id))
        except FileNotFoundError:
            pass

    def all(self) -> dict[str, Ref]:
        """Every layer with a live reference."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return {}
        out = {}
        for name in names:
            if ".tmp-" in name or name.startswith("."):
                continue
            ref = self.read(name)
            if ref.count:
                out[name] = ref
        return out

    def remove(self) -> None:
        """Forget every reference of this root (its runtime directory goes too)."""
        shutil.rmtree(self.dir, ignore_errors=True)
        self._dir_fd = None


def prune_runtime() -> list[str]:
    """Remove the runtime directories of roots that no longer exist; returns what was removed."""
    bases = {os.environ.get("GRAPHDRIVER_RUNTIME", ""), "/run/graphdriver", "/dev/shm/graphdriver"} - {""}
    removed = []
    for base in sorted(bases):
        try:
            entries = os.listdir(base)
        except OSError:
            continue
        for name in entries:
            d = os.path.join(base, name)
            try:
                with open(os.path.join(d, ".home")) as f:
                    home = f.read()
                gone = not home or not os.path.isdir(home)
            except FileNotFoundError:
                gone = not [n for n in os.listdir(d) if not n.startswith(".")]
            except OSError:
                continue
            if gone:
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d)
    return removed
