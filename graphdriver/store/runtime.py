"""Where roots keep their volatile state (the mount reference tables of :mod:`graphdriver.store.refs`):
a directory per root on a tmpfs, this boot's id, and the removal of directories whose root is gone.

A runtime directory names its root by path (``.home``) and the mount namespace that path was seen from
(``.mntns``): a root on a filesystem mounted only in another namespace (a private one of a runtime, a
test, ``unshare -m``) is no directory here, and only a namespace no process lives in any more is judged
from this one."""

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


def mount_namespace() -> str:
    """This process's mount namespace, as ``<device>:<inode>`` of ``/proc/self/ns/mnt``."""
    st = os.stat("/proc/self/ns/mnt")
    return f"{st.st_dev}:{st.st_ino}"


def live_mount_namespaces() -> set[str]:
    """The mount namespaces some process lives in (as :func:`mount_namespace` names them)."""
    live = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                st = os.stat(f"/proc/{pid}/ns/mnt")
            except OSError:  # gone, or a kernel thread's
                continue
            live.add(f"{st.st_dev}:{st.st_ino}")
    return live


def _seen_elsewhere(d: str, ours: str, live: list[set[str]]) -> bool:
    """The directory's root was named from another mount namespace that still has a process in it: its
    path may lead elsewhere, or nowhere, from ours."""
    try:
        with open(os.path.join(d, ".mntns")) as f:
            ns = f.read()
    except OSError:  # named before namespaces were recorded
        return False
    if not ns or ns == ours:
        return False
    if not live:
        live.append(live_mount_namespaces())
    return ns in live[0]


def prune_runtime() -> list[str]:
    """Remove the runtime directories of roots that no longer exist; returns what was removed. Roots
    named from another mount namespace still in use are passed over (see the module's docstring)."""
    ours = mount_namespace()
    live: list[set[str]] = []  # looked up once, when first needed
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
                    gone = not home or (not os.path.isdir(home) and not _seen_elsewhere(d, ours, live))
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
