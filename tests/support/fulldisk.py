"""A small filesystem of a test's own, and filling it for real: for the full-disk tests."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

from graphdriver.kernel import syscalls


@contextmanager
def small_tmpfs(path: str, size: int = 4 << 20, inodes: int = 0) -> Iterator[str]:
    """A tmpfs of ``size`` bytes (and ``inodes`` inodes, when given) mounted at ``path`` (made here),
    detached afterwards."""
    os.mkdir(path)
    syscalls.mount("tmpfs", path, "tmpfs", 0, f"size={size},mode=0755" + (f",nr_inodes={inodes}" if inodes else ""))
    try:
        yield path
    finally:
        syscalls.umount2(path, syscalls.MNT_DETACH)


def fill(disk: str, leave: int = 0) -> str:
    """Write zeros to ``disk/filler`` until ``leave`` bytes or fewer are free (the kernel's count, in
    whole pages; 0: until the disk refuses); the filler's path, to unlink for room again."""
    path = os.path.join(disk, "filler")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    chunk = b"\0" * 65536
    try:
        while True:
            st = os.statvfs(disk)
            room = st.f_bfree * st.f_frsize - leave
            if room <= 0:
                break
            os.write(fd, chunk[:min(len(chunk), room)])
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)
    return path
