"""One root, however it is reached (a symlink, ``//``), and a root that cannot be written (full, or
remounted read-only): the commands that look, put and free space still work there."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest
from support.fulldisk import fill, small_tmpfs

from graphdriver import chosen_driver
from graphdriver.kernel import mountinfo, syscalls


def gd(root: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "graphdriver", "--root", root, *args], capture_output=True,
                          text=True, timeout=120)


def ok(root: str, *args: str) -> str:
    r = gd(root, *args)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.parametrize("spelling", ["a symlink", "a leading //"])
def test_a_root_reached_another_way_shares_its_counts(tmp_path, spelling: str) -> None:
    """Each spelling kept its own count table: a layer mounted through one was removable through the
    other (its mount left behind in the staging area), and verify saw drift."""
    real = str(tmp_path / "root")
    ok(real, "layer", "create", "base")
    ok(real, "layer", "create", "c", "--parent", "base", "--rw")
    if spelling == "a symlink":
        other = str(tmp_path / "link")
        os.symlink(real, other)
    else:
        other = "/" + real
    try:
        path = ok(other, "layer", "mount", "c").strip()
        assert path == os.path.join(real, "overlay2", "c", "merged")  # the real path, as the kernel shows it
        r = gd(real, "layer", "rm", "c")
        assert r.returncode == 1 and "layer c is mounted" in r.stderr
        assert '"MountCount": 1' in ok(real, "layer", "inspect", "c")
        assert ok(real, "verify").startswith("ok")
        assert ok(other, "layer", "umount", "c").strip() == "c: unmounted"
        assert mountinfo.mount_at(path) is None
    finally:
        ok(real, "cleanup")


def test_a_new_root_whose_path_overlay_cannot_carry_is_judged_by_its_path(tmp_path) -> None:
    """info and chosen_driver judged a root not made yet by the directory it would be made in, and
    named overlay2 where vfs is what gets recorded."""
    root = str(tmp_path / "new,dir" / "gd")
    assert chosen_driver(root) == "vfs"
    assert ok(root, "info").startswith("Driver: vfs")
    ok(root, "layer", "create", "x")
    assert open(os.path.join(root, "driver")).read().strip() == "vfs"


def _exhaust(disk: str) -> list[str]:
    """Fill ``disk``'s blocks and inodes; what was made, to remove for room again."""
    made = [fill(disk)]
    for i in range(100000):
        path = os.path.join(disk, f"inode-{i}")
        try:
            open(path, "w").close()
        except OSError as e:
            assert e.errno == errno.ENOSPC
            break
        made.append(path)
    return made


@pytest.mark.parametrize("how", ["full", "read-only"])
def test_a_root_that_cannot_be_written_still_lists_verifies_and_unmounts(tmp_path, how: str) -> None:
    """Opening a root probed it by writing (the d_type probe's temporary directory, the lock file opened
    for writing): on a full or read-only root every command failed, those that free space included."""
    with small_tmpfs(str(tmp_path / "disk"), size=8 << 20, inodes=400) as disk:
        root = os.path.join(disk, "gd")
        ok(root, "layer", "create", "base")
        ok(root, "layer", "create", "c", "--parent", "base", "--rw")
        ok(root, "layer", "create", "spare")
        path = ok(root, "layer", "mount", "c").strip()
        if how == "full":
            made = _exhaust(disk)
        else:
            syscalls.mount("none", disk, None, syscalls.MS_REMOUNT | syscalls.MS_RDONLY)
        try:
            assert ok(root, "layer", "ls").split()[-3:] == ["spare", "-", "0"]
            assert ok(root, "layer", "exists", "base").strip() == "true"
            assert '"MountCount": 1' in ok(root, "layer", "inspect", "c")
            assert ok(root, "verify").startswith("ok")
            assert ok(root, "info").startswith("Driver: overlay2")
            assert ok(root, "image", "ls").split() == ["REPOSITORY:TAG", "IMAGE", "ID", "LAYERS", "SIZE"]
            assert ok(root, "container", "ls").split()[0] == "CONTAINER"
            assert ok(root, "layer", "umount", "c").strip() == "c: unmounted"
            assert mountinfo.mount_at(path) is None
            if how == "full":  # and room can be made with the tool itself
                assert ok(root, "layer", "rm", "spare").strip() == "spare"
        finally:
            if how == "full":
                for p in made:
                    os.unlink(p)
            else:
                syscalls.mount("none", disk, None, syscalls.MS_REMOUNT)
            gd(root, "cleanup")
