"""Where roots keep their volatile state (the mount reference tables of :mod:`graphdriver.store.refs`):
a directory per root on a tmpfs, this boot's id, and the removal of directories whose root is gone."""

from __future__ import annotations

import hashlib
import os
import shutil
from functools import lru_cache

from .leases import Lease


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
            # Judged and removed holding an exclusive lease: a directory being made (RefStore._make_dir)
            # or judged by another prune (another root's cleanup) at the same time is passed over, and
            # one removed meanwhile is no error.
            try:
                lease = Lease.take(d, shared=False, wait=False)
            except OSError:  # gone already, or not a directory
                continue
            if lease is None:
                continue
            with lease:
                try:
                    with open(os.path.join(d, ".home")) as f:
                        home = f.read()
                    gone = not home or not os.path.isdir(home)
                except FileNotFoundError:
                    try:
                        gone = not [n for n in os.listdir(d) if not n.startswith(".")]
                    except OSError:
                        continue
                except OSError:
                    continue
                if gone and lease.still_there():
                    shutil.rmtree(d, ignore_errors=True)
                    removed.append(d)
    return removed
