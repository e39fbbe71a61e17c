"""Mount syscalls through ctypes: mount(2), umount2(2), the new mount API, statx and statmount.

Each wrapper is a few lines and raises ``OSError(errno, message, path)`` on failure.
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys
from dataclasses import dataclass

_FS_ENCODING = sys.getfilesystemencoding()  # what os.fsencode/os.fsdecode use, with surrogateescape
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.syscall.restype = ctypes.c_long
# fsconfig(2) with a prototype, for the per-lower loop: no per-call argument wrapping.
_fsconfig = _libc["syscall"]
_fsconfig.restype = ctypes.c_long
_fsconfig.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_uint, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]

# x86_64 / generic syscall numbers (the new mount API shares numbers across architectures).
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_FSOPEN = 430
SYS_FSCONFIG = 431
SYS_FSMOUNT = 432
SYS_STATMOUNT = 457
SYS_STATX = 332 if os.uname().machine == "x86_64" else 291

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8

FSOPEN_CLOEXEC = 0x1
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_SET_FD = 5
FSCONFIG_CMD_CREATE = 6
FSMOUNT_CLOEXEC = 0x1
MOUNT_ATTR_RDONLY = 0x1
MOVE_MOUNT_F_EMPTY_PATH = 0x4
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100

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


def _check(ret: int, what: str, path: str | None = None) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)
    return ret


def _check_fc(ret: int, fd: int, what: str, path: str | None = None) -> int:
    """:func:`_check` for a call on a filesystem context: a failure carries the kernel's messages."""
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}{context_log(fd)}: {os.strerror(err)}", path)
    return ret


def _b(s: str | None) -> bytes | None:
    if type(s) is str:  # the common case, without os.fsencode's checks (same encoding and error handler)
        return s.encode(_FS_ENCODING, "surrogateescape")
    return None if s is None else os.fsencode(s)


def mount(source: str, target: str, fstype: str | None, flags: int = 0, data: str | bytes | None = None) -> None:
    """mount(2). ``data`` goes to the kernel as is (it silently cuts it at one page)."""
    raw = data.encode() if isinstance(data, str) else data
    _check(_libc.mount(_b(source), _b(target), _b(fstype), flags, raw), "mount", target)


def umount2(target: str, flags: int = 0) -> None:
    """umount2(2)."""
    _check(_libc.umount2(_b(target), flags), "umount2", target)


def fsopen(fstype: str) -> int:
    """fsopen(2): a new filesystem context."""
    return _check(_libc.syscall(SYS_FSOPEN, _b(fstype), ctypes.c_uint(FSOPEN_CLOEXEC)), f"fsopen {fstype}")


def fsconfig_string(fd: int, key: str, value: str) -> None:
    """fsconfig(FSCONFIG_SET_STRING). The kernel takes at most 256 bytes of value."""
    ret = _libc.syscall(SYS_FSCONFIG, ctypes.c_int(fd), ctypes.c_uint(FSCONFIG_SET_STRING),
                        _b(key), _b(value), ctypes.c_int(0))
    _check_fc(ret, fd, f"fsconfig {key}={value}", value)


def fsconfig_strings(fd: int, key: str, values: list[bytes]) -> None:
    """fsconfig(FSCONFIG_SET_STRING) of ``key`` once per value, in order (``lowerdir+``)."""
    raw_key = os.fsencode(key)
    for value in values:
        if _fsconfig(SYS_FSCONFIG, fd, FSCONFIG_SET_STRING, raw_key, value, 0) < 0:
            _check_fc(-1, fd, f"fsconfig {key}={os.fsdecode(value)}", os.fsdecode(value))


def fsconfig_flag(fd: int, key: str) -> None:
    """fsconfig(FSCONFIG_SET_FLAG)."""
    ret = _libc.syscall(SYS_FSCONFIG, ctypes.c_int(fd), ctypes.c_uint(FSCONFIG_SET_FLAG),
                        _b(key), None, ctypes.c_int(0))
    _check_fc(ret, fd, f"fsconfig {key}")


def fsconfig_fd(fd: int, key: str, value_fd: int) -> None:
    """fsconfig(FSCONFIG_SET_FD): pass a directory by file descriptor."""
    ret = _libc.syscall(SYS_FSCONFIG, ctypes.c_int(fd), ctypes.c_uint(FSCONFIG_SET_FD),
                        _b(key), None, ctypes.c_int(value_fd))
    _check_fc(ret, fd, f"fsconfig {key}=<fd>")


def fsconfig_create(fd: int) -> None:
    """fsconfig(FSCONFIG_CMD_CREATE): make the superblock."""
    ret = _libc.syscall(SYS_FSCONFIG, ctypes.c_int(fd), ctypes.c_uint(FSCONFIG_CMD_CREATE),
                        None, None, ctypes.c_int(0))
    _check_fc(ret, fd, "fsconfig create")


def fsmount(fd: int, attr_flags: int = 0) -> int:
    """fsmount(2): a detached mount of the context's superblock."""
    ret = _libc.syscall(SYS_FSMOUNT, ctypes.c_int(fd), ctypes.c_uint(FSMOUNT_CLOEXEC), ctypes.c_uint(attr_flags))
    return _check_fc(ret, fd, "fsmount")


def move_mount(mount_fd: int, target: str) -> None:
    """move_mount(2): attach a detached mount at ``target``."""
    ret = _libc.syscall(SYS_MOVE_MOUNT, ctypes.c_int(mount_fd), b"", ctypes.c_int(AT_FDCWD), _b(target),
                        ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH))
    _check(ret, "move_mount", target)


