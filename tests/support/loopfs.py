"""A new filesystem on a loop device, for tests and benchmarks that need one of their own.

Usage::

    with loop_filesystem(workdir, "ext4", 64 << 20, mkfs_args=("-O", "quota,project"), options="prjquota") as mnt:
        ...

The image is sparse (``<work>/<fstype>.img``), made with ``mkfs.<fstype> -q``, attached with ``losetup``
and mounted at ``<work>/mnt``; afterwards it is unmounted (detached) and the loop device released. The
image stays in ``work`` for the caller to remove. No loop device: :class:`LoopUnavailable`; a mount the
kernel refuses: its ``OSError``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from graphdriver.kernel import syscalls


class LoopUnavailable(RuntimeError):
    """No loop device could be attached (the message is losetup's)."""


@contextmanager
def loop_filesystem(work: str, fstype: str, size: int, *, mkfs_args: tuple[str, ...] = (),
                    options: str | None = None) -> Iterator[str]:
    """Mount a fresh ``fstype`` of ``size`` bytes at ``<work>/mnt`` for the block; yields the mount point."""
    image, mnt = os.path.join(work, f"{fstype}.img"), os.path.join(work, "mnt")
    os.makedirs(mnt, exist_ok=True)
    with open(image, "wb") as f:
        f.truncate(size)
    force = "-f" if fstype in ("btrfs", "xfs") else "-F"
    subprocess.run([f"mkfs.{fstype}", "-q", force, *mkfs_args, image], check=True, capture_output=True)
    r = subprocess.run(["losetup", "--find", "--show", image], capture_output=True, text=True)
    if r.returncode != 0:
        raise LoopUnavailable(f"no loop device: {r.stderr.strip()}")
    loop = r.stdout.strip()
    try:
        syscalls.mount(loop, mnt, fstype, 0, options)
        try:
            yield mnt
        finally:
            syscalls.umount2(mnt, syscalls.MNT_DETACH)
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)
