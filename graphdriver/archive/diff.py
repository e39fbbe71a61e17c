"""Diff, Changes and DiffSize: native (walk the layer's own directory) or naive (compare two mounted trees).

Change rules, Docker's. Both ways: a path only in the layer is Added (a new directory's whole content
too); a path only in the parent is Deleted (the topmost one); a path in both is Modified by Docker's
naive rule (moby's ChangesDirs, which dockerd's overlay2 and vfs both use for Changes): type, mode,
owner, device number or ``security.capability`` differ, or for non-directories size, mtime (to the
second when either has no nanoseconds) or link target; a directory is also Modified when anything below
it changed. So a copy-up that changed nothing that rule sees is no change, though the native diff
exports it, as dockerd's does. aufs's native way is Docker's aufs Changes instead: every non-directory
of the layer's own directory that the layers below also show is Modified, and a directory both hold is
unless its mode, size and mtime are those below and nothing below it changed. Order: parents before
their children.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from ..errors import LayerNotMounted
from .inplace import LayerRead
from .native import native_diff_problem
from .tarwriter import ChunkStream, TarWriter, batched, export_xattrs
from .view import LayerView
from .whiteouts import AUFS_META, aufs_whiteout_target, is_overlay_whiteout, overlay_opaque

if TYPE_CHECKING:
    from ..driver import Driver

MODIFIED, ADDED, DELETED = 0, 1, 2
KIND_LETTER = {MODIFIED: "C", ADDED: "A", DELETED: "D"}


@dataclass(slots=True)
class Change:
    """One change; ``src``/``st`` locate the new content (None for deletions)."""

    path: bytes
    kind: int
    src: bytes | None = None
    st: os.stat_result | None = None


def _join(rel: bytes, name: bytes) -> bytes:
    return rel + b"/" + name if rel else name


def same_time(a_ns: int, b_ns: int) -> bool:
    """Docker's sameFsTime: equal, or the same second when either has no nanoseconds."""
    if a_ns == b_ns:
        return True
    return a_ns // 10**9 == b_ns // 10**9 and (a_ns % 10**9 == 0 or b_ns % 10**9 == 0)


def differs(new: bytes, nst: os.stat_result, old: bytes, ost: os.stat_result) -> bool:
    """True when the entry at ``new`` is a modification of the one at ``old``: moby's statDifferent (type,
    mode, owner, device number; size and mtime for non-directories) or another ``security.capability``
    (the one xattr a layer tar carries); also a symlink's target."""
    if nst.st_mode != ost.st_mode or nst.st_uid != ost.st_uid or nst.st_gid != ost.st_gid:
        return True
    if nst.st_rdev != ost.st_rdev:
        return True
    if not stat.S_ISDIR(nst.st_mode):
        if nst.st_size != ost.st_size or not same_time(nst.st_mtime_ns, ost.st_mtime_ns):
            return True
        if stat.S_ISLNK(nst.st_mode) and os.readlink(new) != os.readlink(old):
            return True
    return export_xattrs(new) != export_xattrs(old)


def same_dir(nst: os.stat_result, ost: os.stat_result) -> bool:
    """Docker's aufs test for a directory of the layer's own that is not a change: the one below is a
    directory with the same mode, size and mtime."""
    return nst.st_mode == ost.st_mode and nst.st_size == ost.st_size and same_time(nst.st_mtime_ns, ost.st_mtime_ns)


# -- which way ------------------------------------------------------------------------------------
def resolve_parent(driver: Driver, layer_id: str, parent: str | None,
                   naive: bool = False) -> tuple[str | None, bool]:
    """(the parent to compare against, True when the native way is exact for it). ``naive`` forces naive."""
    real = driver.parent(layer_id)
    parent = parent or real
    if parent is not None and parent != real:
        driver._require(parent)
    native = (not naive and parent == real and driver.whiteout_format in ("overlay", "aufs")
              and native_diff_problem(driver) is None)
    return parent, native


class _Mounted:
    """The layer's and the parent's root filesystems for a naive read, held until released: a mount
    already there shared (``get``), else a detached read-only view where the backend makes one (overlay2:
    nothing written, nothing mounted under the root, so a full or read-only root reads too; an
    uncommitted layer is never mounted with its upper dir for it), else got as ``get`` mounts it."""

    def __init__(self, driver: Driver, layer_id: str, parent: str | None) -> None:
        self.driver, self.ids = driver, [layer_id] + ([parent] if parent else [])
        self.roots: list[bytes] = []
        self._fds: list[int | None] = []  # per root: the detached view's descriptor, None for a get
        try:
            for lid in self.ids:
                self.roots.append(self._open(lid))
        except BaseException:
            self.release()
            raise

    def _open(self, layer_id: str) -> bytes:
        with self.driver.lock.held():  # no mount comes or goes between the look and the get
            fd = self.driver.read_only_fd(layer_id)
            path = os.fsencode(self.driver.get(layer_id)) if fd is None else b"/proc/self/fd/%d" % fd
        self._fds.append(fd)
        return path

    @property
    def new(self) -> bytes:
        return self.roots[0]

    @property
    def old(self) -> bytes | None:
        return self.roots[1] if len(self.roots) > 1 else None

    def release(self) -> None:
        """Close the views and put what was got. A reference someone else already dropped (a ``put``
        too many elsewhere) is not this read's to answer for: the others are put all the same."""
        held, self.roots, fds, self._fds = self.roots, [], self._fds, []
        for lid, _, fd in zip(self.ids, held, fds, strict=False):
            if fd is not None:
                os.close(fd)
                continue
            try:
                self.driver.put(lid)
            except LayerNotMounted:
                pass


