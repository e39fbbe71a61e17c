"""A layer mounted again by the driver object that mounted it before (the quick path): the same mount,
the same checks, and everything it cannot confirm handed to the general path."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from test_overlay2 import shown_dirs

from graphdriver import open_driver
from graphdriver.errors import MountBusy
from graphdriver.kernel import mountinfo, statcalls
from graphdriver.kernel.overlay import mount_overlay


@pytest.fixture
def d(root: str):
    if not statcalls.statmount_supported():
        pytest.skip("the kernel has no statmount(2) (6.8+): mounts are checked the general way only")
    drv = open_driver(root, "overlay2")
    drv.create("a")
    drv.create("b", "a")
    drv.create("c")
    drv.get("b")  # mounted, confirmed, and remembered
    drv.put("b")
    return drv


def _overlays_at(path: str) -> list[mountinfo.MountEntry]:
    real = os.path.realpath(path)
    return [e for e in mountinfo.read_mountinfo() if e.mount_point == real]


def test_a_layer_mounted_again_derives_nothing_and_is_verified(d, monkeypatch) -> None:
    for name in ("plan", "mount_state", "mount_layer"):
        monkeypatch.setattr(d, name, lambda *a, name=name: pytest.fail(f"{name} called"))
    monkeypatch.setattr(mountinfo, "read_mountinfo", lambda *a: pytest.fail("mountinfo read"))
    path = d.get("b")
    monkeypatch.undo()
    entry = mountinfo.mount_at(path)
    assert entry is not None and entry.fs_type == "overlay" and not entry.read_only
    assert shown_dirs(d, entry, "lowerdir") == [os.path.realpath(d.diff_path("a"))]
    assert shown_dirs(d, entry, "upperdir") == [os.path.realpath(d.diff_path("b"))]
    assert d.mount_count("b") == 1 and d.refs.read("b").mnt_id == entry.mnt_id and d.verify() == []
    d.put("b")
    assert _overlays_at(path) == [] and d.mount_count("b") == 0


def test_a_mount_the_kernel_shows_otherwise_is_undone_and_left_to_the_general_check(d) -> None:
    quick = d._quick["b"]
    quick.prefix = b"lowerdir=l/NOTTHIS\0"  # what the kernel will not show: as if it took other options
    path = d.get("b")
    assert len(_overlays_at(path)) == 1  # the quick mount undone, the general path's mount in its place
    assert d.mount_count("b") == 1 and d.verify() == []
    assert d._quick["b"] is not quick  # remembered again from the general path's confirmed mount
    d.put("b")
    assert _overlays_at(path) == []


def test_a_layer_made_again_elsewhere_on_another_parent_mounts_its_new_lowers(d, root: str) -> None:
    other = open_driver(root, "overlay2")  # another process, as far as the layout goes
    other.remove("b")
    other.create("b", "c")
    path = d.get("b")
    entry = mountinfo.mount_at(path)
    assert shown_dirs(d, entry, "lowerdir") == [os.path.realpath(d.diff_path("c"))]
    assert d.verify() == [] and other.verify() == []
    d.put("b")
    assert _overlays_at(path) == []


def test_a_busy_mount_is_left_to_the_general_path_which_names_the_holder(d) -> None:
    path = d.get("b")
    holder = subprocess.Popen(["sleep", "60"], cwd=path)
    try:
        with pytest.raises(MountBusy, match=rf"is busy: held by sleep\[{holder.pid}\]"):
            d.put("b")
        assert mountinfo.mount_at(path) is not None and d.mount_count("b") == 1
    finally:
        holder.kill()
        holder.wait()
    d.put("b")
    assert _overlays_at(path) == [] and d.mount_count("b") == 0


def test_counts_from_another_process_are_read_before_mounting(d, root: str) -> None:
    other = open_driver(root, "overlay2")
    path = other.get("b")  # counted in the shared table: this object's quick mount must not stack
    assert d.get("b") == path and len(_overlays_at(path)) == 1 and d.mount_count("b") == 2
    d.put("b")
    assert mountinfo.mount_at(path) is not None  # the other reference still holds it
    other.put("b")
    assert _overlays_at(path) == []


def test_an_upper_dir_made_anew_fails_the_check_and_the_general_path_mounts_it(d) -> None:
    quick = d._quick["b"]
    upper = d.diff_path("b")
    shutil.rmtree(upper)
    os.mkdir(upper)  # another directory where the first mount had its upper dir
    path = d.get("b")
    assert len(_overlays_at(path)) == 1 and d._quick["b"] is not quick  # undone, mounted the general way
    now = statcalls.mount_id(upper)  # ext4 may hand the freed inode number out again: the birth time differs
    assert d._quick["b"].ident[1:] == (now.ino, now.born) != quick.ident[1:]
    entry = mountinfo.mount_at(path)
    assert shown_dirs(d, entry, "upperdir") == [os.path.realpath(upper)] and d.verify() == []
    d.put("b")
    assert _overlays_at(path) == []


def test_a_layer_with_a_lower_index_is_mounted_again_from_it(root: str) -> None:
    if not statcalls.statmount_supported():
        pytest.skip("the kernel has no statmount(2) (6.8+)")
    d = open_driver(root, "overlay2")
    parent = None
    for i in range(160):  # 160 l/ links (~4.3 KB) do not fit one page: the layer mounts from its index
        d.create(f"{i:064x}", parent)
        parent = f"{i:064x}"
    top = parent
    assert d.plan(top).subdir
    path = d.get(top)
    d.put(top)
    assert d._quick[top].plan.subdir == d.plan(top).subdir
    assert d.get(top) == path and len(_overlays_at(path)) == 1 and d.verify() == []
    with open(os.path.join(d.diff_path(f"{0:064x}"), "deep"), "w") as f:
        f.write("from the base")
    with open(os.path.join(path, "deep")) as f:
        assert f.read() == "from the base"  # the base, 159 lowers down, through the index
    d.put(top)
    assert _overlays_at(path) == []


def test_a_count_table_removed_by_hand_is_not_trusted_by_the_quick_put(d, root: str) -> None:
    path = d.get("b")  # counted in the table this object has mapped
    shutil.rmtree(d.refs.dir)  # by hand: no retired mark, the file simply has no name left
    other = open_driver(root, "overlay2")
    assert other.get("b") == path and other.mount_count("b") == 2  # a new table: the mount adopted
    d.put("b")  # must count in the new table, not unmount under the other holder
    assert mountinfo.mount_at(path) is not None and other.mount_count("b") == 1
    other.put("b")
    assert _overlays_at(path) == []


@pytest.mark.parametrize("view", ["true", "false"])
def test_either_spelling_of_the_lowers_is_mounted_again_quickly(root: str, view: str, monkeypatch) -> None:
    if not statcalls.statmount_supported():
        pytest.skip("the kernel has no statmount(2) (6.8+)")
    d = open_driver(root, "overlay2", {"overlay2.layer_view": view})
    d.create("a")
    d.create("b", "a")
    path = d.get("b")
    d.put("b")
    monkeypatch.setattr(d, "mount_layer", lambda *a: pytest.fail("mounted the general way"))
    cwd = os.getcwd()
    assert d.get("b") == path and os.getcwd() == cwd  # relative paths: from the view or by chdir, and back
    monkeypatch.undo()
    entry = mountinfo.mount_at(path)
    assert shown_dirs(d, entry, "lowerdir") == [os.path.realpath(d.diff_path("a"))] and d.verify() == []
    d.put("b")
    assert _overlays_at(path) == []


def test_threads_sharing_one_driver_count_one_mount_between_them(d) -> None:
    import threading

    path = d.mount_point("b")
    stacked: list[int] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(40):
                assert d.get("b") == path
                stacked.append(len(_overlays_at(path)))
                d.put("b")
        except BaseException as e:  # reported below, in the test's own thread
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(stacked) == 160 and set(stacked) == {1}  # mounted while held, never twice
    assert d.mount_count("b") == 0 and _overlays_at(path) == [] and d.verify() == []


def test_an_uncounted_mount_left_at_the_mount_point_is_adopted_not_stacked_on(d) -> None:
    """What a process that died between its mount and its count leaves: the layer's own overlay, counted
    nowhere. A second overlay on the same work dir would empty that dir under the live mount (the kernel
    only warns with index=off): the quick path looks before it mounts and leaves it to the general path."""
    base = d.get("a")
    with open(os.path.join(base, "f"), "w") as f:
        f.write("lower")
    d.put("a")
    mount_overlay(d.plan("b"), d._view)  # as the dead process mounted it
    path = d.mount_point("b")
    left = mountinfo.current_mount_id(path)
    assert d.get("b") == path
    assert len(_overlays_at(path)) == 1 and mountinfo.current_mount_id(path) == left  # adopted, not stacked on
    assert d.mount_count("b") == 2
    with open(os.path.join(path, "f"), "a") as f:  # a copy-up: the live mount's work dir still serves
        f.write(" and upper")
    with open(os.path.join(d.diff_path("b"), "f")) as f:
        assert f.read() == "lower and upper"
    d.put("b")
    assert mountinfo.current_mount_id(path) == left
    d.put("b")
    assert _overlays_at(path) == [] and d.mount_count("b") == 0
