"""containerd snapshotter semantics on a root directory: the metadata store plus snapshot directories.

Layout under ``<root>``: ``metadata.db`` (sqlite3), ``snapshots/<id>/{fs,work}``, ``l/<id in base 36>``
(short symlinks to each ``fs``, for long overlay lowerdir lists), and transient
``snapshots/.new-*`` / ``snapshots/.del-*`` directories. A new snapshot is built in ``.new-*`` and renamed
to ``<id>`` inside the metadata transaction that records it; a removed one is renamed to ``.del-*`` inside
the transaction that forgets it. So after a crash at any point, every directory is either recorded or a
leftover that :meth:`Snapshotter.cleanup` removes.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

from ...errors import DriverUnsupported, InvalidSnapshotRequest, SnapshotNotFound, SnapshotStateError
from ...kernel import probe
from . import filters
from .mounts import Layout, MountPlan, plan_mounts, short_name
from .store import Kind, MetaStore, Snapshot, check_labels

#: --driver names: overlay (the default) stacks lowers; vfs copies the parent into each new snapshot.
DRIVERS = {"overlay2": "overlay", "overlay": "overlay", "overlayfs": "overlay", "vfs": "vfs", "native": "vfs"}


@dataclass(frozen=True)
class Usage:
    size: int
    inodes: int


class Snapshotter:
    """One root; thread-safe; one process per root (an flock on ``<root>/snapshots/.lock``)."""

    def __init__(self, root: str, driver: str | None = None) -> None:
        mode = DRIVERS.get(driver or "overlay")
        if mode is None:
            raise DriverUnsupported(f"snapshotter driver {driver!r} unknown (one of {', '.join(sorted(DRIVERS))})")
        self.root = os.path.realpath(root)  # one identity (and the kernel shows mounts by the real path)
        self.copy_mode = mode == "vfs"
        if not self.copy_mode and not probe.has_filesystem("overlay"):
            raise DriverUnsupported("overlay is not in /proc/filesystems: use --driver vfs")
        # index=off (as containerd's overlayfs) where the kernel has the feature at all
        self.index_off = probe.module_param("overlay", "index") is not None
        self.layout = Layout(self.root)
        os.makedirs(self.layout.home, mode=0o700, exist_ok=True)
        os.makedirs(self.layout.link_dir, mode=0o700, exist_ok=True)
        self._lockfd = os.open(os.path.join(self.layout.home, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._lockfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lockfd)
            raise DriverUnsupported(f"snapshotter root {self.root} is in use by another process") from None
        self.store = MetaStore(os.path.join(self.root, "metadata.db"))

    def close(self) -> None:
        self.store.close()
        os.close(self._lockfd)

    # -- create ------------------------------------------------------------------------------------
    def prepare(self, key: str, parent: str, labels: dict[str, str]) -> MountPlan:
        return self._create(Kind.ACTIVE, key, parent, labels)

    def view(self, key: str, parent: str, labels: dict[str, str]) -> MountPlan:
        return self._create(Kind.VIEW, key, parent, labels)

    def _create(self, kind: Kind, key: str, parent: str, labels: dict[str, str]) -> MountPlan:
        if not key:
            raise InvalidSnapshotRequest("snapshot key must not be empty")
        check_labels(labels)
        stage = ""
        try:
            # Staged inside the transaction: a Cleanup (which removes every unrecorded directory, staging
            # ones included) takes the same transaction lock, so it never sees this one half made.
            with self.store.tx() as st:
                stage = tempfile.mkdtemp(prefix=".new-", dir=self.layout.home)
                for sub in ("fs", "work"):
                    os.mkdir(os.path.join(stage, sub))
                    os.chmod(os.path.join(stage, sub), 0o755)  # whatever the umask
                parent_snap = None
                if parent:
                    parent_snap = st.get(parent)
                    if parent_snap.kind != Kind.COMMITTED:
                        raise InvalidSnapshotRequest(f"parent {parent!r} is not a committed snapshot")
                snap = st.insert(key, kind, parent_snap.id if parent_snap else None, labels)
                chain = st.chain(snap)
                plan = self._plan(snap, chain)
                if self.copy_mode and parent_snap is not None:
                    _copy_tree(self.layout.fs(parent_snap.id), os.path.join(stage, "fs"))
                final = self.layout.dir(snap.id)
                if os.path.lexists(final):  # a leftover of a crashed, rolled-back create with this id
                    os.rename(final, tempfile.mkdtemp(prefix=".del-", dir=self.layout.home) + "/x")
                link = self.layout.link(snap.id)
                if os.path.lexists(link):
                    os.unlink(link)
                os.symlink(self.layout.link_target(snap.id), link)
                os.rename(stage, final)
                stage = ""
            return plan
        finally:
            if stage:
                shutil.rmtree(stage, ignore_errors=True)

    def _plan(self, snap: Snapshot, chain: list[int]) -> MountPlan:
        return plan_mounts(self.layout, snap.id, snap.kind, chain, copy_mode=self.copy_mode,
                           index_off=self.index_off)

    # -- read --------------------------------------------------------------------------------------
    def mounts(self, key: str) -> MountPlan:
        with self.store.read() as st:
            snap = st.get(key)
            if snap.kind not in (Kind.ACTIVE, Kind.VIEW):
                raise SnapshotStateError(f"snapshot {key!r} is {snap.kind.label}: only active and view snapshots mount")
            return self._plan(snap, st.chain(snap))

    def stat(self, key: str) -> Snapshot:
        with self.store.read() as st:
            return st.get(key)

    def walk(self, filter_strings: list[str]) -> Iterator[Snapshot]:
        flt = filters.parse(filter_strings)
        with self.store.read() as st:
            snaps = st.all()
        for s in snaps:
            if flt.match(filters.snapshot_adaptor(s.kind.label, s.key, s.parent, s.labels)):
                yield s

    def usage(self, key: str) -> Usage:
        with self.store.read() as st:
            snap = st.get(key)
        if snap.kind != Kind.ACTIVE:
            return Usage(snap.size, snap.inodes)
        used = disk_usage(self.layout.fs(snap.id))  # counted without the lock: a remove may come between
        with self.store.read() as st:
            now = st.find(key)
        if now is None or now.id != snap.id:
            raise SnapshotNotFound(f"snapshot {key!r} was removed while its usage was counted")
        return used

    # -- change ------------------------------------------------------------------------------------
    def commit(self, name: str, key: str, labels: dict[str, str]) -> Snapshot:
        if not name:
            raise InvalidSnapshotRequest("commit name must not be empty")
        check_labels(labels)
        with self.store.tx() as st:
            snap = st.get(key)
            if snap.kind != Kind.ACTIVE:
                raise SnapshotStateError(f"snapshot {key!r} is {snap.kind.label}, not active: cannot commit it")
            use = disk_usage(self.layout.fs(snap.id))
            return st.commit(snap, name, labels, use.size, use.inodes)

    def update(self, key: str, labels: dict[str, str], fieldpaths: list[str]) -> Snapshot:
        """Labels only (all of them, or those named ``labels.K`` / ``labels`` in ``fieldpaths``)."""
        check_labels(labels)
        with self.store.tx() as st:
            snap = st.get(key)
            new = dict(snap.labels)
            if not fieldpaths:
                new = dict(labels)
            for path in fieldpaths:
                if path == "labels":
                    new = dict(labels)
                elif path.startswith("labels."):
                    k = path[len("labels."):]
                    if k in labels:
                        new[k] = labels[k]
                    else:
                        new.pop(k, None)
                else:
                    raise InvalidSnapshotRequest(f"cannot update field {path!r} of snapshot {key!r}: only labels")
            return st.set_labels(snap, new)

    def remove(self, key: str) -> None:
        trash = ""
        with self.store.tx() as st:
            snap = st.get(key)
            kids = st.children(snap.id)
            if kids:
                raise SnapshotStateError(f"cannot remove snapshot {key!r}: it has {len(kids)} child snapshot(s)")
            st.delete(snap)
            if os.path.lexists(self.layout.link(snap.id)):
                os.unlink(self.layout.link(snap.id))
            src = self.layout.dir(snap.id)
            if os.path.lexists(src):
                trash = tempfile.mkdtemp(prefix=".del-", dir=self.layout.home)
                os.rename(src, os.path.join(trash, "x"))
        if trash:
            shutil.rmtree(trash, ignore_errors=True)

    def cleanup(self) -> list[str]:
        """Remove every directory under ``snapshots/`` that no recorded snapshot owns; return their names."""
        removed = []
        with self.store.tx() as st:
            known = {str(i) for i in st.ids()}
            for name in sorted(os.listdir(self.layout.home)):
                if name in known or name == ".lock":
                    continue
                path = os.path.join(self.layout.home, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
                removed.append(name)
            links = {short_name(int(i)) for i in known}
            for name in sorted(os.listdir(self.layout.link_dir)):
                if name not in links:
                    os.unlink(os.path.join(self.layout.link_dir, name))
                    removed.append(f"l/{name}")
        return removed

    def verify(self) -> list[str]:
        """Differences between the metadata and the directories: one line each (empty when consistent)."""
        problems = []
        with self.store.read() as st:
            snaps = st.all()
        known = {str(s.id) for s in snaps}
        for s in snaps:
            fs = self.layout.fs(s.id)
            if not os.path.isdir(fs):
                problems.append(f"snapshot {s.key!r} (id {s.id}): {fs} is missing")
            link = self.layout.link(s.id)
            if not os.path.islink(link) or os.readlink(link) != self.layout.link_target(s.id):
                problems.append(f"snapshot {s.key!r} (id {s.id}): link {link} is missing or wrong")
        for name in sorted(os.listdir(self.layout.home)):
            if name not in known and name != ".lock":
                problems.append(f"{os.path.join(self.layout.home, name)}: not a recorded snapshot (Cleanup removes it)")
        return problems


def disk_usage(path: str) -> Usage:
    """Bytes (allocated blocks) and inodes under ``path``, each hard-linked inode once."""
    seen: set[tuple[int, int]] = set()
    size = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [*dirnames, *filenames, ""]:
            try:
                st = os.lstat(os.path.join(dirpath, name) if name else dirpath)
            except FileNotFoundError:  # removed since it was listed (a live container's files churn)
                continue
            ident = (st.st_dev, st.st_ino)
            if ident in seen:
                continue
            seen.add(ident)
            size += st.st_blocks * 512
    return Usage(size, len(seen))


def _copy_tree(src: str, dest: str) -> None:
    """A full copy (vfs mode): ownership, modes, xattrs, hard links kept; reflinks where the fs can."""
    subprocess.run(["cp", "-a", "--reflink=auto", src + "/.", dest], check=True, capture_output=True)
