"""statx(2) and statmount(2) through ctypes: which mount a path is on, and what the kernel says of one
mount — the reading half of the mount syscalls (:mod:`graphdriver.kernel.syscalls` is the other).

The get/put path calls these once or twice per call: each reads into a per-thread buffer and unpacks
only the fields it needs.
"""

from __future__ import annotations

import ctypes
import os
import struct
import threading
from typing import NamedTuple

# ctypes plumbing shared within graphdriver.kernel
from .syscalls import (
    _FS_ENCODING,
    AT_FDCWD,
    AT_SYMLINK_NOFOLLOW,
    MOUNT_ATTR_RDONLY,
    SYS_STATMOUNT,
    SYS_STATX,
    _b,
    _check,
    _sys,
)

STATX_INO = 0x100
STATX_MTIME = 0x40
STATX_CTIME = 0x80
STATX_BTIME = 0x800
STATX_MNT_ID = 0x1000
STATX_MNT_ID_UNIQUE = 0x4000
STATX_ATTR_MOUNT_ROOT = 0x2000

STATMOUNT_SB_BASIC = 0x1
STATMOUNT_MNT_BASIC = 0x2
STATMOUNT_MNT_POINT = 0x10
STATMOUNT_FS_TYPE = 0x20
STATMOUNT_MNT_OPTS = 0x80
STATMOUNT_SB_SOURCE = 0x200
STATMOUNT_OPT_ARRAY = 0x400
SB_RDONLY = 0x1


class MountID(NamedTuple):
    """Which mount a path lives on: the mount id and whether the path is that mount's root; and which
    inode the path is (``ino``, ``born``: its birth time in ns, else its ctime) — a directory made anew
    under the same name is another (ino, born)."""

    mnt_id: int
    unique: bool
    is_mount_root: bool
    ino: int = 0
    born: int = 0


_tls = threading.local()  # per-thread reusable buffers for the get/put path
_STATX_WANT = STATX_MNT_ID_UNIQUE | STATX_MNT_ID | STATX_INO | STATX_CTIME | STATX_BTIME
#: struct statx, the fields read: mask, attributes, ino, attributes_mask, btime (s, ns), ctime (s, ns),
#: mnt_id (offsets from include/uapi/linux/stat.h; one unpack instead of a ctypes field read each).
_STATX_READ = struct.Struct("=I4xQ16xQ16xQ16xqI4xqI4x32xQ")
_STATX_SIZE = 256
#: The same, for a directory's key: mask, attributes, ino, attributes_mask, btime, ctime, mtime (s, ns).
_STATX_KEY = struct.Struct("=I4xQ16xQ16xQ16xqI4xqI4xqI4x")
_KEY_WANT = STATX_INO | STATX_CTIME | STATX_BTIME | STATX_MTIME


def _statx(path: str | bytes, want: int) -> ctypes.Array[ctypes.c_char]:
    """statx(2) of ``path`` (symlinks not followed) into the calling thread's buffer."""
    buf = getattr(_tls, "statx", None)
    if buf is None:
        buf = _tls.statx = ctypes.create_string_buffer(_STATX_SIZE)
    if _sys(SYS_STATX, AT_FDCWD, _b(path), AT_SYMLINK_NOFOLLOW, want, buf) < 0:
        _check(-1, "statx", os.fsdecode(path))
    return buf


def _born(mask: int, btime: int, btime_ns: int, ctime: int, ctime_ns: int) -> int:
    return btime * 1_000_000_000 + btime_ns if mask & STATX_BTIME and btime else ctime * 1_000_000_000 + ctime_ns


def mount_id(path: str | bytes) -> MountID:
    """statx(2) for the mount id of ``path`` (unique 64-bit id on 6.8+, else the reusable one)."""
    mask, attrs, ino, attrs_mask, btime, btime_ns, ctime, ctime_ns, mnt_id = _STATX_READ.unpack_from(
        _statx(path, _STATX_WANT))
    if attrs_mask & STATX_ATTR_MOUNT_ROOT:
        root = bool(attrs & STATX_ATTR_MOUNT_ROOT)
    else:
        root = os.path.ismount(path)
    return MountID(mnt_id, bool(mask & STATX_MNT_ID_UNIQUE), root, ino, _born(mask, btime, btime_ns, ctime, ctime_ns))


def unmounted_key(path: str | bytes) -> tuple[int, int, int] | None:
    """Which directory ``path`` is, when nothing is mounted on it: (``ino``, ``born`` as :func:`mount_id`
    names them, its mtime in ns — a stamp its maker may set, see ``Overlay2.build_layer``); None when
    something is mounted there, or the kernel does not say (one statx, nothing built)."""
    mask, attrs, ino, attrs_mask, btime, btime_ns, ctime, ctime_ns, mtime, mtime_ns = _STATX_KEY.unpack_from(
        _statx(path, _KEY_WANT))
    if not attrs_mask & STATX_ATTR_MOUNT_ROOT or attrs & STATX_ATTR_MOUNT_ROOT:
        return None
    return ino, _born(mask, btime, btime_ns, ctime, ctime_ns), mtime * 1_000_000_000 + mtime_ns


