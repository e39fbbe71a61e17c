"""Write an OCI layer tar from files on disk as Docker's tar writer (Go's archive/tar) does: PAX format, only
``security.capability`` of the xattrs (as ``SCHILY.xattr.*``), hard links as links, sparse files as plain
regular entries with every byte (the OCI layer spec: sparse entries SHOULD NOT be used), mtimes in whole
seconds (before 1970 as a PAX ``mtime`` record), whiteouts as ``.wh.`` entries. Output is a stream of
byte chunks.
"""

from __future__ import annotations

import functools
import grp
import io
import os
import pwd
import stat
from collections.abc import Callable, Iterator

from . import tarformat as tf

CHUNK = 1 << 20
#: The one xattr Docker's layer tars carry (moby's ReadSecurityXattrToTarHeader).
EXPORTED_XATTRS = ("security.capability",)


def export_xattrs(path: bytes) -> dict[str, bytes]:
    """The xattrs a layer tar records for ``path``: ``security.capability`` only, as Docker's."""
    out = {}
    for n in EXPORTED_XATTRS:
        try:
            out[n] = os.getxattr(path, n, follow_symlinks=False)
        except OSError:
            continue
    return out


@functools.lru_cache(maxsize=256)
def user_name(uid: int) -> bytes:
    """The host's name for ``uid`` (empty when it has none), as Go's tar.FileInfoHeader fills Uname."""
    try:
        return pwd.getpwuid(uid).pw_name.encode()
    except KeyError:
        return b""


@functools.lru_cache(maxsize=256)
def group_name(gid: int) -> bytes:
    """The host's name for ``gid`` (empty when it has none)."""
    try:
        return grp.getgrgid(gid).gr_name.encode()
    except KeyError:
        return b""


