"""The full-fidelity copier behind vfs, on the real filesystem (ext4 under /tmp) and on a btrfs loop device."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator

import pytest
from fstree import CAP_BLOB, FIEMAP_EXTENT_SHARED, btrfs_loop, build_rich_tree, fiemap, make_socket, snapshot

from graphdriver import fscopy
from graphdriver.errors import CopyFailed

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: chown, mknod, trusted.* xattrs")


@pytest.fixture
def work() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="gd-fscopy-")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _copy_and_compare(src: str, dst: str, **kw: object) -> fscopy.CopyStats:
    before, groups = snapshot(src)
    stats = fscopy.copy_tree(src, dst, **kw)  # type: ignore[arg-type]
    after, dst_groups = snapshot(dst)
    assert set(after) == set(before)
    for rel in before:
        assert after[rel] == before[rel], rel
    assert dst_groups == groups
    return stats


def test_every_kind_owner_mode_xattr_and_time_survive(work: str) -> None:
    src, dst = os.path.join(work, "src"), os.path.join(work, "dst")
    os.mkdir(src)
    build_rich_tree(src)
    stats = _copy_and_compare(src, dst)
    assert (stats.devices, stats.fifos, stats.sockets, stats.symlinks) == (2, 1, 1, 2)
    assert stats.hardlinks == 3  # two extra names of h1, one of h2
    assert stats.dirs == 4
    assert stats.reflinked == 0 and stats.ranged + stats.plain == stats.files - 1  # "empty" moves no data


def test_special_bits_survive_chown(work: str) -> None:
    """chown clears setuid/setgid and security.capability: the copier must set them afterwards."""
    src, dst = os.path.join(work, "src"), os.path.join(work, "dst")
    os.mkdir(src)
    build_rich_tree(src)
    fscopy.copy_tree(src, dst)
    assert stat.S_IMODE(os.lstat(os.path.join(dst, "bin-su")).st_mode) == 0o4755
    assert stat.S_IMODE(os.lstat(os.path.join(dst, "sgid")).st_mode) == 0o2711
    st = os.lstat(os.path.join(dst, "sgid"))
    assert (st.st_uid, st.st_gid) == (4242, 4343)
    assert os.getxattr(os.path.join(dst, "ping"), "security.capability") == CAP_BLOB
    top = os.lstat(os.path.join(dst, "sticky"))
    assert stat.S_IMODE(top.st_mode) == 0o1705 and (top.st_uid, top.st_gid) == (1234, 5678)
    assert stat.S_IMODE(os.lstat(dst).st_mode) == 0o705
    odd = os.lstat(os.path.join(dst, "odd-owner"))
    assert (odd.st_uid, odd.st_gid) == (3_000_000_000, 65534)


def test_hardlinks_stay_links_inside_the_copy(work: str) -> None:
    src, dst = os.path.join(work, "src"), os.path.join(work, "dst")
    os.mkdir(src)
    build_rich_tree(src)
    fscopy.copy_tree(src, dst)
    names = [os.path.join(dst, p) for p in ("sticky/h1", "etc/h1-again", "sticky/deep/er/h1-third")]
    inos = {os.lstat(n).st_ino for n in names}
    assert len(inos) == 1 and os.lstat(names[0]).st_nlink == 3
    assert inos.isdisjoint({os.lstat(os.path.join(src, "sticky/h1")).st_ino})
    with open(names[1], "a") as f:
        f.write(" changed")
    with open(names[2]) as f:
        assert f.read() == "group one changed"
    with open(os.path.join(src, "sticky/h1")) as f:
        assert f.read() == "group one"


def test_sparse_file_stays_sparse(work: str) -> None:
    src, dst = os.path.join(work, "src"), os.path.join(work, "dst")
    os.mkdir(src)
    build_rich_tree(src)
    fscopy.copy_tree(src, dst)
    st = os.lstat(os.path.join(dst, "sparse"))
    assert st.st_size == 16 * 1024 * 1024
    assert st.st_blocks * 512 <= 64 * 1024, f"sparse copy allocates {st.st_blocks * 512} bytes"
    with open(os.path.join(dst, "sparse"), "rb") as f:
        f.seek(5 * 1024 * 1024)
        assert f.read(4096) == b"D" * 4096
        f.seek(0)
        assert f.read(4096) == b"\0" * 4096


def test_sockets_can_be_skipped(work: str) -> None:
    src, dst = os.path.join(work, "src"), os.path.join(work, "dst")
    os.mkdir(src)
    make_socket(os.path.join(src, "s"))
    with open(os.path.join(src, "f"), "w") as f:
        f.write("x")
    stats = fscopy.copy_tree(src, dst, sockets="skip")
    assert sorted(os.listdir(dst)) == ["f"] and stats.skipped == 1 and stats.sockets == 0


def test_source_is_not_changed_and_atime_untouched(work: str) -> None:
    src, dst = os.path.join(work, "src"), os.path.join(work, "dst")
    os.mkdir(src)
    build_rich_tree(src)
    before = snapshot(src)[0]
    fscopy.copy_tree(src, dst)
    after = snapshot(src)[0]
    # readlink(2) itself updates a symlink's atime; everything else must be exactly as it was
    assert {r: n for r, n in after.items() if n.kind != "symlink"} == \
        {r: n for r, n in before.items() if n.kind != "symlink"}
    for r, n in before.items():
        if n.kind == "symlink":
            assert after[r].data == n.data and after[r].mtime_ns == n.mtime_ns


def test_refuses_non_directory_and_names_the_clash(work: str) -> None:
    f = os.path.join(work, "file")
    open(f, "w").close()
    with pytest.raises(CopyFailed, match="not a directory"):
        fscopy.copy_tree(f, os.path.join(work, "x"))
    src, dst = os.path.join(work, "src"), os.path.join(work, "dst")
    os.makedirs(os.path.join(src, "d"))
    os.makedirs(os.path.join(dst, "d"))
    with pytest.raises(CopyFailed, match=r"src/d .*dst/d"):
        fscopy.copy_tree(src, dst)


def test_plain_fallback_without_copy_file_range(work: str) -> None:
    """Force the read/write path (as on a filesystem pair that refuses copy_file_range)."""
    src = os.path.join(work, "src")
    os.mkdir(src)
    build_rich_tree(src)
    copier = fscopy._TreeCopier(reflink=False, sockets="keep")
    dev = os.lstat(work).st_dev
    copier.data.no_range.add((dev, dev))
    before = snapshot(src)[0]
    stats = copier.run(src, os.path.join(work, "dst"))
    assert stats.ranged == 0 and stats.plain == stats.files - 1
    assert snapshot(os.path.join(work, "dst"))[0] == before


# -- reflink on a real btrfs ------------------------------------------------------------------------

@pytest.fixture
def btrfs(work: str) -> Iterator[str]:
    with btrfs_loop(work) as mnt:
        yield mnt


def test_reflink_on_btrfs_shares_extents(btrfs: str) -> None:
    src, dst = os.path.join(btrfs, "src"), os.path.join(btrfs, "dst")
    os.mkdir(src)
    size = 96 * 1024 * 1024
    with open(os.path.join(src, "large"), "wb") as f:
        for _ in range(size // (1 << 20)):
            f.write(os.urandom(1 << 20))
        os.fsync(f.fileno())
    build_rich_tree(os.path.join(src, "tree"))
    assert fscopy.reflink_supported(btrfs)
    os.sync()
    free_before = os.statvfs(btrfs).f_bavail * os.statvfs(btrfs).f_frsize
    stats = _copy_and_compare(src, dst)
    os.sync()
    free_after = os.statvfs(btrfs).f_bavail * os.statvfs(btrfs).f_frsize
    assert stats.reflinked == stats.files - 1  # every non-empty file cloned
    a, b = fiemap(os.path.join(src, "large")), fiemap(os.path.join(dst, "large"))
    assert a and [(lo, ph, ln) for lo, ph, ln, _ in a] == [(lo, ph, ln) for lo, ph, ln, _ in b]
    assert all(fl & FIEMAP_EXTENT_SHARED for *_, fl in b), "extents of the copy are not marked shared"
    out = subprocess.run(["filefrag", "-v", os.path.join(dst, "large")], capture_output=True, text=True).stdout
    assert "shared" in out
    assert free_before - free_after < 16 * 1024 * 1024, f"copy used {(free_before - free_after) >> 20} MiB"


def test_no_reflink_on_ext4(work: str) -> None:
    if subprocess.run(["stat", "-f", "-c", "%T", work], capture_output=True, text=True).stdout.strip() != "ext2/ext3":
        pytest.skip("this check is for an ext4 /tmp")
    assert not fscopy.reflink_supported(work)
    src = os.path.join(work, "src")
    os.mkdir(src)
    with open(os.path.join(src, "f"), "wb") as f:
        f.write(b"x" * 10000)
    stats = fscopy.copy_tree(src, os.path.join(work, "dst"))
    assert stats.reflinked == 0 and stats.ranged == 1
    assert not any(fl & FIEMAP_EXTENT_SHARED for *_, fl in fiemap(os.path.join(work, "dst", "f")))
