"""Test helpers: build a tree with every file kind, record a tree's full observable state, extents, btrfs."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import socket
import stat
import struct
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import pytest
from support.loopfs import LoopUnavailable, loop_filesystem

# A valid VFS_CAP_REVISION_2 blob: effective flag, permitted = CAP_NET_BIND_SERVICE (10) | CAP_NET_RAW (13).
CAP_BLOB = struct.pack("<IIIII", 0x02000000 | 0x1, (1 << 10) | (1 << 13), 0, 0, 0)


@dataclass(frozen=True)
class Node:
    """Everything observable about one inode except its number and ctime."""

    kind: str
    mode: int
    uid: int
    gid: int
    size: int
    rdev: int
    nlink: int
    atime_ns: int
    mtime_ns: int
    xattrs: tuple[tuple[str, bytes], ...]
    data: str  # sha256 of a file's content, a symlink's target, or ""


def _kind(mode: int) -> str:
    for name, test in (("dir", stat.S_ISDIR), ("file", stat.S_ISREG), ("symlink", stat.S_ISLNK),
                       ("chr", stat.S_ISCHR), ("blk", stat.S_ISBLK), ("fifo", stat.S_ISFIFO),
                       ("sock", stat.S_ISSOCK)):
        if test(mode):
            return name
    return "?"


def _file_digest(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOATIME | os.O_NOFOLLOW)
    try:
        h = hashlib.sha256()
        while chunk := os.read(fd, 1 << 20):
            h.update(chunk)
        return h.hexdigest()
    finally:
        os.close(fd)


def _node(path: str, st: os.stat_result) -> Node:
    kind = _kind(st.st_mode)
    xattrs = tuple(sorted((n, os.getxattr(path, n, follow_symlinks=False))
                          for n in os.listxattr(path, follow_symlinks=False)))
    data = _file_digest(path) if kind == "file" else ""
    if kind == "symlink":
        data = os.readlink(path)  # readlink touches the link's atime: put it back
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    return Node(kind, st.st_mode, st.st_uid, st.st_gid, st.st_size if kind != "dir" else 0,
                st.st_rdev, st.st_nlink if kind != "dir" else 0, st.st_atime_ns, st.st_mtime_ns, xattrs, data)


def snapshot(top: str) -> tuple[dict[str, Node], set[frozenset[str]]]:
    """Every path's Node, and the hardlink groups (sets of paths sharing an inode, size > 1).

    Directories are read with O_NOATIME, so taking a snapshot does not disturb the atimes it records.
    """
    nodes: dict[str, Node] = {".": _node(top, os.lstat(top))}
    inodes: dict[int, set[str]] = {}
    pending = [""]
    while pending:
        rel = pending.pop()
        fd = os.open(os.path.join(top, rel), os.O_RDONLY | os.O_DIRECTORY | os.O_NOATIME)
        with os.scandir(fd) as it:
            for entry in it:
                r = os.path.join(rel, entry.name) if rel else entry.name
                st = entry.stat(follow_symlinks=False)
                nodes[r] = _node(os.path.join(top, r), st)
                if stat.S_ISDIR(st.st_mode):
                    pending.append(r)
                else:
                    inodes.setdefault(st.st_ino, set()).add(r)
        os.close(fd)
    return nodes, {frozenset(g) for g in inodes.values() if len(g) > 1}


def without_symlink_atime(nodes: dict[str, Node]) -> dict[str, Node]:
    """``nodes`` with symlink atimes zeroed (copying a tree reads its links, which updates their atime)."""
    return {r: replace(n, atime_ns=0) if n.kind == "symlink" else n for r, n in nodes.items()}


def make_socket(path: str) -> None:
    """A unix socket inode at ``path`` (bound, then closed: the inode stays)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(path)
    finally:
        s.close()