def _mounted(driver: Driver, layer_id: str, parent: str | None, reading: LayerRead) -> _Mounted:
    """The mounts a naive read works through; the read's lease goes if they cannot be had."""
    try:
        return _Mounted(driver, layer_id, parent)
    except BaseException:
        reading.release()
        raise


# -- native ---------------------------------------------------------------------------------------
def native_changes(upper: bytes, lower: LayerView, fmt: str) -> list[Change]:
    """Changes of a layer read from its own directory, looked up against the layers below."""

    def walk(rel: bytes, d: bytes, opaque: bool, look: bool) -> list[Change]:
        out: list[Change] = []
        flag = overlay_opaque(d) if fmt == "overlay" else None
        present: set[bytes] = set()
        for name in sorted(os.listdir(d)):
            p, path = _join(rel, name), d + b"/" + name
            if fmt == "aufs" and name.startswith(b".wh."):
                target = aufs_whiteout_target(name)
                if target is not None and look and lower.lookup(_join(rel, target)) is not None:
                    out.append(Change(_join(rel, target), DELETED))
                continue
            st = os.lstat(path)
            if fmt == "overlay" and is_overlay_whiteout(path, st, flag):
                if look and lower.lookup(p) is not None:
                    out.append(Change(p, DELETED))
                continue
            present.add(name)
            low = lower.lookup(p) if look else None
            if stat.S_ISDIR(st.st_mode):
                low_dir = low is not None and stat.S_ISDIR(low[1].st_mode)
                sub_opaque = low_dir and (overlay_opaque(path) == b"y" if fmt == "overlay"
                                          else os.path.lexists(path + b"/.wh..wh..opq"))
                sub = walk(p, path, sub_opaque, low_dir)
                if low is None:
                    out.append(Change(p, ADDED, path, st))
                elif sub or (differs(path, st, *low) if fmt == "overlay" else not same_dir(st, low[1])):
                    out.append(Change(p, MODIFIED, path, st))
                out += sub
            elif low is None:
                out.append(Change(p, ADDED, path, st))
            elif fmt != "overlay" or differs(path, st, *low):  # aufs: every copy-up, as Docker's aufs
                out.append(Change(p, MODIFIED, path, st))
        if opaque:
            for name in sorted(set(lower.listdir(rel)) - present):
                out.append(Change(_join(rel, name), DELETED))
            out.sort(key=lambda c: c.path)
        return out

    return walk(b"", upper, False, True)


def native_tar(upper: bytes, fmt: str) -> Iterator[bytes]:
    """The layer's own directory as an OCI layer tar (overlay's whiteouts turned into ``.wh.`` entries)."""
    w = TarWriter()

    def walk(rel: bytes, d: bytes) -> Iterator[bytes]:
        flag = overlay_opaque(d) if fmt == "overlay" else None
        for name in sorted(os.listdir(d)):
            if fmt == "aufs" and (name in AUFS_META or name.startswith(b".wh..wh.") and name != b".wh..wh..opq"):
                continue
            p, path = _join(rel, name), d + b"/" + name
            st = os.lstat(path)
            if fmt == "overlay" and is_overlay_whiteout(path, st, flag):
                yield w.whiteout(_join(rel, b".wh." + name), st)
                continue
            yield from w.entry(p, path, st)
            if stat.S_ISDIR(st.st_mode):
                if fmt == "overlay" and overlay_opaque(path) == b"y":
                    yield w.whiteout(p + b"/.wh..wh..opq", st, opaque=True)
                yield from walk(p, path)

    yield from walk(b"", upper)
    yield w.end()


