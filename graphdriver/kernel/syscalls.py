"""Mount syscalls through ctypes: mount(2), umount2(2), the new mount API, unshare(2).

Each wrapper is a few lines and raises ``OSError(errno, message, path)`` on failure. Reading a mount back
(statx, statmount) is :mod:`graphdriver.kernel.statcalls`.
"""

from __future__ import annotations

import ctypes
import os
import sys

_FS_ENCODING = sys.getfilesystemencoding()  # what os.fsencode/os.fsdecode use, with surrogateescape
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
# mount, umount2 and syscall(2) are called without argtypes, which ctypes converts faster (0.8 against
# 1.3 us a call here). Every argument is an int (passed as a C int, sign-extended to the register: every
# MS_* flag is below bit 32, and the kernel reads none above), bytes or None (char *).
_sys = _libc["syscall"]
_sys.restype = ctypes.c_long
try:  # glibc 2.36+ wraps fsconfig(2): one argument fewer to convert, 500 times a mount at most
    _fsconfig = _libc["fsconfig"]
    _fsconfig.restype = ctypes.c_int
except AttributeError:
    def _fsconfig(fd: int, cmd: int, key: bytes | None, value: bytes | None, aux: int) -> int:
        return _sys(SYS_FSCONFIG, fd, cmd, key, value, aux)

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


def _b(s: str | bytes | None) -> bytes | None:
    if type(s) is str:  # the common case, without os.fsencode's checks (same encoding and error handler)
        return s.encode(_FS_ENCODING, "surrogateescape")
    if type(s) is bytes:
        return s
    return None if s is None else os.fsencode(s)


def mount(source: str | bytes, target: str | bytes, fstype: str | bytes | None, flags: int = 0,
          data: str | bytes | None = None) -> None:
    """mount(2). ``data`` goes to the kernel as is (it silently cuts it at one page)."""
    raw = data.encode() if isinstance(data, str) else data
    if _libc.mount(_b(source), _b(target), _b(fstype), flags, raw) < 0:
        _check(-1, "mount", os.fsdecode(target))


def mount_overlay(target: bytes, data: bytes) -> None:
    """mount(2) of an overlay at ``target`` with option ``data``, both bytes already: the get/put path's
    mount, without :func:`mount`'s conversions."""
    if _libc.mount(b"overlay", target, b"overlay", 0, data) < 0:
        _check(-1, "mount", os.fsdecode(target))


def umount2(target: str, flags: int = 0) -> None:
    """umount2(2)."""
    if _libc.umount2(_b(target), flags) < 0:
        _check(-1, "umount2", target)


def fsopen(fstype: str) -> int:
    """fsopen(2): a new filesystem context."""
    return _check(_sys(SYS_FSOPEN, _b(fstype), FSOPEN_CLOEXEC), f"fsopen {fstype}")


def fsconfig_string(fd: int, key: str, value: str) -> None:
    """fsconfig(FSCONFIG_SET_STRING). The kernel takes at most 256 bytes of value."""
    if _sys(SYS_FSCONFIG, fd, FSCONFIG_SET_STRING, _b(key), _b(value) or b"", 0) < 0:
        _check_fc(-1, fd, f"fsconfig {key}={value}", value)


def fsconfig_params(fd: int, params: tuple[tuple[bytes, bytes | str | None], ...]) -> None:
    """fsconfig(2) of each (key, value) in order: bytes by string, None as a flag, a str path by fd."""
    call = _fsconfig
    for key, value in params:
        if type(value) is bytes:
            if call(fd, FSCONFIG_SET_STRING, key, value, 0) < 0:
                _check_fc(-1, fd, f"fsconfig {os.fsdecode(key)}={os.fsdecode(value)}", os.fsdecode(value))
        elif value is None:
            fsconfig_flag(fd, os.fsdecode(key))
        else:
            dfd = os.open(value, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                fsconfig_fd(fd, os.fsdecode(key), dfd)
            finally:
                os.close(dfd)


def fsconfig_flag(fd: int, key: str) -> None:
    """fsconfig(FSCONFIG_SET_FLAG)."""
    _check_fc(_sys(SYS_FSCONFIG, fd, FSCONFIG_SET_FLAG, _b(key), None, 0), fd, f"fsconfig {key}")


def fsconfig_fd(fd: int, key: str, value_fd: int) -> None:
    """fsconfig(FSCONFIG_SET_FD): pass a directory by file descriptor."""
    _check_fc(_sys(SYS_FSCONFIG, fd, FSCONFIG_SET_FD, _b(key), None, value_fd), fd, f"fsconfig {key}=<fd>")


def fsconfig_create(fd: int) -> None:
    """fsconfig(FSCONFIG_CMD_CREATE): make the superblock."""
    if _sys(SYS_FSCONFIG, fd, FSCONFIG_CMD_CREATE, None, None, 0) < 0:
        _check_fc(-1, fd, "fsconfig create")


def fsmount(fd: int, attr_flags: int = 0) -> int:
    """fsmount(2): a detached mount of the context's superblock."""
    return _check_fc(_sys(SYS_FSMOUNT, fd, FSMOUNT_CLOEXEC, attr_flags), fd, "fsmount")


def move_mount(mount_fd: int, target: str) -> None:
    """move_mount(2): attach a detached mount at ``target``."""
    if _sys(SYS_MOVE_MOUNT, mount_fd, b"", AT_FDCWD, _b(target), MOVE_MOUNT_F_EMPTY_PATH) < 0:
        _check(-1, "move_mount", target)


OPEN_TREE_CLONE = 0x1


def open_tree_clone(path: str) -> int:
    """open_tree(2) with OPEN_TREE_CLONE: a descriptor of a detached copy of the mount at ``path``, rooted
    at ``path``, without the mounts below it (not recursive). Close-on-exec."""
    return _check(_sys(SYS_OPEN_TREE, AT_FDCWD, _b(path), OPEN_TREE_CLONE | os.O_CLOEXEC), "open_tree", path)


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


CLONE_FS = 0x00000200


def unshare(flags: int) -> None:
    """unshare(2) for the calling thread."""
    if _libc.unshare(flags) < 0:
        _check(-1, "unshare")


def new_mount_api() -> bool:
    """True when fsopen(2) exists."""
    try:
        os.close(fsopen("tmpfs"))
    except OSError:
        return False
    return True
