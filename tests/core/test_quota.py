"""The ``size`` storage option: project quota where the filesystem has it, a clear refusal elsewhere."""

from __future__ import annotations

import errno
import os
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from graphdriver import open_driver
from graphdriver.errors import StorageOptUnsupported
from graphdriver.kernel import quota, syscalls


@pytest.mark.parametrize("text,want", [("4096", 4096), ("10k", 10240), ("512MB", 512 << 20), ("1G", 1 << 30),
                                       ("1.5g", 3 << 29), ("2 TB", 2 << 40)])
def test_sizes_parse_like_dockers_storage_options(text: str, want: int) -> None:
    assert quota.parse_size(text) == want


@pytest.mark.parametrize("bad", ["", "-1", "0", "ten", "10Q", "1e9"])
def test_bad_sizes_are_refused(bad: str) -> None:
    with pytest.raises(StorageOptUnsupported, match="invalid size"):
        quota.parse_size(bad)


@pytest.mark.parametrize("name", ["overlay2", "vfs"])
def test_size_without_project_quota_is_refused_and_creates_nothing(root: str, name: str) -> None:
    d = open_driver(root, name)
    with pytest.raises(StorageOptUnsupported, match=r"storage option 'size' needs project quota: .*prjquota"):
        d.create("limited", storage_opt={"size": "10M"})
    with pytest.raises(StorageOptUnsupported, match="unknown storage option 'color'"):
        d.create("limited", storage_opt={"color": "blue"})
    assert d.layers() == [] and not d.exists("limited")


@pytest.fixture
def prjquota_fs() -> Iterator[str]:
    """An ext4 with the quota and project features on a loop device, mounted with prjquota."""
    work = tempfile.mkdtemp(prefix="gd-quota-")
    image, mnt = os.path.join(work, "fs.img"), os.path.join(work, "mnt")
    os.mkdir(mnt)
    with open(image, "wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-O", "quota,project", image], check=True, capture_output=True)
    loop = subprocess.run(["losetup", "--find", "--show", image], capture_output=True, text=True).stdout.strip()
    try:
        try:
            syscalls.mount(loop, mnt, "ext4", 0, "prjquota")
        except OSError as e:
            pytest.skip(f"kernel has no ext4 project quota (mount -o prjquota: {e.strerror}; needs CONFIG_QUOTA "
                        f"and CONFIG_QFMT_V2)")
        try:
            yield mnt
        finally:
            syscalls.umount2(mnt, syscalls.MNT_DETACH)
    finally:
        if loop:
            subprocess.run(["losetup", "-d", loop], check=False)
        subprocess.run(["rm", "-rf", work], check=False)


@pytest.mark.parametrize("name", ["overlay2", "vfs"])
def test_size_limits_what_a_layer_can_hold(prjquota_fs: str, name: str) -> None:
    d = open_driver(os.path.join(prjquota_fs, "root"), name)
    d.create("base")
    d.create("small", "base", rw=True, storage_opt={"size": "1M"})
    path = d.get("small")
    try:
        with pytest.raises(OSError) as e, open(os.path.join(path, "big"), "wb") as f:
            for _ in range(4):
                f.write(b"x" * (1 << 20))
                f.flush()
                os.fsync(f.fileno())
        assert e.value.errno == errno.EDQUOT
    finally:
        d.put("small")
        d.cleanup()