def native_size(upper: bytes, fmt: str) -> int:
    """Docker's ``directory.Size`` of the layer's own directory: the lstat size of everything but
    directories (a symlink counts its target's length), each inode once, aufs whiteouts skipped."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for d, dirs, files in os.walk(upper):
        if fmt == "aufs":
            dirs[:] = [x for x in dirs if not x.startswith(b".wh..wh.")]
        for name in files:
            if fmt == "aufs" and name.startswith(b".wh."):
                continue
            st = os.lstat(os.path.join(d, name))
            if not stat.S_ISDIR(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


# -- naive ----------------------------------------------------------------------------------------
def _scan(d: bytes | None) -> dict[bytes, os.stat_result]:
    if d is None:
        return {}
    with os.scandir(d) as it:
        return {e.name: e.stat(follow_symlinks=False) for e in it}


def naive_changes(old: bytes | None, new: bytes) -> list[Change]:
    """Compare two real trees (the parent's and the layer's root filesystems)."""

    def added(rel: bytes, d: bytes) -> list[Change]:
        out = []
        for name, st in sorted(_scan(d).items()):
            p, path = _join(rel, name), d + b"/" + name
            out.append(Change(p, ADDED, path, st))
            if stat.S_ISDIR(st.st_mode):
                out += added(p, path)
        return out

    def walk(rel: bytes, od: bytes, nd: bytes) -> list[Change]:
        out: list[Change] = []
        olds, news = _scan(od), _scan(nd)
        for name in sorted(olds.keys() | news.keys()):
            p = _join(rel, name)
            nst, ost = news.get(name), olds.get(name)
            if nst is None:
                out.append(Change(p, DELETED))
                continue
            npath = nd + b"/" + name
            if ost is None:
                out.append(Change(p, ADDED, npath, nst))
                if stat.S_ISDIR(nst.st_mode):
                    out += added(p, npath)
                continue
            opath = od + b"/" + name
            if stat.S_ISDIR(nst.st_mode) and stat.S_ISDIR(ost.st_mode):
                sub = walk(p, opath, npath)
                if sub or differs(npath, nst, opath, ost):
                    out.append(Change(p, MODIFIED, npath, nst))
                out += sub
            elif differs(npath, nst, opath, ost):
                out.append(Change(p, MODIFIED, npath, nst))
                if stat.S_ISDIR(nst.st_mode):
                    out += added(p, npath)
        return out

    if old is None:
        return added(b"", new)
    return walk(b"", old, new)


def changes_tar(changes: list[Change]) -> Iterator[bytes]:
    """Export changes as a layer tar: deletions as whiteouts, the rest from the new tree."""
    w = TarWriter()
    for c in changes:
        if c.kind == DELETED:
            d, _, base = c.path.rpartition(b"/")
            yield w.whiteout(_join(d, b".wh." + base))
        else:
            assert c.src is not None and c.st is not None
            yield from w.entry(c.path, c.src, c.st)
    yield w.end()


def changes_size(changes: list[Change]) -> int:
    """Docker's ``ChangesSize``: the lstat size of added and modified entries but directories (a symlink
    counts its target's length), each inode once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for c in changes:
        st = c.st
        if st is not None and not stat.S_ISDIR(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


# -- the DiffDriver calls -------------------------------------------------------------------------
def _lower(driver: Driver, layer_id: str) -> LayerView:
    return LayerView([driver.diff_path(a) for a in driver.ancestors(layer_id)], driver.whiteout_format)


def compute_changes(driver: Driver, layer_id: str, parent: str | None, *, naive: bool = False) -> list[Change]:
    """The layer's changes against ``parent`` (None: its own parent), native when exact."""
    parent, native = resolve_parent(driver, layer_id, parent, naive)
    reading = LayerRead(driver, layer_id)  # without the root lock: leased (and held by its mounts, if any)
    if native:
        own = os.fsencode(reading.path)
        return reading.run(lambda: native_changes(own, _lower(driver, layer_id), driver.whiteout_format))
    m = _mounted(driver, layer_id, parent, reading)
    try:
        return reading.run(lambda: naive_changes(m.old, m.new))
    finally:
        m.release()


def changes(driver: Driver, layer_id: str, parent: str | None) -> list[tuple[str, int]]:
    """Docker's Changes: ("/path", kind) pairs."""
    return [("/" + os.fsdecode(c.path), c.kind) for c in compute_changes(driver, layer_id, parent)]


def diff_stream(driver: Driver, layer_id: str, parent: str | None, *, naive: bool = False) -> BinaryIO:
    """Docker's Diff: a readable stream of the layer tar (mounts, if any, held until it is closed)."""
    parent, native = resolve_parent(driver, layer_id, parent, naive)
    reading = LayerRead(driver, layer_id)
    if native:
        tar = native_tar(os.fsencode(reading.path), driver.whiteout_format)
        return ChunkStream(reading.chunks(batched(tar)), reading.release)  # type: ignore[return-value]
    m = _mounted(driver, layer_id, parent, reading)

    def release() -> None:
        try:
            m.release()
        finally:
            reading.release()

    try:
        found = reading.run(lambda: naive_changes(m.old, m.new), keep=True)
    except BaseException:
        release()
        raise
    return ChunkStream(reading.chunks(batched(changes_tar(found))), release)  # type: ignore[return-value]


def diff_size(driver: Driver, layer_id: str, parent: str | None, *, naive: bool = False) -> int:
    """Docker's DiffSize."""
    parent, native = resolve_parent(driver, layer_id, parent, naive)
    reading = LayerRead(driver, layer_id)
    if native:
        return reading.run(lambda: native_size(os.fsencode(reading.path), driver.whiteout_format))
    m = _mounted(driver, layer_id, parent, reading)
    try:
        return changes_size(reading.run(lambda: naive_changes(m.old, m.new)))
    finally:
        m.release()
