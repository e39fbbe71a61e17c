"""Build tar streams byte by byte for tests (hostile ones included): full control over every header field."""

from __future__ import annotations

import os
import stat

from graphdriver.archive import tarformat as tf


def _b(s: str | bytes) -> bytes:
    return s.encode() if isinstance(s, str) else s


def header(name: str | bytes, typeflag: bytes = tf.REG, *, size: int = 0, mode: int = 0o644, uid: int = 0,
           gid: int = 0, mtime: int = 1700000000, linkname: str | bytes = b"", magic: bytes = b"ustar\x0000",
           devmajor: int = 0, devminor: int = 0, size_field: bytes | None = None, prefix: bytes = b"") -> bytes:
    """One header block (checksum fixed up); ``size_field`` puts raw bytes in the size field."""
    h = bytearray(tf.build_header(_b(name)[:100], typeflag, size=size, mode=mode, uid=uid, gid=gid, mtime=mtime,
                                  linkname=_b(linkname)[:100], devmajor=devmajor, devminor=devminor))
    h[257:265] = magic
    if prefix:
        h[345:345 + len(prefix)] = prefix
    if size_field is not None:
        h[124:136] = size_field.ljust(12, b"\0")[:12]
    return fix_checksum(bytes(h))


def fix_checksum(h: bytes) -> bytes:
    h = bytearray(h)
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def data_blocks(data: bytes) -> bytes:
    return data + bytes(tf.padded(len(data)) - len(data))


def pax(records: dict[str, bytes | str], typeflag: bytes = tf.PAX_X) -> bytes:
    body = b"".join(tf.pax_record(k, _b(v)) for k, v in records.items())
    return header("PaxHeaders/x", typeflag, size=len(body)) + data_blocks(body)


def gnu_long(value: bytes, typeflag: bytes = tf.GNU_LONGNAME) -> bytes:
    return header("././@LongLink", typeflag, size=len(value) + 1, magic=b"ustar  \0") + data_blocks(value + b"\0")


def file(name: str | bytes, data: bytes = b"", **kw) -> bytes:
    return header(name, tf.REG, size=len(data), **kw) + data_blocks(data)


def directory(name: str | bytes, **kw) -> bytes:
    kw.setdefault("mode", 0o755)
    return header(_b(name).rstrip(b"/") + b"/", tf.DIR, **kw)


def symlink(name: str | bytes, target: str | bytes, **kw) -> bytes:
    return header(name, tf.SYMLINK, linkname=target, mode=0o777, **kw)


def hardlink(name: str | bytes, target: str | bytes, **kw) -> bytes:
    return header(name, tf.LINK, linkname=target, **kw)


def end() -> bytes:
    return tf.ZERO_BLOCK * 2


def tar(*members: bytes) -> bytes:
    return b"".join(members) + end()


def snapshot(top: str) -> dict[str, tuple]:
    """Everything observable about a tree: type, mode, owner, size, mtime, link target, content, xattrs."""
    out: dict[str, tuple] = {}
    if not os.path.lexists(top):
        return out
    for d, dirs, files in os.walk(top):
        for name in sorted(dirs + files):
            p = os.path.join(d, name)
            st = os.lstat(p)
            extra: object = None
            if stat.S_ISLNK(st.st_mode):
                extra = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    extra = f.read()
            try:
                xa = tuple(sorted((n, os.getxattr(p, n, follow_symlinks=False))
                                  for n in os.listxattr(p, follow_symlinks=False)))
            except OSError:
                xa = ()
            out[os.path.relpath(p, top)] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_rdev,
                                            st.st_mtime_ns if not stat.S_ISDIR(st.st_mode) else 0, extra, xa)
    st = os.lstat(top)
    out["."] = (st.st_mode, st.st_uid, st.st_gid)
    return out
