"""Publish an extracted staging tree into a layer directory, all or nothing.

An empty layer directory is replaced in one rename. A layer that already has content (vfs: the copy of
its parent; any layer applied twice) is changed by renames only, each one journaled, so a failure part
way is rolled back: entries the archive deletes are moved to a trash directory, new entries are renamed
in, directories present on both sides are merged, and explicit directory entries get their metadata.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

from ..errors import ApplyFailed
from .safety import PathGuard
from .whiteouts import NotADir, open_dir, split


@dataclass
class _Meta:
    mode: int
    uid: int
    gid: int
    times: tuple[int, int]
    xattrs: dict[str, bytes]


def _read_meta(path: bytes) -> _Meta:
    st = os.lstat(path)
    xattrs = {n: os.getxattr(path, n, follow_symlinks=False) for n in os.listxattr(path, follow_symlinks=False)}
    return _Meta(stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, (st.st_atime_ns, st.st_mtime_ns), xattrs)


def _write_meta(path: bytes, m: _Meta, *, drop_others: bool = False) -> None:
    os.chown(path, m.uid, m.gid, follow_symlinks=False)
    os.chmod(path, m.mode)
    if drop_others:
        for name in os.listxattr(path, follow_symlinks=False):
            if name not in m.xattrs:
                os.removexattr(path, name, follow_symlinks=False)
    for name, value in m.xattrs.items():
        os.setxattr(path, name, value, follow_symlinks=False)
    os.utime(path, ns=m.times, follow_symlinks=False)


@dataclass
class Journal:
    """Renames and metadata changes done so far, undone in reverse order on failure."""

    trash: bytes
    ops: list[tuple[str, bytes, object]] = field(default_factory=list)
    dir_times: dict[bytes, tuple[int, int]] = field(default_factory=dict)
    _n: int = 0

    def _times(self, path: bytes) -> tuple[bytes, tuple[int, int]]:
        d = os.path.dirname(path)
        st = os.lstat(d)
        return d, (st.st_atime_ns, st.st_mtime_ns)

    def remove(self, path: bytes) -> None:
        """Move ``path`` out of the layer into the trash."""
        d, times = self._times(path)
        self._n += 1
        dst = self.trash + b"/%d" % self._n
        os.rename(path, dst)
        self.dir_times.setdefault(d, times)
        self.ops.append(("remove", path, dst))

    def add(self, src: bytes, dst: bytes) -> None:
        """Rename a staged entry into the layer."""
        d, times = self._times(dst)
        os.rename(src, dst)
        self.dir_times.setdefault(d, times)
        self.ops.append(("add", dst, src))

    def set_meta(self, dst: bytes, meta: _Meta) -> None:
        """Give directory ``dst`` the owner, mode, xattrs and times ``meta`` (read before its staged
        directory was emptied into ``dst``: moving entries out changes its times)."""
        old = _read_meta(dst)
        self.ops.append(("meta", dst, old))
        _write_meta(dst, meta)

    def undo(self) -> None:
        for kind, path, other in reversed(self.ops):
            if kind == "remove":
                os.rename(other, path)  # type: ignore[arg-type]
            elif kind == "add":
                os.rename(path, other)  # type: ignore[arg-type]
            else:
                _write_meta(path, other, drop_others=True)  # type: ignore[arg-type]
        for d, times in self.dir_times.items():
            try:
                os.utime(d, ns=times, follow_symlinks=False)
            except OSError:
                pass  # times are cosmetic; the entries themselves are back
        self.ops.clear()


def is_empty_dir(path: str) -> bool:
    """True for an existing directory with no entries."""
    with os.scandir(path) as it:
        return next(it, None) is None


def publish(stage: str, target: str, trash: str, guard: PathGuard, fmt: str) -> None:
    """Make ``target`` hold the applied layer; ``stage`` is consumed. Rolls back on failure."""
    if is_empty_dir(target):
        try:
            os.rename(stage, target)
        except OSError as e:
            raise ApplyFailed(f"publishing into {target} failed: {e.strerror or e}") from None
        return
    journal = Journal(os.fsencode(trash))
    s, t = os.fsencode(stage), os.fsencode(target)
    opaque = set(guard.opaques)
    try:
        root_meta = _read_meta(s) if b"" in guard.explicit_dirs else None
        if fmt == "applied":
            _carry_out_deletions(t, guard, journal)
        _merge(s, t, b"", guard, opaque, fmt, journal)
        if root_meta is not None:
            journal.set_meta(t, root_meta)
    except OSError as e:
        try:
            journal.undo()
        except OSError as undo_err:
            raise ApplyFailed(f"publishing into {target} failed ({e.strerror or e}) and rolling back failed "
                              f"too ({undo_err.strerror or undo_err}); the layer needs repair") from None
        raise ApplyFailed(f"publishing into {target} failed: {e.strerror or e} ({os.fsdecode(e.filename or b'')})"
                          "; rolled back") from None


def _carry_out_deletions(t: bytes, guard: PathGuard, journal: Journal) -> None:
    """vfs: remove what the archive's whiteouts name, and empty opaque directories (never via symlinks)."""
    for d in guard.opaques:
        try:
            with open_dir(t, split(d)) as fd:
                names = os.listdir(fd)
        except NotADir:
            continue
        base = t + b"/" + d if d else t
        for name in names:
            journal.remove(base + b"/" + os.fsencode(name))
    for d, name in guard.whiteouts:
        try:
            with open_dir(t, split(d)) as fd:
                try:
                    os.lstat(name, dir_fd=fd)
                except FileNotFoundError:
                    continue
        except NotADir:
            continue
        journal.remove((t + b"/" + d if d else t) + b"/" + name)


def _merge(s_root: bytes, t_root: bytes, rel: bytes, guard: PathGuard, opaque: set[bytes], fmt: str,
           journal: Journal) -> None:
    sdir = s_root + b"/" + rel if rel else s_root
    tdir = t_root + b"/" + rel if rel else t_root
    for name in sorted(os.listdir(sdir)):
        child = rel + b"/" + name if rel else name
        src, dst = sdir + b"/" + name, tdir + b"/" + name
        sst = os.lstat(src)
        try:
            tst = os.lstat(dst)
        except FileNotFoundError:
            journal.add(src, dst)
            continue
        mergeable = stat.S_ISDIR(sst.st_mode) and stat.S_ISDIR(tst.st_mode)
        if mergeable and not (fmt != "applied" and child in opaque):
            meta = _read_meta(src) if child in guard.explicit_dirs else None
            _merge(s_root, t_root, child, guard, opaque, fmt, journal)
            if meta is not None:
                journal.set_meta(dst, meta)
            continue
        journal.remove(dst)
        journal.add(src, dst)