class StatMount(NamedTuple):
    """What statmount(2) says of one mount. ``option_blob``: the fs options, each NUL-terminated."""

    mnt_id: int
    fs_type: str
    mount_point: str
    source: str
    read_only: bool
    option_blob: bytes

    @property
    def options(self) -> tuple[str, ...]:
        """The fs options, decoded."""
        return decode_option_blob(self.option_blob)


def decode_option_blob(blob: bytes) -> tuple[str, ...]:
    """statmount's option array (NUL-terminated strings, in order) as strings."""
    return tuple(o.decode(_FS_ENCODING, "surrogateescape") for o in blob.split(b"\0")[:-1])


STATMOUNT_STRINGS = 512  # the fixed part of struct statmount, spares included: strings start here
_SM_MASK = (STATMOUNT_SB_BASIC | STATMOUNT_MNT_BASIC | STATMOUNT_MNT_POINT | STATMOUNT_FS_TYPE
            | STATMOUNT_SB_SOURCE | STATMOUNT_OPT_ARRAY)


_SM_REQ = struct.Struct("=IIQQ")
#: The fields of struct statmount that are read: size, mask, sb_magic, sb_flags, fs_type, mnt_id,
#: mnt_parent_id, mnt_attr, mnt_point, sb_source, opt_num, opt_array (offsets from
#: include/uapi/linux/mount.h).
_SM_READ = struct.Struct("=I4xQ8xQIIQQ8xQ36xI12xIII")

#: The type, by superblock magic, of what a brief statmount asks about (no type name to render and copy).
OVERLAY_MAGIC = 0x794C7630
_MAGIC_TYPES = {OVERLAY_MAGIC: "overlay"}

_SM_BRIEF = STATMOUNT_SB_BASIC | STATMOUNT_MNT_BASIC | STATMOUNT_OPT_ARRAY


class StatMountHead(NamedTuple):
    """The fixed part of struct statmount, the fields read (string fields: offsets into the strings)."""

    size: int
    mask: int
    sb_magic: int
    sb_flags: int
    fs_type: int
    mnt_id: int
    parent_id: int
    mnt_attr: int
    mnt_point: int
    sb_source: int
    opt_num: int
    opt_array: int

    @property
    def read_only(self) -> bool:
        return bool(self.sb_flags & SB_RDONLY or self.mnt_attr & MOUNT_ATTR_RDONLY)


def leads_with(blob: bytes | bytearray, prefix: bytes, key: bytes, start: int = 0, end: int | None = None) -> bool:
    """True when the option array in ``blob[start:end]`` starts with ``prefix`` and, after it, shows
    ``key`` (an option's ``\0name=``) nowhere: the planned options, in the kernel's order, and no more
    of the kind ``key`` names."""
    return blob.startswith(prefix, start, end) and blob.find(key, start + len(prefix) - 1, end) < 0


_SHOWN_WANT = STATX_MNT_ID_UNIQUE | STATX_INO | STATX_CTIME | STATX_BTIME


def shown(path: bytes, magic: int, prefix: bytes, key: bytes, bufsize: int) -> tuple[int, int, int, int] | None:
    """The check right after a mount, at the cost of its two syscalls (statx, then a brief statmount of
    ``bufsize`` bytes, grown if it is short). When the mount whose root is at ``path`` is a read-write
    mount of the filesystem with superblock ``magic`` whose option array :func:`leads_with` ``prefix``
    (and ``key`` nowhere after it): (its mount id, the id of the mount it sits on, and the inode and birth time
    — else ctime — that statx gives for its root); else None (neither yes nor no: look closer). Nothing
    is decoded or built."""
    mask, attrs, ino, attrs_mask, btime, btime_ns, ctime, ctime_ns, mnt_id = _STATX_READ.unpack_from(
        _statx(path, _SHOWN_WANT))
    if not (mask & STATX_MNT_ID_UNIQUE and attrs_mask & attrs & STATX_ATTR_MOUNT_ROOT):
        return None
    data = _statmount_buffer(_SM_REQ.pack(24, 0, mnt_id, _SM_BRIEF), bufsize, mnt_id)[0].data
    size, got, sb_magic, sb_flags, _, got_id, parent_id, attr, _, _, _, opt_array = _SM_READ.unpack_from(data)
    if sb_magic != magic or sb_flags & SB_RDONLY or attr & MOUNT_ATTR_RDONLY or not got & STATMOUNT_OPT_ARRAY \
            or not STATMOUNT_STRINGS <= size <= len(data) \
            or not leads_with(data, prefix, key, STATMOUNT_STRINGS + opt_array, size):
        return None
    return got_id, parent_id, ino, _born(mask, btime, btime_ns, ctime, ctime_ns)


