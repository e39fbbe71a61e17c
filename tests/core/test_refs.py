"""Reference counts: the kernel's mount table and the boot id are the truth, not the count file."""

from __future__ import annotations

import os

import pytest

from graphdriver import open_driver
from graphdriver.errors import LayerNotMounted
from graphdriver.kernel import mountinfo, syscalls


def test_a_count_from_an_earlier_boot_reads_as_zero(root: str) -> None:
    d = open_driver(root, "overlay2")
    d.create("base")
    assert d.get("base") == d.diff_path("base")  # a base layer needs no mount
    assert d.mount_count("base") == 1
    ref = d.refs.path("base")
    count, mnt, _boot = open(ref).read().split()
    with open(ref, "w") as f:
        f.write(f"{count} {mnt} 00000000-0000-0000-0000-000000000000\n")
    assert d.mount_count("base") == 0
    with pytest.raises(LayerNotMounted):
        d.put("base")


def test_a_count_whose_mount_is_gone_reads_as_zero_and_remount_works(root: str) -> None:
    d = open_driver(root, "overlay2")
    d.create("a")
    d.create("b", "a")
    path = d.get("b")
    d.get("b")
    syscalls.umount2(path)  # as after a reboot or a manual umount
    assert d.mount_count("b") == 0
    with pytest.raises(LayerNotMounted, match="layer b is not mounted"):
        d.put("b")
    assert d.get("b") == path
    assert d.mount_count("b") == 1
    d.put("b")
    assert mountinfo.mount_at(path) is None


def test_a_matching_mount_made_elsewhere_is_adopted(root: str) -> None:
    d = open_driver(root, "overlay2")
    d.create("a")
    d.create("b", "a")
    path = d.get("b")
    os.unlink(d.refs.path("b"))  # the count is lost, the mount is not
    assert d.get("b") == path
    assert d.mount_count("b") == 2
    d.put("b")
    d.put("b")
    assert mountinfo.mount_at(path) is None


def test_a_foreign_mount_at_the_mount_point_is_refused(root: str) -> None:
    d = open_driver(root, "overlay2")
    d.create("a")
    d.create("b", "a")
    target = d.mount_point("b")
    syscalls.mount("tmpfs", target, "tmpfs", 0, "size=1m")
    try:
        with pytest.raises(Exception, match="foreign mount"):
            d.get("b")
        assert [str(x) for x in d.verify()] == [f"-: unexpected tmpfs mount at {target}"]
    finally:
        syscalls.umount2(target)
