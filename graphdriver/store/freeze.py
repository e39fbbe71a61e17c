"""A running container's processes held still (SIGSTOP, then SIGCONT) while its rw layer is read: what
``container commit --pause`` does, so the snapshot is consistent."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused(pid: int | None, timeout: float = 5.0) -> Iterator[None]:
    """Stop process ``pid`` and all its descendants (SIGSTOP) for the block, then continue them."""
    import psutil  # only a commit of a running container needs it

    stopped: dict[int, psutil.Process] = {}
    try:
        while pid:
            try:
                root = psutil.Process(pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            new = [p for p in procs if p.pid not in stopped]
            if not new:
                break
            for p in new:
                try:
                    p.send_signal(signal.SIGSTOP)
                    stopped[p.pid] = p
                except psutil.NoSuchProcess:
                    pass
        deadline = time.monotonic() + timeout
        for p in stopped.values():
            while time.monotonic() < deadline:
                try:
                    if p.status() in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP, psutil.STATUS_ZOMBIE):
                        break
                except psutil.NoSuchProcess:
                    break
                time.sleep(0.002)
        yield
    finally:
        for p in stopped.values():
            try:
                p.send_signal(signal.SIGCONT)
            except psutil.NoSuchProcess:
                pass
