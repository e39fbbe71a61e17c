"""What this kernel and this backing filesystem support. Probes only read or try; they never change state."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import tempfile
from functools import lru_cache

from . import syscalls

# statfs f_type magic numbers -> the names Docker prints as "Backing Filesystem".
FS_MAGIC = {
    0xEF53: "extfs",
    0x58465342: "xfs",
    0x9123683E: "btrfs",
    0x01021994: "tmpfs",
    0x794C7630: "overlayfs",
    0x61756673: "aufs",
    0x65735546: "fuse",
    0x2FC12FC1: "zfs",
    0x6969: "nfs",
    0xE0F5E1E2: "erofs",
    0x73717368: "squashfs",
    0x858458F6: "ramfs",
    0xF15F: "ecryptfs",
}


class _Statfs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("f_bsize", ctypes.c_long), ("f_blocks", ctypes.c_ulong),
                ("f_bfree", ctypes.c_ulong), ("f_bavail", ctypes.c_ulong), ("f_files", ctypes.c_ulong),
                ("f_ffree", ctypes.c_ulong), ("f_fsid", ctypes.c_int * 2), ("f_namelen", ctypes.c_long),
                ("f_frsize", ctypes.c_long), ("f_flags", ctypes.c_long), ("f_spare", ctypes.c_long * 4)]


_libc = ctypes.CDLL(None, use_errno=True)


def fs_magic(path: str) -> int:
    """statfs(2) f_type of the filesystem holding ``path``."""
    buf = _Statfs()
    if _libc.statfs(os.fsencode(path), ctypes.byref(buf)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return buf.f_type & 0xFFFFFFFF


def backing_fs(path: str) -> str:
    """Docker's name for the filesystem under ``path`` (``extfs``, ``xfs``, ``overlayfs``...)."""
    magic = fs_magic(path)
    return FS_MAGIC.get(magic, f"<unknown {magic:#x}>")


def supports_d_type(path: str) -> bool:
    """True when readdir on ``path``'s filesystem reports file types (overlay needs it). Judged by an
    entry already in ``path`` when it has one (nothing written: a full or read-only store still opens),
    else by a file made for the purpose."""
    known = _dtype_known(path)
    if known is not None:
        return known
    with tempfile.TemporaryDirectory(dir=path, prefix=".dtype-") as d:
        open(os.path.join(d, "f"), "w").close()
        return bool(_dtype_known(d))


def _dtype_known(d: str) -> bool | None:
    """Read the directory with getdents64 and look at the d_type of its first entry other than ``.`` and
    ``..`` (DT_UNKNOWN is 0); None when the first read shows no such entry."""
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        buf = ctypes.create_string_buffer(4096)
        n = _libc.syscall(217 if os.uname().machine == "x86_64" else 61, fd, buf, 4096)
        pos = 0
        while pos < n:
            reclen = int.from_bytes(buf.raw[pos + 16:pos + 18], "little")
            dtype = buf.raw[pos + 18]
            name = buf.raw[pos + 19:pos + reclen].split(b"\0", 1)[0]
            if name not in (b".", b".."):
                return dtype != 0
            pos += reclen
        return None
    finally:
        os.close(fd)


def filesystems() -> set[str]:
    """Filesystem types listed in /proc/filesystems."""
    with open("/proc/filesystems") as f:
        return {line.split()[-1] for line in f if line.strip()}


def has_filesystem(name: str, *, load: bool = True) -> bool:
    """True when ``name`` is in /proc/filesystems, trying ``modprobe name`` first if absent."""
    if name in filesystems():
        return True
    if load and shutil.which("modprobe"):
        subprocess.run(["modprobe", name], capture_output=True, check=False)
        return name in filesystems()
    return False


def kernel_release() -> str:
    """``uname -r``."""
    return os.uname().release


def module_param(module: str, name: str) -> str | None:
    """A kernel module parameter from /sys/module, or None when absent."""
    try:
        with open(f"/sys/module/{module}/parameters/{name}") as f:
            return f.read().strip()
    except OSError:
        return None


