"""A layer whose plan a driver already holds mounts after one raw look at its mount point: what still holds."""

from __future__ import annotations

import os
import shutil

import pytest

from graphdriver import open_driver
from graphdriver.errors import LayerNotFound, MountFailed
from graphdriver.kernel import mountinfo, statcalls, syscalls


def _stack(root: str):
    d = open_driver(root, "overlay2")
    d.create("a")
    d.create("b", "a")
    d.create("c", "a")
    return d


def _learn(d, layer_id: str) -> None:
    """A get and a put: the driver object now holds the layer's plan."""
    d.get(layer_id)
    d.put(layer_id)


def _mounts_at(path: str) -> list[mountinfo.MountEntry]:
    real = os.path.realpath(path)
    return [e for e in mountinfo.read_mountinfo() if e.mount_point == real]


def test_a_known_plan_mounts_without_the_slow_look_and_is_still_verified(root: str, monkeypatch) -> None:
    if not mountinfo.statmount_ok():
        pytest.skip("kernel has no statmount(2) (needs 6.8+): every mount is checked the general way")
    d = _stack(root)
    _learn(d, "b")
    looked: list[str] = []
    real = d.mount_state
    monkeypatch.setattr(d, "mount_state", lambda lid: (looked.append(lid), real(lid))[1])
    path = d.get("b")
    assert looked == [] and d.mount_count("b") == 1
    entry = mountinfo.mount_at(path)
    assert entry is not None and entry.fs_type == "overlay" and entry.mnt_id == mountinfo.current_mount_id(path)
    assert d.verify() == []
    d.put("b")
    assert mountinfo.mount_at(path) is None


def test_a_mount_that_appeared_after_the_plan_was_known_is_refused_and_left_as_it_was(root: str) -> None:
    d = _stack(root)
    _learn(d, "b")
    target = d.mount_point("b")
    syscalls.mount("tmpfs", target, "tmpfs", 0, "size=1m")
    try:
        with pytest.raises(MountFailed, match="foreign mount"):
            d.get("b")
        assert [e.fs_type for e in _mounts_at(target)] == ["tmpfs"]  # nothing stacked on it
        assert d.mount_count("b") == 0
    finally:
        syscalls.umount2(target)
    assert d.get("b") == target and d.verify() == []
    d.put("b")


def test_a_layer_removed_by_hand_after_its_plan_was_known_is_reported_as_not_found(root: str) -> None:
    d = _stack(root)
    _learn(d, "b")
    shutil.rmtree(d.layer_path("b"))
    with pytest.raises(LayerNotFound, match="layer b not found"):
        d.get("b")
    assert _mounts_at(d.mount_point("b")) == []


def test_a_mount_point_made_anew_by_hand_is_planned_again(root: str, monkeypatch) -> None:
    d = _stack(root)
    _learn(d, "b")
    merged = d.mount_point("b")
    os.rmdir(merged)
    os.mkdir(merged)  # another directory under the same name: the cached plan's key no longer matches
    looked: list[str] = []
    real = d.mount_state
    monkeypatch.setattr(d, "mount_state", lambda lid: (looked.append(lid), real(lid))[1])
    path = d.get("b")
    assert looked == ["b"] and mountinfo.mount_at(path).fs_type == "overlay" and d.verify() == []
    d.put("b")


def test_the_check_after_a_mount_reads_the_option_bytes(root: str) -> None:
    if not mountinfo.statmount_ok():
        pytest.skip("kernel has no statmount(2) (needs 6.8+): every mount is checked the general way")
    d = _stack(root)
    path = d.get("b")
    plan = d.plan("b")
    got = mountinfo.shown(path, statcalls.OVERLAY_MAGIC, plan.shown_prefix, plan.shown_key)
    assert got is not None and got[0] == mountinfo.current_mount_id(path)
    other = d.plan("c")  # another layer's options: not a match, and not a "no" either
    assert mountinfo.shown(path, statcalls.OVERLAY_MAGIC, other.shown_prefix, other.shown_key) is None
    assert mountinfo.shown(path, 0x01021994, plan.shown_prefix, plan.shown_key) is None  # tmpfs's magic
    syscalls.mount("", path, "", syscalls.MS_REMOUNT | syscalls.MS_BIND | syscalls.MS_RDONLY)
    assert mountinfo.shown(path, statcalls.OVERLAY_MAGIC, plan.shown_prefix, plan.shown_key) is None  # read-only
    d.put("b")
    assert mountinfo.shown(path, statcalls.OVERLAY_MAGIC, plan.shown_prefix, plan.shown_key) is None  # no mount
    st = os.stat(path)
    assert statcalls.unmounted_key(path) == (st.st_ino, statcalls.mount_id(path).born, st.st_mtime_ns)
