"""Whiteouts on disk, per backend format, both ways.

- ``overlay``: a deleted name is a 0:0 character device; an opaque directory carries
  ``trusted.overlay.opaque=y`` (``user.overlay.*`` under ``userxattr``). Newer kernels also write
  "xwhiteouts": a regular file with ``overlay.whiteout`` inside a directory marked ``overlay.opaque=x``.
- ``aufs``: ``.wh.<name>`` and ``.wh..wh..opq`` files kept as they are; ``.wh..wh.aufs/plnk/orph`` are aufs's.
- ``applied`` (vfs): deletions are carried out; nothing marks them.

Paths are walked with O_NOFOLLOW, so a symlink never redirects a whiteout out of its layer.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

OVERLAY_PREFIXES = ("trusted.overlay.", "user.overlay.")
AUFS_META = (b".wh..wh.aufs", b".wh..wh.plnk", b".wh..wh.orph")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class NotADir(Exception):
    """A path component is missing, a symlink or not a directory."""


@contextmanager
def open_dir(root: str | bytes, parts: tuple[bytes, ...] | list[bytes], create: bool = False,
             mode: int = 0o755) -> Iterator[int]:
    """A descriptor of ``root/parts`` reached without following symlinks (made when ``create``)."""
    fd = os.open(root, _DIR_FLAGS)
    try:
        for part in parts:
            try:
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise NotADir(part) from None
                os.mkdir(part, mode, dir_fd=fd)
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise NotADir(part) from None
                raise
            os.close(fd)
            fd = nfd
        yield fd
    finally:
        os.close(fd)


def split(path: bytes) -> tuple[bytes, ...]:
    """Components of a relative path (``b""`` is the root)."""
    return tuple(p for p in path.split(b"/") if p)


def xattr_prefix(mount_options: tuple[str, ...] | list[str]) -> str:
    """Which namespace overlayfs reads its whiteout xattrs from under these options."""
    return "user.overlay." if "userxattr" in mount_options else "trusted.overlay."


# -- apply side -----------------------------------------------------------------------------------
def make_overlay_whiteout(root: str, parent: bytes, name: bytes) -> bool:
    """mknod a 0:0 character device ``root/parent/name``; False when something is already there."""
    with open_dir(root, split(parent), create=True) as fd:
        try:
            os.mknod(name, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=fd)
        except FileExistsError:
            return False
        os.chown(name, 0, 0, dir_fd=fd, follow_symlinks=False)
    return True


def set_overlay_opaque(root: str, path: bytes, prefix: str = "trusted.overlay.") -> None:
    """Mark ``root/path`` opaque (made if absent)."""
    with open_dir(root, split(path), create=True) as fd:
        os.setxattr(fd, prefix + "opaque", b"y")


# -- read side ------------------------------------------------------------------------------------
def _xattr(path: str | bytes, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return None


def overlay_opaque(path: str | bytes) -> bytes | None:
    """The directory's ``overlay.opaque`` value (``y`` opaque, ``x`` holds xwhiteouts) or None."""
    for prefix in OVERLAY_PREFIXES:
        value = _xattr(path, prefix + "opaque")
        if value is not None:
            return value
    return None


def is_overlay_whiteout(path: str | bytes, st: os.stat_result, parent_flag: bytes | None) -> bool:
    """True for a 0:0 char device, or an xwhiteout inside a directory marked ``opaque=x``."""
    if stat.S_ISCHR(st.st_mode):
        return st.st_rdev == 0
    if parent_flag == b"x" and stat.S_ISREG(st.st_mode) and st.st_size == 0:
        return any(_xattr(path, p + "whiteout") is not None for p in OVERLAY_PREFIXES)
    return False


def is_overlay_xattr(name: str) -> bool:
    """overlayfs's private xattrs never travel in a layer tar."""
    return name.startswith(OVERLAY_PREFIXES)


def aufs_whiteout_target(name: bytes) -> bytes | None:
    """``x`` for ``.wh.x``; None for ordinary names and aufs metadata (``.wh..wh.*``)."""
    if name.startswith(b".wh.") and not name.startswith(b".wh..wh."):
        return name[4:]
    return None


def lstat_in(root: str, parts: tuple[bytes, ...]) -> os.stat_result | None:
    """lstat of ``root/parts`` without following symlinks on the way; None when absent or unreachable."""
    try:
        with open_dir(root, parts[:-1]) as fd:
            return os.lstat(parts[-1], dir_fd=fd)
    except (NotADir, FileNotFoundError):
        return None


def translate_overlay(stage: str, whiteouts: list[tuple[bytes, bytes]], opaques: list[bytes],
                      prefix: str = "trusted.overlay.") -> None:
    """Turn recorded OCI whiteouts into overlay's form inside a freshly extracted tree.

    A whiteout whose name the same archive also wrote as a directory makes that directory opaque (the
    lower one is gone, the new content stays); over any other entry of the archive it does nothing.
    """
    # A later entry of the same archive may have replaced a whiteout's directory with a non-directory:
    # then nothing below that name survives and the whiteout has nothing left to hide (NotADir: skip it).
    for parent, name in whiteouts:
        parts = split(parent) + (name,)
        st = lstat_in(stage, parts)
        try:
            if st is None:
                make_overlay_whiteout(stage, parent, name)
            elif stat.S_ISDIR(st.st_mode):
                set_overlay_opaque(stage, b"/".join(parts), prefix)
        except NotADir:
            continue
    for d in opaques:
        try:
            set_overlay_opaque(stage, d, prefix)
        except NotADir:
            continue
