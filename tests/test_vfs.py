"""vfs-specific behaviour: Docker's layout, full-fidelity copies along a chain, no mounts, status, refusal."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator

import pytest
from fstree import (
    CAP_BLOB,
    FIEMAP_EXTENT_SHARED,
    btrfs_loop,
    build_rich_tree,
    fiemap,
    snapshot,
    without_symlink_atime,
)

from graphdriver import open_driver
from graphdriver.drivers.vfs import VfsDriver
from graphdriver.errors import DriverUnsupported
from graphdriver.kernel import mountinfo, syscalls


def test_layout_matches_docker(root: str) -> None:
    d = open_driver(root, "vfs")
    d.create("base")
    d.create("child", "base")
    assert os.path.isdir(os.path.join(root, "vfs", "dir", "base"))
    assert d.get("child") == os.path.join(root, "vfs", "dir", "child")
    assert d.diff_path("child") == d.rootfs_path("child") == os.path.join(root, "vfs", "dir", "child")
    st = os.lstat(d.get("base"))
    assert stat.S_IMODE(st.st_mode) == 0o755 and (st.st_uid, st.st_gid) == (0, 0)
    assert d.metadata("child") == {}
    assert mountinfo.mounts_under(root) == []  # vfs never mounts
    d.put("child")
    d.put("base")
    assert d.mount_count("child") == d.mount_count("base") == 0


def test_child_is_a_faithful_copy_and_independent(root: str) -> None:
    d = open_driver(root, "vfs")
    d.create("base")
    base = d.get("base")
    build_rich_tree(base)
    expected, groups = snapshot(base)
    d.create("mid", "base")
    d.create("top", "mid", rw=True)
    for layer in ("mid", "top"):
        got, got_groups = snapshot(d.get(layer))
        # copying a layer reads its symlinks, and readlink(2) updates a symlink's atime
        assert without_symlink_atime(got) == without_symlink_atime(expected), layer
        assert got_groups == groups
        d.put(layer)
    top = d.get("top")
    assert os.getxattr(os.path.join(top, "ping"), "security.capability") == CAP_BLOB
    with open(os.path.join(top, "etc", "passwd"), "a") as f:
        f.write("changed\n")
    os.unlink(os.path.join(top, "bin-su"))
    assert without_symlink_atime(snapshot(d.get("mid"))[0]) == without_symlink_atime(expected)
    assert os.path.exists(os.path.join(base, "bin-su"))
    for layer in ("top", "mid", "base"):
        d.put(layer)


def test_status_reports_copy_method(root: str) -> None:
    d = open_driver(root, "vfs")
    d.create("a")
    status = dict(d.status())
    assert status["Backing Filesystem"] and not status["Backing Filesystem"].startswith("<unknown")
    assert status["Copy Method"] in ("copy_file_range", "reflink (FICLONE)")
    assert status["Layers"] == "1"


def test_unsupported_on_read_only_root(root: str) -> None:
    assert VfsDriver.unsupported_reason(root) is None
    assert VfsDriver.unsupported_reason(os.path.join(root, "not", "yet", "there")) is None
    ro = tempfile.mkdtemp(dir=root)
    syscalls.mount("tmpfs", ro, "tmpfs", syscalls.MS_RDONLY)
    try:
        why = VfsDriver.unsupported_reason(os.path.join(ro, "store"))
        assert why is not None and "read-only" in why
        with pytest.raises(DriverUnsupported, match="read-only"):
            open_driver(ro, "vfs")
    finally:
        syscalls.umount2(ro)


@pytest.fixture
def btrfs() -> Iterator[str]:
    work = tempfile.mkdtemp(prefix="gd-vfs-btrfs-")
    try:
        with btrfs_loop(work) as mnt:
            yield mnt
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_child_layers_share_extents_on_btrfs(btrfs: str) -> None:
    d = open_driver(os.path.join(btrfs, "store"), "vfs")
    assert dict(d.status())["Backing Filesystem"] == "btrfs"
    assert dict(d.status())["Copy Method"] == "reflink (FICLONE)"
    d.create("base")
    with open(os.path.join(d.get("base"), "blob"), "wb") as f:
        for _ in range(64):
            f.write(os.urandom(1 << 20))
    d.put("base")
    os.sync()
    vfs = os.statvfs(btrfs)
    free = vfs.f_bavail * vfs.f_frsize
    for i in range(8):
        d.create(f"l{i}", f"l{i - 1}" if i else "base")
    os.sync()
    vfs = os.statvfs(btrfs)
    used = free - vfs.f_bavail * vfs.f_frsize
    assert used < 24 << 20, f"8 copies of a 64 MiB layer used {used >> 20} MiB"
    top = os.path.join(d.get("l7"), "blob")
    base = os.path.join(d.diff_path("base"), "blob")
    assert [e[:3] for e in fiemap(top)] == [e[:3] for e in fiemap(base)]
    assert all(e[3] & FIEMAP_EXTENT_SHARED for e in fiemap(top))
    d.put("l7")