@lru_cache(maxsize=1)
def overlay_parses_fsconfig() -> bool:
    """True when the kernel's overlay reads each fsconfig(2) parameter itself (kernel 6.5+, where
    overlayfs has its own filesystem context), so an option it does not take is refused right there.
    Before 6.5 fsopen("overlay") gives the VFS's legacy context, which takes any key or string and only
    joins them into mount(2) data for the superblock to parse at FSCONFIG_CMD_CREATE; told apart by a
    flag no overlay has ever had."""
    if not has_filesystem("overlay"):
        return False
    try:
        fd = syscalls.fsopen("overlay")
    except OSError:
        return False
    try:
        syscalls.fsconfig_flag(fd, "graphdriver-probe-no-such-option")
        return False  # taken: a legacy context, which checks nothing until create
    except OSError:
        return True
    finally:
        os.close(fd)


@lru_cache(maxsize=1)
def overlay_lowerdir_plus() -> bool:
    """True when overlayfs accepts ``lowerdir+`` through fsconfig (kernel 6.8+). A legacy context (before
    6.5) takes the string too, and the superblock refuses it later: no ``lowerdir+`` there."""
    if not overlay_parses_fsconfig():
        return False
    try:
        fd = syscalls.fsopen("overlay")
    except OSError:
        return False
    try:
        with tempfile.TemporaryDirectory(prefix="gd-probe-") as d:
            syscalls.fsconfig_string(fd, "lowerdir+", d)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def overlay_refuses(option: str) -> str | None:
    """Why the kernel's overlay does not take mount option ``option`` (``key`` or ``key=value``), asked
    through a filesystem context that is never mounted; None when it takes it, or when the kernel has
    no new mount API to ask through (the mount itself will tell).

    A kernel whose overlay parses fsconfig parameters (6.5+) answers at the fsconfig, with its message.
    Before that the context is the legacy one (:func:`overlay_parses_fsconfig`): the option is checked
    only when a superblock is made, so one is made (FSCONFIG_CMD_CREATE, never fsmount'ed: attached
    nowhere) over empty lower, upper and work directories in a temporary directory, removed afterwards.
    That overlay says why only in the kernel log; the answer is then the errno's text."""
    key, eq, value = option.partition("=")
    try:
        fd = syscalls.fsopen("overlay")
    except OSError:
        return None
    if not overlay_parses_fsconfig():
        os.close(fd)
        return _legacy_overlay_refuses(key, value if eq else None)
    try:
        if eq:
            syscalls.fsconfig_string(fd, key, value)
        else:
            syscalls.fsconfig_flag(fd, key)
        return None
    except OSError as e:
        said = e.strerror or str(e)  # "fsconfig k=v (e overlay: <the kernel's message>): <errno text>"
        start = said.find("(e overlay: ")
        return said[start + 12:said.index(")", start)] if start >= 0 and ")" in said[start:] else said
    finally:
        os.close(fd)


def _legacy_overlay_refuses(key: str, value: str | None) -> str | None:
    """:func:`overlay_refuses` with a legacy context: a superblock with the option, over throwaway
    directories (the context, and with it the superblock, is closed before they are removed). None when
    it is made, or when the directories cannot be (nothing to ask with)."""
    try:
        d = tempfile.mkdtemp(prefix="gd-probe-")
    except OSError:
        return None
    try:
        fd = syscalls.fsopen("overlay")
    except OSError:
        shutil.rmtree(d, ignore_errors=True)
        return None
    try:
        for name in ("lower", "upper", "work"):
            os.mkdir(os.path.join(d, name))
            syscalls.fsconfig_string(fd, f"{name}dir", os.path.join(d, name))
        if value is None:
            syscalls.fsconfig_flag(fd, key)
        else:
            syscalls.fsconfig_string(fd, key, value)
        try:
            syscalls.fsconfig_create(fd)
        except OSError as e:
            return f"{os.strerror(e.errno)} when a superblock is made with it; this kernel's overlay logs why " \
                   f"only to the kernel log" if e.errno is not None else str(e)
        return None
    except OSError:
        return None
    finally:
        os.close(fd)
        shutil.rmtree(d, ignore_errors=True)


def page_size() -> int:
    """The mount data limit: mount(2) copies at most one page of option data."""
    return os.sysconf("SC_PAGE_SIZE")
