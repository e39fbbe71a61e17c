"""Copy a directory tree with full fidelity: the vfs backend's layer copy.

Kept: owners, modes (setuid, setgid, sticky), hardlinks (as hardlinks inside the copy), symlinks, device
nodes, fifos, sockets (or skipped), every xattr (``user.*``, ``trusted.*``, ``security.capability``, ACLs)
and atime/mtime to the nanosecond, directories stamped after their content. File data is shared with
FICLONE where the filesystem can (btrfs, xfs), else copied in the kernel with ``copy_file_range``, else
read and written; sparse files stay sparse (SEEK_DATA/SEEK_HOLE).

Metadata order per inode matters: the kernel clears setuid/setgid and ``security.capability`` on chown
and on write, so data goes first, then owner, then mode, then xattrs, then times.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

from .errors import CopyFailed

FICLONE = 0x40049409  # _IOW(0x94, 9, int)
_CHUNK = 1 << 20
# errnos meaning "this filesystem (pair) cannot do it at all": remember and stop trying.
_FS_REFUSES = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.ENOSYS}
# errnos meaning "not for this file": fall back for this file only.
_FILE_REFUSES = {errno.EINVAL, errno.ETXTBSY, errno.EPERM, errno.EBADF}

Sockets = Literal["keep", "skip"]


@dataclass
class CopyStats:
    """What a copy did, by kind and by data method."""

    dirs: int = 0
    files: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    devices: int = 0
    fifos: int = 0
    sockets: int = 0
    skipped: int = 0
    bytes: int = 0
    reflinked: int = 0
    ranged: int = 0
    plain: int = 0


@dataclass
class _DataCopier:
    """Moves one file's bytes, choosing FICLONE, copy_file_range or read/write; remembers refusals."""

    reflink: bool
    stats: CopyStats
    no_clone: set[tuple[int, int]] = field(default_factory=set)
    no_range: set[tuple[int, int]] = field(default_factory=set)

    def copy(self, src_fd: int, dst_fd: int, st: os.stat_result, dst_dev: int) -> None:
        """Give ``dst_fd`` the content of ``src_fd`` (``st`` is the source's lstat)."""
        size = st.st_size
        self.stats.bytes += size
        if size == 0:
            return
        pair = (st.st_dev, dst_dev)
        if self.reflink and pair not in self.no_clone:
            try:
                fcntl.ioctl(dst_fd, FICLONE, src_fd)
                self.stats.reflinked += 1
                return
            except OSError as e:
                if e.errno in _FS_REFUSES:
                    self.no_clone.add(pair)
                elif e.errno not in _FILE_REFUSES:
                    raise
        used_range = False
        for start, end in _data_segments(src_fd, st):
            used_range |= self._copy_segment(src_fd, dst_fd, start, end, pair)
        if used_range:
            self.stats.ranged += 1
        else:
            self.stats.plain += 1
        os.ftruncate(dst_fd, size)  # trailing hole, or a file that shrank while we read it

    def _copy_segment(self, src_fd: int, dst_fd: int, start: int, end: int, pair: tuple[int, int]) -> bool:
        """Copy bytes [start, end) at the same offsets; True when copy_file_range did it."""
        pos = start
        if pair not in self.no_range:
            try:
                while pos < end:
                    n = os.copy_file_range(src_fd, dst_fd, end - pos, pos, pos)
                    if n == 0:
                        return True
                    pos += n
                return True
            except OSError as e:
                if e.errno in _FS_REFUSES:
                    self.no_range.add(pair)
                elif e.errno not in _FILE_REFUSES:
                    raise
        while pos < end:
            buf = os.pread(src_fd, min(_CHUNK, end - pos), pos)
            if not buf:
                break
            view = memoryview(buf)
            while view:
                n = os.pwrite(dst_fd, view, pos)
                view = view[n:]
                pos += n
        return False


def _data_segments(fd: int, st: os.stat_result) -> list[tuple[int, int]]:
    """The byte ranges holding data: the whole file unless it is sparse, then its SEEK_DATA runs."""
    size = st.st_size
    if st.st_blocks * 512 >= size:
        return [(0, size)]
    segments = []
    pos = 0
    try:
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:  # only a hole from here on
                    break
                raise
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            segments.append((start, end))
            pos = end
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
            raise
        return [(0, size)]
    return segments


def _copy_xattrs(src: str | int, dst: str | int, follow: bool = False) -> None:
    for name in os.listxattr(src, follow_symlinks=follow):
        os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=follow), follow_symlinks=follow)


def _apply_meta(src: str, dst: str, st: os.stat_result) -> None:
    """Owner, mode, xattrs and times of a non-regular inode (``dst`` by path, never followed)."""
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    _copy_xattrs(src, dst)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _open_source(path: str, flags: int = 0) -> int:
    """Open a source inode for reading without following a symlink and without touching its atime."""
    flags |= os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags | os.O_NOATIME)
    except PermissionError:
        return os.open(path, flags)