def build_rich_tree(top: str) -> None:
    """A tree with every file kind, odd owners, special modes, xattrs, hardlink groups and a sparse file."""
    j = lambda *p: os.path.join(top, *p)  # noqa: E731
    os.makedirs(j("sticky", "deep", "er"))
    os.makedirs(j("etc"))
    with open(j("etc", "passwd"), "w") as f:
        f.write("root:x:0:0::/root:/bin/sh\n")
    with open(j("bin-su"), "wb") as f:
        f.write(b"\x7fELF" + bytes(range(256)) * 40)
    os.chmod(j("bin-su"), 0o4755)
    with open(j("sgid"), "w") as f:
        f.write("sgid")
    os.chown(j("sgid"), 4242, 4343)
    os.chmod(j("sgid"), 0o2711)
    with open(j("odd-owner"), "w") as f:
        f.write("odd")
    os.chown(j("odd-owner"), 3_000_000_000, 65534)
    os.chmod(j("odd-owner"), 0o640)
    with open(j("ping"), "wb") as f:
        f.write(b"ping binary")
    os.chown(j("ping"), 0, 0)
    os.chmod(j("ping"), 0o755)
    os.setxattr(j("ping"), "security.capability", CAP_BLOB)
    with open(j("tagged"), "w") as f:
        f.write("xattrs")
    os.setxattr(j("tagged"), "user.note", b"hello")
    os.setxattr(j("tagged"), "trusted.secret", b"\x00\x01binary\xff")
    os.setxattr(j("sticky"), "trusted.overlay.opaque", b"y")
    open(j("empty"), "w").close()
    with open(j("big"), "wb") as f:
        f.write(os.urandom(3 * 1024 * 1024 + 17))
    with open(j("sparse"), "wb") as f:
        f.truncate(16 * 1024 * 1024)
        f.seek(5 * 1024 * 1024)
        f.write(b"D" * 4096)
    # hardlink groups: one of three names across directories, one of two names
    with open(j("sticky", "h1"), "w") as f:
        f.write("group one")
    os.chown(j("sticky", "h1"), 1001, 1002)
    os.link(j("sticky", "h1"), j("etc", "h1-again"))
    os.link(j("sticky", "h1"), j("sticky", "deep", "er", "h1-third"))
    with open(j("h2"), "w") as f:
        f.write("group two")
    os.link(j("h2"), j("etc", "h2-again"))
    os.symlink("../etc/passwd", j("sticky", "link"))
    os.chown(j("sticky", "link"), 777, 888, follow_symlinks=False)
    os.setxattr(j("sticky", "link"), "trusted.on-link", b"L", follow_symlinks=False)
    os.symlink("/nowhere/dangling", j("dangling"))
    os.mknod(j("null"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(j("blk"), stat.S_IFBLK | 0o660, os.makedev(7, 200))
    os.chown(j("blk"), 0, 6)
    os.mkfifo(j("fifo"), 0o620)
    os.chown(j("fifo"), 5, 7)
    make_socket(j("sock"))
    os.chown(j("sticky", "deep"), 1, 2)
    os.chmod(j("sticky", "deep"), 0o2750)
    os.chown(j("sticky"), 1234, 5678)
    os.chmod(j("sticky"), 0o1705)
    os.chmod(top, 0o705)
    os.chown(top, 10, 20)
    # distinctive nanosecond times, deepest first so later steps do not move them
    stamp = 1_234_567_891_123_456_789
    for i, rel in enumerate(["sticky/deep/er/h1-third", "sticky/deep/er", "sticky/deep", "sticky/link",
                             "dangling", "null", "blk", "fifo", "sock", "big", "sparse", "empty", "ping",
                             "tagged", "odd-owner", "sgid", "bin-su", "h2", "etc/passwd", "etc", "sticky", ""]):
        os.utime(j(rel) if rel else top, ns=(stamp + 7 * i + 3, stamp + 11 * i + 1), follow_symlinks=False)


# -- extents and a real btrfs ----------------------------------------------------------------------

FS_IOC_FIEMAP = 0xC020660B
FIEMAP_FLAG_SYNC = 0x1
FIEMAP_EXTENT_SHARED = 0x2000


def fiemap(path: str) -> list[tuple[int, int, int, int]]:
    """(logical, physical, length, flags) of every extent of ``path`` (FS_IOC_FIEMAP, synced first)."""
    count = 256
    buf = bytearray(struct.pack("=QQIIII", 0, (1 << 64) - 1, FIEMAP_FLAG_SYNC, 0, count, 0) + bytes(56 * count))
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, FS_IOC_FIEMAP, buf)
    finally:
        os.close(fd)
    out = []
    for i in range(struct.unpack_from("=I", buf, 20)[0]):
        logical, physical, length = struct.unpack_from("=QQQ", buf, 32 + 56 * i)
        flags = struct.unpack_from("=I", buf, 32 + 56 * i + 40)[0]
        out.append((logical, physical, length, flags))
    return out


def _btrfs_unavailable() -> str | None:
    """None when mkfs.btrfs and the kernel's btrfs are there (installing btrfs-progs if needed)."""
    if not shutil.which("mkfs.btrfs"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        r = subprocess.run(["apt-get", "install", "-y", "-qq", "btrfs-progs"], capture_output=True, env=env)
        if r.returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env)
            r = subprocess.run(["apt-get", "install", "-y", "-qq", "btrfs-progs"], capture_output=True, env=env)
        if r.returncode != 0 or not shutil.which("mkfs.btrfs"):
            return f"btrfs-progs could not be installed: {r.stderr.decode(errors='replace').strip()[-200:]}"
    with open("/proc/filesystems") as f:
        if "btrfs" not in f.read().split():
            subprocess.run(["modprobe", "btrfs"], capture_output=True)
    with open("/proc/filesystems") as f:
        if "btrfs" not in f.read().split():
            return "the kernel has no btrfs (not in /proc/filesystems, modprobe failed)"
    return None


@contextmanager
def btrfs_loop(work: str, size: int = 512 << 20) -> Iterator[str]:
    """A fresh btrfs on a loop device mounted at ``<work>/mnt``; unmounted and detached after.

    Skips the calling test, with the reason, when btrfs cannot be had here.
    """
    why = _btrfs_unavailable()
    if why:
        pytest.skip(why)
    try:
        with loop_filesystem(work, "btrfs", size) as mnt:
            yield mnt
    except LoopUnavailable as e:
        pytest.skip(str(e))
