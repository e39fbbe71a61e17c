"""Reference counts across processes, drift caught by verify(), and cleanup after a simulated crash."""

from __future__ import annotations

import os

import pytest

from graphdriver import Driver
from graphdriver.errors import LayerNotMounted, MountFailed
from graphdriver.kernel import mountinfo, syscalls
from graphdriver.store.files import write_json

from .util import in_other_process, is_mount_root, mounted_somewhere, read, write


def _stack(driver: Driver) -> str:
    """base (file ``a``) <- mid (file ``m``) <- top; returns ``top``."""
    driver.create("base")
    write(os.path.join(driver.get("base"), "a"), "A")
    driver.put("base")
    driver.create("mid", "base")
    write(os.path.join(driver.get("mid"), "m"), "M")
    driver.put("mid")
    driver.create("top", "mid")
    return "top"


def _requires_mount(driver: Driver, layer: str) -> None:
    if not driver.needs_mount(layer):
        pytest.skip(f"{driver.name} does not mount layers: nothing the kernel could drift from")


def test_cross_process_reference_counting(driver: Driver, backend: str, root: str) -> None:
    top = _stack(driver)
    first = in_other_process(root, backend, "get", top)
    second = in_other_process(root, backend, "get", top)
    assert first["path"] == second["path"] == driver.get(top)
    driver.put(top)
    assert (first["count"], second["count"]) == (1, 2)
    assert driver.mount_count(top) == 2
    if driver.needs_mount(top):
        assert first["mnt_id"] is not None and first["mnt_id"] == second["mnt_id"]
        assert mountinfo.current_mount_id(first["path"]) == first["mnt_id"]
        assert len(mountinfo.mounts_under(first["path"])) == 1  # one mount, not two stacked
    third = in_other_process(root, backend, "put", top)
    assert third["count"] == 1 and driver.mount_count(top) == 1
    if driver.needs_mount(top):
        assert mountinfo.current_mount_id(first["path"]) == first["mnt_id"]
    assert sorted(os.listdir(first["path"])) == ["a", "m"]
    fourth = in_other_process(root, backend, "put", top)
    assert fourth["count"] == 0 and driver.mount_count(top) == 0
    assert not mounted_somewhere(driver, top)
    with pytest.raises(LayerNotMounted):
        driver.put(top)


def test_verify_clean_while_mounted(driver: Driver) -> None:
    top = _stack(driver)
    driver.get(top)
    driver.get("mid")
    assert driver.verify() == []
    driver.put(top)
    driver.put("mid")
    assert driver.verify() == []


def test_verify_catches_unmount_behind_its_back(driver: Driver) -> None:
    top = _stack(driver)
    _requires_mount(driver, top)
    path = driver.get(top)
    syscalls.umount2(path, syscalls.MNT_DETACH)
    drift = driver.verify()
    assert [d.layer for d in drift] == [top], drift
    assert "the kernel shows none" in drift[0].problem
    assert driver.mount_count(top) == 0  # the kernel's table is the truth
    # a fresh get mounts again and the drift is gone
    assert driver.get(top) == path and is_mount_root(path)
    assert driver.verify() == []
    driver.put(top)
    assert not is_mount_root(path)


def test_verify_catches_replacement_by_tmpfs(driver: Driver) -> None:
    top = _stack(driver)
    _requires_mount(driver, top)
    path = driver.get(top)
    syscalls.umount2(path, syscalls.MNT_DETACH)
    syscalls.mount("tmpfs", path, "tmpfs", 0, "size=1m")
    drift = driver.verify()
    assert drift and {d.layer for d in drift} == {top}, drift
    text = "; ".join(d.problem for d in drift)
    assert "replaced" in text and "tmpfs" in text
    with pytest.raises(MountFailed, match="foreign mount"):
        driver.get(top)
    driver.cleanup()
    assert driver.verify() == [] and mountinfo.mounts_under(driver.root) == []


def test_verify_catches_replacement_by_another_overlay(driver: Driver) -> None:
    top = _stack(driver)
    _requires_mount(driver, top)
    if driver.name != "overlay2":
        pytest.skip("the hand-made replacement is an overlay mount")
    path = driver.get(top)
    meta = driver.metadata(top)
    syscalls.umount2(path, syscalls.MNT_DETACH)
    # same upper and work dir, but only the base as lower: a plausible-looking, wrong union
    syscalls.mount("overlay", path, "overlay", 0,
                   f"lowerdir={driver.diff_path('base')},upperdir={meta['UpperDir']},workdir={meta['WorkDir']}")
    assert sorted(os.listdir(path)) == ["a"]  # the kernel really shows the wrong union
    drift = driver.verify()
    text = "; ".join(str(d) for d in drift)
    assert {d.layer for d in drift} == {top} and "replaced" in text and "lower layers differ" in text, text
    driver.cleanup()
    assert driver.verify() == []


def test_verify_reports_unexpected_mount(driver: Driver) -> None:
    driver.create("base")
    stray = driver.mount_point("base")
    syscalls.mount("tmpfs", stray, "tmpfs", 0, "size=1m")
    drift = driver.verify()
    assert [(d.layer, d.problem) for d in drift] == [("-", f"unexpected tmpfs mount at {stray}")]
    driver.cleanup()
    assert not is_mount_root(stray) and driver.verify() == []


def test_cleanup_after_simulated_crash(driver: Driver) -> None:
    top = _stack(driver)
    path = driver.get(top)
    # what a crash leaves: a half-built layer in staging, its meta record without a layer dir,
    # a torn temporary meta file, and (overlay2) a short link whose layer never appeared
    stray = os.path.join(driver._staging, "half.deadbeef.create")
    os.makedirs(os.path.join(stray, "diff", "usr"))
    write(os.path.join(stray, "diff", "usr", "junk"), "junk")
    write_json(driver._meta_path("half"), {"parent": "mid", "rw": False, "created": 0})
    write(driver._meta_path("torn") + ".tmp-1-abc", "{")
    dangling = None
    if driver.name == "overlay2":
        dangling = os.path.join(driver.home, "l", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
        os.symlink("../half/diff", dangling)
    assert not driver.exists("half") and "half" not in driver.layers()
    driver.cleanup()
    assert os.listdir(driver._staging) == []
    assert sorted(os.listdir(driver._meta)) == ["base", "mid", "top"]
    if dangling:
        assert not os.path.lexists(dangling)
        links = os.path.join(driver.home, "l")
        assert all(os.path.exists(os.path.join(links, n)) for n in os.listdir(links))
    assert mountinfo.mounts_under(driver.root) == [] and driver.mount_count(top) == 0
    assert driver.layers() == ["base", "mid", "top"]
    # the store is whole: the crashed id can be created, the survivors still work
    driver.create("half", "mid")
    assert driver.get(top) == path and sorted(os.listdir(path)) == ["a", "m"] and read(os.path.join(path, "a")) == "A"
    driver.put(top)
    assert driver.verify() == []
