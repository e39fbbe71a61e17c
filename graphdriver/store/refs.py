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
from dataclasses import dataclass
from functools import lru_cache

from .files import read_bytes


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


@dataclass(frozen=True)
class Ref:
    """A layer's mount references: how many, and which kernel mount they share (0: none needed)."""

    count: int = 0
    mnt_id: int = 0


class RefStore:
    """Reads and writes reference counts under a directory. Callers hold the root lock."""

    def __init__(self, directory: str, home: str = "") -> None:
        self.dir = directory
        self.home = home

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
        raw = read_bytes(self.path(layer_id))
        if raw is None:
            return Ref()
        fields = raw.decode(errors="replace").split()
        if len(fields) != 3 or fields[2] != boot_id():
            return Ref()
        return Ref(int(fields[0]), int(fields[1]))

    def write(self, layer_id: str, ref: Ref) -> None:
        """Store ``ref`` in place; a zero count zeroes an existing record (and creates none)."""
        count = max(ref.count, 0)
        record = f"{count:010d} {ref.mnt_id if count else 0:020d} {boot_id()}\n".encode()
        flags = os.O_WRONLY | os.O_CLOEXEC | (os.O_CREAT if count else 0)
        try:
            fd = os.open(self.path(layer_id), flags, 0o600)
        except FileNotFoundError:
            if not count:
                return
            self._make_dir()
            fd = os.open(self.path(layer_id), flags, 0o600)
        try:
            os.pwrite(fd, record, 0)
            if os.fstat(fd).st_size != len(record):
                os.ftruncate(fd, len(record))
        finally:
            os.close(fd)

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