class TarWriter:
    """Entries to tar bytes; remembers inodes so later names of one file become hard links."""

    def __init__(self) -> None:
        self.links: dict[tuple[int, int], bytes] = {}

    def _header(self, name: bytes, typeflag: bytes, st: os.stat_result | None, *, size: int = 0,
                linkname: bytes = b"", xattrs: dict[str, bytes] | None = None, mode: int | None = None,
                mtime: int | None = None) -> bytes:
        if mode is None:  # type bits kept, as Docker writes them: identical content, identical diffID
            mode = (stat.S_IFMT(st.st_mode) | stat.S_IMODE(st.st_mode)) if st else 0
        uid, gid = (st.st_uid, st.st_gid) if st else (0, 0)
        if mtime is None:  # whole seconds, down (Go's Truncate); before 1970 a PAX record says it
            mtime = st.st_mtime_ns // 10**9 if st else 0
        major = minor = 0
        if st is not None and (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
            major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
        records: list[tuple[str, bytes]] = []
        if len(name) > 100 or not name.isascii():
            records.append(("path", name))
        if len(linkname) > 100 or not linkname.isascii():
            records.append(("linkpath", linkname))
        for key, value, width in (("uid", uid, 8), ("gid", gid, 8), ("size", size, 12), ("mtime", mtime, 12)):
            if not tf.fits_octal(value, width):
                records.append((key, str(value).encode()))
        for key in sorted(xattrs or {}):
            records.append(("SCHILY.xattr." + key, (xattrs or {})[key]))
        uname, gname = (user_name(uid), group_name(gid)) if st else (b"", b"")
        for key, value in (("uname", uname), ("gname", gname)):
            if len(value) > 32 or not value.isascii():
                records.append((key, value))
        out, prefix = b"", b""
        split = tf.split_ustar(name) if len(records) == 1 and records[0][0] == "path" else None
        if split is not None:  # a long name ustar's prefix field carries: no PAX block, as Go writes it
            prefix, name = split
        elif records:  # in key order, as Go's tar writer puts them; the header's own fields in ASCII
            out = tf.pax_block(b"".join(tf.pax_record(k, v) for k, v in sorted(records)), name)
            name, linkname = tf.to_ascii(name), tf.to_ascii(linkname)
            uname, gname = tf.to_ascii(uname), tf.to_ascii(gname)
        return out + tf.build_header(name, typeflag, size=size, mode=mode, uid=uid, gid=gid, mtime=mtime,
                                     linkname=linkname, devmajor=major, devminor=minor,
                                     uname=uname, gname=gname, prefix=prefix)

    def whiteout(self, name: bytes, st: os.stat_result | None = None, *, opaque: bool = False) -> bytes:
        """An OCI whiteout (or opaque marker) entry: an empty regular file.

        With ``st`` (the overlay 0:0 device, or the opaque directory) it carries that inode's owner, as
        Docker's overlay2 writes it: mode 0600 and the device's mtime for a whiteout; the directory's
        permission bits and no mtime for an opaque marker. Devices that are one inode (overlayfs links
        its whiteouts to one since Linux 5.8) are hard links to moby's writer, which the whiteout
        conversion turns back into regular entries but leaves the link name in: every one after the
        first names the first device (``d/x``, not ``d/.wh.x``), as here.
        """
        if st is None:
            return self._header(name, tf.REG, None)
        if opaque:
            return self._header(name, tf.REG, st, mode=stat.S_IMODE(st.st_mode), mtime=0)
        first = b""
        if st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            first = self.links.get(key, b"")
            if not first:
                parent, _, base = name.rpartition(b"/")
                self.links[key] = (parent + b"/" if parent else b"") + base.removeprefix(b".wh.")
        return self._header(name, tf.REG, st, mode=0o600, linkname=first)

    def entry(self, name: bytes, path: bytes, st: os.stat_result) -> Iterator[bytes]:
        """The tar bytes of the file at ``path`` stored as ``name`` (sockets are skipped)."""
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            yield self._header(name.rstrip(b"/") + b"/", tf.DIR, st, xattrs=export_xattrs(path))
            return
        if stat.S_ISSOCK(mode):
            return
        key = (st.st_dev, st.st_ino)
        xattrs = export_xattrs(path)  # read before the link is told, as moby's writer: a link carries them too
        if st.st_nlink > 1:
            first = self.links.get(key)
            if first is not None:
                yield self._header(name, tf.LINK, st, linkname=first, xattrs=xattrs)
                return
            self.links[key] = name
        if stat.S_ISLNK(mode):
            yield self._header(name, tf.SYMLINK, st, linkname=os.readlink(path), xattrs=xattrs)
        elif stat.S_ISCHR(mode):
            yield self._header(name, tf.CHR, st, xattrs=xattrs)
        elif stat.S_ISBLK(mode):
            yield self._header(name, tf.BLK, st, xattrs=xattrs)
        elif stat.S_ISFIFO(mode):
            yield self._header(name, tf.FIFO, st, xattrs=xattrs)
        elif stat.S_ISREG(mode):
            yield from self._regular(name, path, st, xattrs)

    def _regular(self, name: bytes, path: bytes, st: os.stat_result, xattrs: dict[str, bytes]) -> Iterator[bytes]:
        size = st.st_size
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            yield self._header(name, tf.REG, st, size=size, xattrs=xattrs)
            yield from _copy(fd, 0, size)  # holes read as zeros
        finally:
            os.close(fd)

    @staticmethod
    def end() -> bytes:
        """The end-of-archive marker."""
        return tf.ZERO_BLOCK * 2


def _copy(fd: int, offset: int, n: int) -> Iterator[bytes]:
    """``n`` bytes of the file from ``offset`` (zero-filled if it shrank), padded to a block."""
    left = n
    while left:
        chunk = os.pread(fd, min(CHUNK, left), offset)
        if not chunk:
            chunk = bytes(min(CHUNK, left))
        yield chunk
        offset += len(chunk)
        left -= len(chunk)
    if n % tf.BLOCK:
        yield bytes(tf.BLOCK - n % tf.BLOCK)


def batched(chunks: Iterator[bytes], size: int = 1 << 18) -> Iterator[bytes]:
    """Join small chunks into pieces of about ``size`` bytes (fewer, larger reads downstream)."""
    parts: list[bytes] = []
    have = 0
    for c in chunks:
        if len(c) >= size and not parts:
            yield c
            continue
        parts.append(c)
        have += len(c)
        if have >= size:
            yield b"".join(parts)
            parts, have = [], 0
    if parts:
        yield b"".join(parts)


class ChunkStream(io.RawIOBase):
    """A readable binary stream over an iterator of byte chunks; ``on_close`` runs once when closed."""

    def __init__(self, chunks: Iterator[bytes], on_close: Callable[[], None] | None = None) -> None:
        super().__init__()
        self._chunks = chunks
        self._left = memoryview(b"")
        self._on_close = on_close

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        while not self._left:
            try:
                self._left = memoryview(next(self._chunks))
            except StopIteration:
                return 0
        n = min(len(b), len(self._left))
        b[:n] = self._left[:n]
        self._left = self._left[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            try:
                close = getattr(self._chunks, "close", None)
                if close:
                    close()
            finally:
                cb, self._on_close = self._on_close, None
                super().close()
                if cb:
                    cb()
