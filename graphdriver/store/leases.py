"""Leases: a directory some process is working on, so that no other pulls it from under it.

A lease is an ``flock`` on the directory itself: shared for a read of a layer's files in place (a diff,
its changes, its size), exclusive for work that replaces or removes them (an apply publishing, a
remove) and for a staging directory's owner. Locks belong to open file descriptions, so two threads of
one process exclude each other as two processes do, and the kernel drops a lease when its holder ends
however it ends: unlike a count kept on disk, a lease never outlives the work it stands for, and
``cleanup`` can tell a live staging directory from one a crash left.
"""

from __future__ import annotations

import fcntl
import os
import time

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW


class Lease:
    """A held flock on one directory; :meth:`release` (or leaving a ``with``) lets it go."""

    __slots__ = ("path", "fd")

    def __init__(self, path: str, fd: int) -> None:
        self.path, self.fd = path, fd

    @classmethod
    def take(cls, path: str, *, shared: bool, wait: bool = True) -> Lease | None:
        """Lease ``path`` (shared or exclusive); None when ``wait`` is False and another holds a lease that
        excludes this one. Raises FileNotFoundError when there is no such directory."""
        fd = os.open(path, _DIR_FLAGS)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd)

    def convert(self, *, shared: bool) -> bool:
        """Make this lease shared or exclusive without waiting; False when another holds a lease that
        excludes it. The kernel drops the old lock before it tries the new one, so after a False this
        lease holds nothing (release it)."""
        try:
            fcntl.flock(self.fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def still_there(self) -> bool:
        """The leased directory is still the one at its path (not removed, renamed away or replaced while
        the lease was waited for)."""
        try:
            now = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        held = os.fstat(self.fd)
        return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)

    def release(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)  # the last descriptor of the open file description: the flock goes with it

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def in_use(path: str) -> bool:
    """True when some process (this one included) holds a lease on the directory ``path``."""
    try:
        lease = Lease.take(path, shared=False, wait=False)
    except (FileNotFoundError, NotADirectoryError):
        return False
    if lease is None:
        return True
    lease.release()
    return False


def in_use_by_someone(path: str, patience: float = 0.5) -> bool:
    """:func:`in_use`, judged again while the lease is held by no process the kernel's lock table names:
    one on its way out (a killed process, or the fork it was making, closing its descriptors) lets go
    within moments; what still holds it after ``patience`` seconds is taken as at work."""
    deadline = time.monotonic() + patience
    while in_use(path):
        if holders(path) or time.monotonic() > deadline:
            return True
        time.sleep(0.02)
    return False


def holders(path: str) -> list[str]:
    """``name[pid]`` of the processes holding a lease on ``path``, from the kernel's lock table
    (``/proc/locks``: the pid that took each flock, the device and inode it is on)."""
    try:
        st = os.stat(path, follow_symlinks=False)
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            table = f.read().splitlines()
    except OSError:
        return []
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids: list[int] = []
    for line in table:
        fields = line.split()
        # "1: FLOCK  ADVISORY  READ 2411 fe:00:2153850 0 EOF" (a waiter's line has "->" after the number)
        if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK" or fields[5] != inode:
            continue
        pid = int(fields[4])
        if pid not in pids:
            pids.append(pid)
    return [_named(pid) for pid in pids]


def _named(pid: int) -> str:
    import psutil  # only a refusal needs it

    try:
        return f"{psutil.Process(pid).name()}[{pid}]"
    except psutil.Error:
        return f"[{pid}]"