@contextmanager
def _scan(path: str) -> Iterator[Iterator[os.DirEntry[str]]]:
    """scandir on a directory opened with O_NOATIME (reading the source leaves its atimes alone)."""
    fd = _open_source(path, os.O_DIRECTORY)
    try:
        with os.scandir(fd) as it:
            yield it
    finally:
        os.close(fd)


class _TreeCopier:
    """One copy: walks the source with scandir, creates each inode, stamps directories last."""

    def __init__(self, reflink: bool, sockets: Sockets) -> None:
        self.stats = CopyStats()
        self.data = _DataCopier(reflink, self.stats)
        self.sockets = sockets
        self.links: dict[tuple[int, int], str] = {}

    def run(self, src: str, dst: str) -> CopyStats:
        root_st = os.lstat(src)
        if not stat.S_ISDIR(root_st.st_mode):
            raise CopyFailed(f"copy source {src} is not a directory")
        if not os.path.isdir(dst):
            os.mkdir(dst, 0o700)
        dst_dev = os.lstat(dst).st_dev
        pending = [(src, dst)]
        finish = [(src, dst, root_st)]
        while pending:
            sdir, ddir = pending.pop()
            with _scan(sdir) as it:
                for entry in it:
                    spath, dpath = os.path.join(sdir, entry.name), os.path.join(ddir, entry.name)
                    try:
                        st = entry.stat(follow_symlinks=False)
                        if stat.S_ISDIR(st.st_mode):
                            os.mkdir(dpath, 0o700)
                            self.stats.dirs += 1
                            pending.append((spath, dpath))
                            finish.append((spath, dpath, st))
                        else:
                            self._copy_leaf(spath, dpath, st, dst_dev)
                    except OSError as e:
                        raise CopyFailed(f"copying {spath} to {dpath}: {e.strerror or e}") from e
        for spath, dpath, st in reversed(finish):  # children before parents: times stay put
            try:
                _apply_meta(spath, dpath, st)
            except OSError as e:
                raise CopyFailed(f"copying attributes of {spath} to {dpath}: {e.strerror or e}") from e
        return self.stats

    def _copy_leaf(self, src: str, dst: str, st: os.stat_result, dst_dev: int) -> None:
        mode = st.st_mode
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in self.links:
            os.link(self.links[key], dst, follow_symlinks=False)
            self.stats.hardlinks += 1
            return
        if stat.S_ISREG(mode):
            self._copy_file(src, dst, st, dst_dev)
        else:
            if stat.S_ISLNK(mode):
                os.symlink(os.readlink(src), dst)
                self.stats.symlinks += 1
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                os.mknod(dst, stat.S_IFMT(mode) | 0o600, st.st_rdev)
                self.stats.devices += 1
            elif stat.S_ISFIFO(mode):
                os.mkfifo(dst, 0o600)
                self.stats.fifos += 1
            elif stat.S_ISSOCK(mode) and self.sockets == "keep":
                os.mknod(dst, stat.S_IFSOCK | 0o600)
                self.stats.sockets += 1
            else:
                self.stats.skipped += 1
                return
            _apply_meta(src, dst, st)
        if st.st_nlink > 1:
            self.links[key] = dst

    def _copy_file(self, src: str, dst: str, st: os.stat_result, dst_dev: int) -> None:
        sfd = _open_source(src)
        try:
            dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                self.data.copy(sfd, dfd, st, dst_dev)
                os.fchown(dfd, st.st_uid, st.st_gid)
                os.fchmod(dfd, stat.S_IMODE(st.st_mode))
                _copy_xattrs(sfd, dfd, follow=True)
                os.utime(dfd, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(dfd)
        finally:
            os.close(sfd)
        self.stats.files += 1


def copy_tree(src: str, dst: str, *, reflink: bool = True, sockets: Sockets = "keep") -> CopyStats:
    """Copy the tree at ``src`` into ``dst`` (created if absent; its own attributes become ``src``'s).

    ``reflink=False`` never tries FICLONE. ``sockets="skip"`` leaves socket inodes out.
    Raises :class:`CopyFailed` naming the path that could not be copied.
    """
    return _TreeCopier(reflink, sockets).run(src, dst)


def reflink_supported(directory: str) -> bool:
    """True when FICLONE works between two files in ``directory`` (btrfs, xfs with reflink=1)."""
    with tempfile.TemporaryDirectory(dir=directory, prefix=".reflink-probe-") as d:
        a, b = os.path.join(d, "a"), os.path.join(d, "b")
        with open(a, "wb") as f:
            f.write(b"\0" * 4096)
        with open(a, "rb") as fa, open(b, "wb") as fb:
            try:
                fcntl.ioctl(fb.fileno(), FICLONE, fa.fileno())
            except OSError:
                return False
    return True
