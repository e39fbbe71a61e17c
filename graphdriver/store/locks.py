"""A root-wide lock that excludes other processes and other threads (flock on a per-thread descriptor)."""

from __future__ import annotations

import fcntl
import os
import threading


class KeptFd:
    """A descriptor kept open for reuse (``fd``), closed when the last reference to it goes."""

    fd = -1

    def __init__(self, path: str, flags: int, mode: int = 0o600) -> None:
        self.fd = os.open(path, flags | os.O_CLOEXEC, mode)
        self.pid = os.getpid()  # a forked child shares the open file description: see RootLock

    def __del__(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)


class RootLock:
    """Exclusive, reentrant within one thread, exclusive across threads and processes.

    Each thread flocks its own open file description (locks belong to open file descriptions, so two
    threads of one process exclude each other as two processes do). The descriptor stays open for the
    thread's next call: a lock is two syscalls, not four. A forked child opens its own (a shared
    description would not exclude the parent).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()
        self._generation = 0  # moved on by renew(): each thread opens the file again

    def held(self) -> RootLock:
        """The lock as a context manager: ``with lock.held(): ...``."""
        return self

    def renew(self) -> None:
        """Open the lock file again, in each thread, at its next outermost acquisition: the directory at
        the root's path was replaced (its ``.lock`` is another file now, the one other processes take)."""
        self._generation += 1

    def __enter__(self) -> None:
        local = self._local
        d = getattr(local, "d", None)
        if d is None or d.pid != _pid:  # first use in this thread, or a forked child: not held here yet
            local.depth = 0
        depth = local.depth
        if not depth:
            if d is None or d.pid != _pid or local.generation != self._generation:  # (re)open: see renew()
                d = local.d = KeptFd(self.path, os.O_RDWR | os.O_CREAT)
                local.generation = self._generation
            _flock(d.fd, _LOCK_EX)
        local.depth = depth + 1

    def __exit__(self, *exc: object) -> None:
        local = self._local
        depth = local.depth = local.depth - 1
        if not depth:
            _flock(local.d.fd, _LOCK_UN)


_pid = os.getpid()
_flock, _LOCK_EX, _LOCK_UN = fcntl.flock, fcntl.LOCK_EX, fcntl.LOCK_UN  # the get/put path, twice a call


def _after_fork() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_after_fork)
