"""Unmounting with EBUSY retries, and naming the processes that hold a busy mount (psutil)."""

from __future__ import annotations

import errno
import os
import time

from ..errors import MountBusy
from . import syscalls


def holders(path: str) -> list[str]:
    """``name[pid]`` of every process whose cwd, root, executable, open files or maps lie under ``path``."""
    import psutil  # only a busy mount needs it: one-shot calls stay quick to start

    prefix = os.path.realpath(path).rstrip("/") + "/"
    found: list[str] = []

    def under(p: str | None) -> bool:
        return bool(p) and (p + "/").startswith(prefix)

    for proc in psutil.process_iter(["pid", "name"]):
        try:
            paths = [proc.cwd(), proc.exe()]
            try:
                paths.append(os.readlink(f"/proc/{proc.pid}/root"))
            except OSError:
                pass
            paths += [f.path for f in proc.open_files()]
            paths += [m.path for m in proc.memory_maps(grouped=True)]
        except (psutil.Error, OSError):
            continue
        if any(under(p) for p in paths):
            found.append(f"{proc.info['name']}[{proc.pid}]")
    return found


def unmount(target: str, *, retries: int = 5, delay: float = 0.05) -> bool:
    """umount2(target); EBUSY is retried, then reported as :class:`MountBusy` naming the holders.

    Returns False when nothing was mounted there.
    """
    for attempt in range(retries + 1):
        try:
            syscalls.umount2(target, syscalls.UMOUNT_NOFOLLOW)
            return True
        except OSError as e:
            if e.errno == errno.ENOENT or e.errno == errno.EINVAL and not os.path.ismount(target):
                return False  # already gone
            if e.errno != errno.EBUSY:
                raise
            if attempt == retries:
                who = holders(target)
                held = ", ".join(who) if who else "no process found (a nested mount or an open fd elsewhere?)"
                raise MountBusy(f"{target} is busy: held by {held}") from None
            time.sleep(delay * (attempt + 1))
