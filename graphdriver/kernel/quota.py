"""Project quota (xfs ``prjquota``/``pquota``, ext4 ``prjquota``): the ``size`` storage option.

A layer's directory gets its own project id with the inherit flag (FS_IOC_FSSETXATTR), and the project
a block limit (quotactl Q_SETQUOTA on PRJQUOTA). Everything written below that directory counts against
it; past the limit writes fail with EDQUOT (xfs may say ENOSPC). On ext4 a writer with CAP_SYS_RESOURCE
passes the limit (the VFS quota's ignore_hardlimit); overlayfs writes without it, and Docker's containers
run without it.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import re
import struct

from ..errors import StorageOptUnsupported
from . import mountinfo, probe

_libc = ctypes.CDLL(None, use_errno=True)
_libc.quotactl.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p]

FS_IOC_FSGETXATTR = 0x801C581F
FS_IOC_FSSETXATTR = 0x401C5820
FS_XFLAG_PROJINHERIT = 0x200
_FSXATTR = struct.Struct("=IIIII8x")  # xflags, extsize, nextents, projid, cowextsize

Q_SETQUOTA = 0x800008
Q_GETQUOTA = 0x800007
PRJQUOTA = 2
QIF_BLIMITS = 1
_DQBLK = struct.Struct("=QQQQQQQQI4x")  # bhard, bsoft, curspace, ihard, isoft, curinodes, btime, itime, valid

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "g": 1 << 30,
          "gb": 1 << 30, "t": 1 << 40, "tb": 1 << 40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")


def parse_size(text: str) -> int:
    """``10G``, ``512MB``, ``4096`` -> bytes (binary units, as Docker's storage options)."""
    m = _SIZE.fullmatch(text)
    if not m or m.group(2).lower() not in _UNITS:
        raise StorageOptUnsupported(f"invalid size {text!r}: expected a number with an optional unit (k, m, g, t)")
    value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value <= 0:
        raise StorageOptUnsupported(f"invalid size {text!r}: must be more than zero")
    return value


def _qcmd(cmd: int, qtype: int) -> int:
    return (cmd << 8) | (qtype & 0xFF)


def project_quota_reason(path: str) -> str | None:
    """None when ``path``'s filesystem enforces project quota, else why not (one line)."""
    fs = probe.backing_fs(path)
    entry = _mount_of(path)
    opts = set(entry.options) if entry else set()
    if fs not in ("xfs", "extfs") or not opts & {"prjquota", "pquota"}:
        return (f"project quota is not enabled on the backing filesystem ({fs} at {path}; "
                f"it needs xfs or ext4 mounted with prjquota)")
    try:
        get_project_limit(entry.source, 0)
    except OSError as e:
        return f"quotactl on {entry.source} refused project quota: {e.strerror}"
    return None


def _mount_of(path: str) -> mountinfo.MountEntry | None:
    real = os.path.realpath(path)
    best = None
    for e in mountinfo.read_mountinfo():
        if real == e.mount_point or real.startswith(e.mount_point.rstrip("/") + "/"):
            if best is None or len(e.mount_point) >= len(best.mount_point):
                best = e
    return best


def set_project(directory: str, projid: int) -> None:
    """Give ``directory`` project ``projid``, inherited by everything made below it."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        buf = bytearray(_FSXATTR.size)
        fcntl.ioctl(fd, FS_IOC_FSGETXATTR, buf)
        xflags, extsize, nextents, _old, cow = _FSXATTR.unpack(buf)
        fcntl.ioctl(fd, FS_IOC_FSSETXATTR,
                    _FSXATTR.pack(xflags | FS_XFLAG_PROJINHERIT, extsize, nextents, projid, cow))
    finally:
        os.close(fd)


def set_project_limit(device: str, projid: int, limit_bytes: int) -> None:
    """quotactl(Q_SETQUOTA, PRJQUOTA): a hard and soft block limit for ``projid`` on ``device``."""
    blocks = (limit_bytes + 1023) // 1024  # struct if_dqblk counts 1 KiB blocks
    dq = ctypes.create_string_buffer(_DQBLK.pack(blocks, blocks, 0, 0, 0, 0, 0, 0, QIF_BLIMITS))
    if _libc.quotactl(_qcmd(Q_SETQUOTA, PRJQUOTA), os.fsencode(device), projid, dq) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"quotactl Q_SETQUOTA project {projid}: {os.strerror(err)}", device)


def get_project_limit(device: str, projid: int) -> int:
    """The hard block limit of ``projid`` on ``device``, in bytes (0: none)."""
    dq = ctypes.create_string_buffer(_DQBLK.size)
    if _libc.quotactl(_qcmd(Q_GETQUOTA, PRJQUOTA), os.fsencode(device), projid, dq) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"quotactl Q_GETQUOTA project {projid}: {os.strerror(err)}", device)
    return _DQBLK.unpack(dq.raw)[0] * 1024


def limit_directory(directory: str, projid: int, limit_bytes: int) -> None:
    """Put ``directory`` under a ``limit_bytes`` quota of its own (project ``projid``)."""
    entry = _mount_of(directory)
    if entry is None:
        raise StorageOptUnsupported(f"no mount found for {directory}")
    set_project(directory, projid)
    set_project_limit(entry.source, projid, limit_bytes)
