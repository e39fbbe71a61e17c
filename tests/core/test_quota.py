"""The ``size`` storage option: project quota where the filesystem has it, a clear refusal elsewhere."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

import pytest
from support.loopfs import LoopUnavailable, loop_filesystem

from graphdriver import open_driver
from graphdriver.errors import StorageOptUnsupported
from graphdriver.kernel import probe, quota


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


#: Filesystems with project quota: (fstype, size, mkfs arguments, what a kernel without it lacks).
PRJQUOTA_FS = {
    "ext4": (64 << 20, ("-O", "quota,project"), "CONFIG_QUOTA and CONFIG_QFMT_V2"),
    "xfs": (320 << 20, (), "CONFIG_XFS_QUOTA"),  # mkfs.xfs makes nothing under 300 MiB
}


@pytest.fixture(params=sorted(PRJQUOTA_FS))
def prjquota_fs(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh ext4 (quota and project features) or xfs on a loop device, mounted with prjquota."""
    fstype = request.param
    size, mkfs_args, config = PRJQUOTA_FS[fstype]
    if shutil.which(f"mkfs.{fstype}") is None:
        pytest.skip(f"mkfs.{fstype} is not installed (ci/setup installs it)")
    work = tempfile.mkdtemp(prefix="gd-quota-")
    try:
        with loop_filesystem(work, fstype, size, mkfs_args=mkfs_args, options="prjquota") as mnt:
            yield mnt
    except LoopUnavailable as e:
        pytest.skip(str(e))
    except OSError as e:
        pytest.skip(f"kernel has no {fstype} project quota (mount -o prjquota: {e.strerror}; needs {config})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.parametrize("name", ["overlay2", "vfs"])
def test_size_limits_what_a_layer_can_hold(prjquota_fs: str, name: str) -> None:
    d = open_driver(os.path.join(prjquota_fs, "root"), name)
    d.create("base")
    d.create("small", "base", rw=True, storage_opt={"size": "1M"})
    _fills_at_its_limit(d, "small")


def _fills_at_its_limit(d, layer_id: str) -> None:
    """Writing 4 MiB into the mounted layer fails at the limit, written as a container writes: without
    CAP_SYS_RESOURCE (Docker drops it), with which ext4's quota lets a write past a hard limit (the VFS's
    ignore_hardlimit; overlayfs drops it from its own credentials, xfs never asks). EDQUOT; xfs may say
    ENOSPC for a project's limit (6.1 does, through overlayfs)."""
    path = d.get(layer_id)
    try:
        r = subprocess.run(["setpriv", "--bounding-set", "-sys_resource", "dd", "if=/dev/zero",
                            f"of={os.path.join(path, 'big')}", "bs=1M", "count=4", "conv=fsync"],
                           capture_output=True, text=True)
        xfs = probe.backing_fs(d.home) == "xfs"
        said = (os.strerror(errno.EDQUOT), os.strerror(errno.ENOSPC)) if xfs else (os.strerror(errno.EDQUOT),)
        assert r.returncode != 0 and any(s in r.stderr for s in said), r.stderr
    finally:
        d.put(layer_id)
        d.cleanup()


def test_the_overlay2_size_driver_option_limits_each_container_layer(prjquota_fs: str) -> None:
    """dockerd's ``overlay2.size``: the size of every container layer whose own storage options name none;
    image layers are not limited."""
    d = open_driver(os.path.join(prjquota_fs, "root"), "overlay2", {"overlay2.size": "1M"})
    d.create("base")
    with open(os.path.join(d.diff_path("base"), "image-file"), "wb") as f:
        f.write(b"x" * (3 << 20))  # an image layer holds what it is given
    d.create("ctr", "base", rw=True)
    _fills_at_its_limit(d, "ctr")
