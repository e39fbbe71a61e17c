"""A root-wide lock that excludes other processes and other threads (flock on a per-thread descriptor)."""

from __future__ import annotations

import errno
import fcntl
import os
import threading


class _Held:
    """One thread's hold on a root lock: its own open file description of the lock file (kept open for
    the thread's next call: a lock is two syscalls, not four), how deep it is held, and for which
    process and generation of the file it was opened."""

    __slots__ = ("fd", "pid", "generation", "depth")

    def __init__(self, path: str, generation: int) -> None:
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:  # a read-only root: its lock file is there, and flock needs no write access
            if e.errno != errno.EROFS:
                raise
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.pid = os.getpid()  # a forked child shares the open file description: see RootLock
        self.generation = generation
        self.depth = 0

    def __del__(self) -> None:
        fd = getattr(self, "fd", -1)  # unset when the open failed
        if fd >= 0:
            os.close(fd)


class RootLock:
    """Exclusive, reentrant within one thread, exclusive across threads and processes.

    Each thread flocks its own open file description (locks belong to open file descriptions, so two
    threads of one process exclude each other as two processes do). A forked child opens its own (a
    shared description would not exclude the parent).
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
        held = getattr(self._local, "held", None)
        if held is None or held.pid != _pid or not held.depth and held.generation != self._generation:
            # first use in this thread, a forked child (not held here yet), or renewed: (re)open
            held = self._local.held = _Held(self.path, self._generation)
        if not held.depth:
            _flock(held.fd, _LOCK_EX)
        held.depth += 1

    def __exit__(self, *exc: object) -> None:
        held = self._local.held
        held.depth -= 1
        if not held.depth:
            _flock(held.fd, _LOCK_UN)


_pid = os.getpid()
_flock, _LOCK_EX, _LOCK_UN = fcntl.flock, fcntl.LOCK_EX, fcntl.LOCK_UN  # the get/put path, twice a call


def _after_fork() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_after_fork)