def statmount(mnt_id: int, bufsize: int = 1 << 12, *, brief: bool = False) -> StatMount:
    """statmount(2) of a unique mount id: type, mount point, source, read-only and the fs options.

    ``bufsize`` is a first guess (the kernel allocates as much for its rendering, so a small guess is
    cheaper); on EOVERFLOW the call is repeated with four times the room. ``brief``: type, read-only
    and options only (mount point and source come back empty): what a check after a mount compares;
    a type it does not know by its magic number is asked for by name.
    """
    sbuf, size = _statmount_buffer(_SM_REQ.pack(24, 0, mnt_id, _SM_BRIEF if brief else _SM_MASK),
                                   max(bufsize, STATMOUNT_STRINGS + 512), mnt_id)
    buf = sbuf.data
    head = StatMountHead._make(_SM_READ.unpack_from(buf))
    got, magic, fs_type, mnt_point, sb_source = head.mask, head.sb_magic, head.fs_type, head.mnt_point, head.sb_source
    opt_num, opt_array, got_id, read_only = head.opt_num, head.opt_array, head.mnt_id, head.read_only
    used = head.size if STATMOUNT_STRINGS <= head.size <= size else size  # only what was filled
    if brief and magic not in _MAGIC_TYPES:
        return statmount(mnt_id, bufsize)
    # opt_num NUL-terminated strings from opt_array on, up to the next string the kernel laid out (brief:
    # the option array is the only string asked for, so it runs to the end)
    end = used
    if not brief:
        for flag, off in ((STATMOUNT_FS_TYPE, fs_type), (STATMOUNT_MNT_POINT, mnt_point),
                          (STATMOUNT_SB_SOURCE, sb_source)):
            if got & flag and opt_array < off < end - STATMOUNT_STRINGS:
                end = STATMOUNT_STRINGS + off
    blob = bytes(buf[STATMOUNT_STRINGS + opt_array:end]) if got & STATMOUNT_OPT_ARRAY and opt_num else b""
    if blob.count(b"\0") != opt_num:  # some other layout: keep exactly opt_num strings
        blob = b"".join(p + b"\0" for p in blob.split(b"\0")[:opt_num])
    if brief:
        return StatMount(got_id, _MAGIC_TYPES[magic], "", "", read_only, blob)
    raw = bytes(buf[:used])
    return StatMount(got_id, _sm_string(raw, got & STATMOUNT_FS_TYPE, fs_type),
                     _sm_string(raw, got & STATMOUNT_MNT_POINT, mnt_point),
                     _sm_string(raw, got & STATMOUNT_SB_SOURCE, sb_source), read_only, blob)


def _sm_string(raw: bytes, present: int, off: int) -> str:
    """The NUL-terminated string at ``off`` in statmount's string area ("" when not returned)."""
    if not present:
        return ""
    start = STATMOUNT_STRINGS + off
    return raw[start:raw.index(b"\0", start)].decode(_FS_ENCODING, "surrogateescape")


class _Buffer:
    """Memory read as a bytearray (``data``: slices, ``startswith``, ``find``) and passed to the kernel
    through ctypes (``c``)."""

    __slots__ = ("data", "c")

    def __init__(self, size: int) -> None:
        self.data = bytearray(size)
        self.c = (ctypes.c_char * size).from_buffer(self.data)


def _statmount_buffer(req: bytes, bufsize: int, mnt_id: int) -> tuple[_Buffer, int]:
    """The calling thread's statmount buffer, filled for ``req`` (grown on EOVERFLOW), and the size the
    kernel was given: never more than asked for (a buffer grown for a deep overlay once does not make the
    kernel allocate as much for every later call)."""
    while True:
        buf = getattr(_tls, "statmount", None)
        if buf is None or len(buf.data) < bufsize:
            buf = _tls.statmount = _Buffer(bufsize)
        if _sys(SYS_STATMOUNT, req, buf.c, bufsize, 0) >= 0:
            return buf, bufsize
        if ctypes.get_errno() != 75 or bufsize >= (1 << 24):  # EOVERFLOW: grow, else fail
            _check(-1, f"statmount {mnt_id}")
        bufsize *= 4


def statmount_supported() -> bool:
    """True when statmount(2) answers for the root mount."""
    try:
        mid = mount_id("/")
        return mid.unique and bool(statmount(mid.mnt_id).fs_type)
    except OSError:
        return False