def context_log(fd: int) -> str:
    """Messages the kernel left in a filesystem context (``e overlay: ...``), as ' (msg; msg)'."""
    msgs = []
    for _ in range(16):
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            break
        if not chunk:
            break
        msgs.append(chunk.decode(errors="replace").strip())
    return f" ({'; '.join(msgs)})" if msgs else ""


def new_mount_api() -> bool:
    """True when fsopen(2) exists."""
    try:
        os.close(fsopen("tmpfs"))
    except OSError:
        return False
    return True


class _Statx(ctypes.Structure):
    _fields_ = [("stx_mask", ctypes.c_uint32), ("stx_blksize", ctypes.c_uint32),
                ("stx_attributes", ctypes.c_uint64), ("stx_nlink", ctypes.c_uint32),
                ("stx_uid", ctypes.c_uint32), ("stx_gid", ctypes.c_uint32),
                ("stx_mode", ctypes.c_uint16), ("_pad1", ctypes.c_uint16),
                ("stx_ino", ctypes.c_uint64), ("stx_size", ctypes.c_uint64),
                ("stx_blocks", ctypes.c_uint64), ("stx_attributes_mask", ctypes.c_uint64),
                ("_times", ctypes.c_uint8 * 64), ("stx_rdev_major", ctypes.c_uint32),
                ("stx_rdev_minor", ctypes.c_uint32), ("stx_dev_major", ctypes.c_uint32),
                ("stx_dev_minor", ctypes.c_uint32), ("stx_mnt_id", ctypes.c_uint64),
                ("_spare", ctypes.c_uint8 * 104)]


@dataclass(frozen=True)
class MountID:
    """Which mount a path lives on: the mount id and whether the path is that mount's root."""

    mnt_id: int
    unique: bool
    is_mount_root: bool


def mount_id(path: str) -> MountID:
    """statx(2) for the mount id of ``path`` (unique 64-bit id on 6.8+, else the reusable one)."""
    buf = _Statx()
    ret = _libc.syscall(SYS_STATX, ctypes.c_int(AT_FDCWD), _b(path), ctypes.c_int(AT_SYMLINK_NOFOLLOW),
                        ctypes.c_uint(STATX_MNT_ID_UNIQUE | STATX_MNT_ID), ctypes.byref(buf))
    _check(ret, "statx", path)
    unique = bool(buf.stx_mask & STATX_MNT_ID_UNIQUE)
    root = bool(buf.stx_attributes & STATX_ATTR_MOUNT_ROOT) if buf.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT \
        else os.path.ismount(path)
    return MountID(buf.stx_mnt_id, unique, root)


@dataclass(frozen=True)
class StatMount:
    """What statmount(2) says of one mount."""

    mnt_id: int
    fs_type: str
    mount_point: str
    source: str
    read_only: bool
    options: tuple[str, ...]


# Offsets in struct statmount (include/uapi/linux/mount.h).
_SM_HEAD = struct.Struct("=IIQIIQII QQII QQQQQ II Q II IIII")
_SM_SIZE = 512  # the fixed part, spares included


def statmount(mnt_id: int, bufsize: int = 1 << 16) -> StatMount:
    """statmount(2) of a unique mount id: type, mount point, source, read-only and the fs options."""
    mask = (STATMOUNT_SB_BASIC | STATMOUNT_MNT_BASIC | STATMOUNT_MNT_POINT | STATMOUNT_FS_TYPE
            | STATMOUNT_SB_SOURCE | STATMOUNT_OPT_ARRAY)
    req = struct.pack("=IIQQ", 24, 0, mnt_id, mask)
    while True:
        buf = ctypes.create_string_buffer(bufsize)
        ret = _libc.syscall(SYS_STATMOUNT, ctypes.c_char_p(req), buf, ctypes.c_size_t(bufsize), ctypes.c_uint(0))
        if ret < 0 and ctypes.get_errno() == 75 and bufsize < (1 << 24):  # EOVERFLOW: grow
            bufsize *= 4
            continue
        _check(ret, f"statmount {mnt_id}")
        break
    used = struct.unpack_from("=I", buf, 0)[0]  # the size the kernel filled in, strings included
    raw = ctypes.string_at(buf, used if _SM_SIZE <= used <= bufsize else bufsize)
    f = _SM_HEAD.unpack_from(raw, 0)
    (_size, _mnt_opts, got, _maj, _min, _magic, sb_flags, fs_type, got_id, _parent, _old, _oldp,
     mnt_attr, _prop, _peer, _master, _pfrom, _root, mnt_point, _ns, _subtype, sb_source,
     opt_num, opt_array, _sec_num, _sec_array) = f

    def s(off: int) -> str:
        start = _SM_SIZE + off
        return os.fsdecode(raw[start:raw.index(b"\0", start)])

    opts: list[str] = []
    if got & STATMOUNT_OPT_ARRAY and opt_num:
        fields = raw[_SM_SIZE + opt_array:].split(b"\0", opt_num)[:opt_num]  # NUL-terminated, in order
        opts = [o.decode(_FS_ENCODING, "surrogateescape") for o in fields]
    return StatMount(
        mnt_id=got_id,
        fs_type=s(fs_type) if got & STATMOUNT_FS_TYPE else "",
        mount_point=s(mnt_point) if got & STATMOUNT_MNT_POINT else "",
        source=s(sb_source) if got & STATMOUNT_SB_SOURCE else "",
        read_only=bool(sb_flags & SB_RDONLY) or bool(mnt_attr & MOUNT_ATTR_RDONLY),
        options=tuple(opts),
    )


def statmount_supported() -> bool:
    """True when statmount(2) answers for the root mount."""
    try:
        mid = mount_id("/")
        return mid.unique and bool(statmount(mid.mnt_id).fs_type)
    except OSError:
        return False
