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


def test_records_follow_a_runtime_directory_made_again_by_another_process(root: str) -> None:
    import shutil

    d = open_driver(root, "overlay2")
    d.create("a")
    d.create("b", "a")
    path = d.get("b")  # the store now keeps its directory open
    other = open_driver(root, "overlay2")
    shutil.rmtree(other.refs.dir)  # gone, then made again with a record in it (as by another process)
    other.refs.write("b", other.refs.read("b")._replace(count=1, mnt_id=mountinfo.current_mount_id(path)))
    assert d.mount_count("b") == 1  # read through the new directory, not the removed one
    d.put("b")
    assert mountinfo.mount_at(path) is None
    assert other.mount_count("b") == 0


def test_a_forked_child_takes_the_lock_on_its_own_descriptor(root: str) -> None:
    import time

    d = open_driver(root, "overlay2")
    marker = os.path.join(root, "child-ran")
    with d.lock.held():  # the parent holds it; the child inherits the open descriptor
        pid = os.fork()
        if pid == 0:
            try:
                with d.lock.held():
                    open(marker, "w").close()
            finally:
                os._exit(0)
        time.sleep(0.3)
        assert not os.path.exists(marker)  # the child waits: it does not share the parent's lock
    os.waitpid(pid, 0)
    assert os.path.exists(marker)


def test_put_of_a_recorded_mount_whose_layer_vanished_says_not_mounted(root: str) -> None:
    import shutil

    d = open_driver(root, "overlay2")
    d.create("a")
    d.create("b", "a")
    path = d.get("b")  # the record now names a mount
    syscalls.umount2(path)
    shutil.rmtree(d.layer_path("b"))  # behind the driver's back: no mount point left to unmount
    with pytest.raises(LayerNotMounted, match="layer b is not mounted"):
        d.put("b")
    assert d.refs.read("b").count == 0
