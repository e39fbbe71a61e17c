"""Layer life cycle through the public API, checked on the real filesystem (Docker graphtest style)."""

from __future__ import annotations

import os
import stat
import time

import pytest

from graphdriver import Driver, open_driver
from graphdriver.errors import LayerInUse, LayerNotFound, LayerNotMounted

from .util import is_mount_root, layer_id, mounted_somewhere, read, write


def test_create_empty(driver: Driver) -> None:
    driver.create("empty")
    assert driver.exists("empty") and driver.layers() == ["empty"]
    assert driver.parent("empty") is None and driver.ancestors("empty") == []
    path = driver.get("empty")
    assert os.path.isdir(path) and os.listdir(path) == []
    assert driver.mount_count("empty") == 1
    driver.put("empty")
    assert driver.mount_count("empty") == 0
    assert not mounted_somewhere(driver, "empty")


def _populate_base(path: str) -> None:
    os.mkdir(os.path.join(path, "sticky"))
    os.chmod(os.path.join(path, "sticky"), 0o705 | stat.S_ISVTX)
    write(os.path.join(path, "setuid"), "suid", 0o4755)
    write(os.path.join(path, "owned"), "owned", 0o640)
    os.chown(os.path.join(path, "owned"), 1234, 5678)
    os.mkdir(os.path.join(path, "owned-dir"), 0o750)
    os.chown(os.path.join(path, "owned-dir"), 4242, 4343)
    write(os.path.join(path, "sticky", "inner"), "inner", 0o600)


def _check_base(path: str) -> None:
    assert sorted(os.listdir(path)) == ["owned", "owned-dir", "setuid", "sticky"]
    st = os.lstat(os.path.join(path, "sticky"))
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o1705
    st = os.lstat(os.path.join(path, "setuid"))
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o4755
    st = os.lstat(os.path.join(path, "owned"))
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o640)
    st = os.lstat(os.path.join(path, "owned-dir"))
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (4242, 4343, 0o750)
    assert read(os.path.join(path, "sticky", "inner")) == "inner"
    assert read(os.path.join(path, "setuid")) == "suid"


def test_base_layer_modes_and_owners(driver: Driver) -> None:
    driver.create("base")
    _populate_base(driver.get("base"))
    driver.put("base")
    path = driver.get("base")
    _check_base(path)
    driver.put("base")
    # and identically through a child, which must mount (or copy) the base
    driver.create("child", "base")
    child = driver.get("child")
    _check_base(child)
    assert mounted_somewhere(driver, "child") == driver.needs_mount("child")
    driver.put("child")


def test_child_sees_parent_and_own_files(driver: Driver) -> None:
    driver.create("base")
    write(os.path.join(driver.get("base"), "a"), "from base")
    driver.put("base")
    driver.create("child", "base")
    path = driver.get("child")
    write(os.path.join(path, "b"), "from child")
    assert sorted(os.listdir(path)) == ["a", "b"]
    assert read(os.path.join(path, "a")) == "from base"
    driver.put("child")
    assert not mounted_somewhere(driver, "child")
    path = driver.get("child")  # again, from disk
    assert sorted(os.listdir(path)) == ["a", "b"] and read(os.path.join(path, "b")) == "from child"
    driver.put("child")
    assert os.listdir(driver.get("base")) == ["a"]
    driver.put("base")
    assert os.listdir(driver.diff_path("base")) == ["a"]


def test_write_in_child_does_not_change_parent(driver: Driver) -> None:
    driver.create("base")
    base = driver.get("base")
    write(os.path.join(base, "keep"), "original", 0o644)
    write(os.path.join(base, "doomed"), "doomed")
    os.mkdir(os.path.join(base, "d"))
    driver.put("base")
    driver.create("child", "base")
    child = driver.get("child")
    write(os.path.join(child, "keep"), "changed in child")
    os.chmod(os.path.join(child, "keep"), 0o600)
    os.unlink(os.path.join(child, "doomed"))
    os.rmdir(os.path.join(child, "d"))
    assert sorted(os.listdir(child)) == ["keep"]
    driver.put("child")
    base = driver.get("base")
    assert sorted(os.listdir(base)) == ["d", "doomed", "keep"]
    assert read(os.path.join(base, "keep")) == "original"
    assert stat.S_IMODE(os.lstat(os.path.join(base, "keep")).st_mode) == 0o644
    driver.put("base")
    child = driver.get("child")
    assert sorted(os.listdir(child)) == ["keep"] and read(os.path.join(child, "keep")) == "changed in child"
    driver.put("child")


def test_rw_layer_on_top(driver: Driver) -> None:
    driver.create("img1")
    write(os.path.join(driver.get("img1"), "one"), "1")
    driver.put("img1")
    driver.create("img2", "img1")
    write(os.path.join(driver.get("img2"), "two"), "2")
    driver.put("img2")
    driver.create("ctr", "img2", rw=True)
    assert driver.is_rw("ctr") and not driver.is_rw("img2")
    path = driver.get("ctr")
    assert sorted(os.listdir(path)) == ["one", "two"]
    write(os.path.join(path, "three"), "3")
    os.unlink(os.path.join(path, "one"))
    assert sorted(os.listdir(path)) == ["three", "two"]
    driver.put("ctr")
    assert driver.ancestors("ctr") == ["img2", "img1"]
    assert sorted(os.listdir(driver.get("img2"))) == ["one", "two"]
    driver.put("img2")


def _deep_chain(driver: Driver, depth: int) -> tuple[list[str], float]:
    ids = [layer_id(i) for i in range(depth + 1)]
    driver.create(ids[0])
    base = driver.get(ids[0])
    write(os.path.join(base, "deep-file"), "from the bottom", 0o640)
    os.chown(os.path.join(base, "deep-file"), 77, 88)
    driver.put(ids[0])
    started = time.monotonic()
    for parent, child in zip(ids, ids[1:], strict=False):
        driver.create(child, parent)
    return ids, time.monotonic() - started


def _read_through(driver: Driver, ids: list[str]) -> None:
    top = ids[-1]
    assert len(driver.ancestors(top)) == len(ids) - 1
    path = driver.get(top)
    try:
        assert read(os.path.join(path, "deep-file")) == "from the bottom"
        st = os.lstat(os.path.join(path, "deep-file"))
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (77, 88, 0o640)
        write(os.path.join(path, "on-top"), "top")
        assert sorted(os.listdir(path)) == ["deep-file", "on-top"]
        if driver.needs_mount(top):
            assert is_mount_root(path)
    finally:
        driver.put(top)
    assert not mounted_somewhere(driver, top)
    assert os.listdir(driver.diff_path(ids[0])) == ["deep-file"]


@pytest.mark.deep
def test_deep_read_through_128_layers(driver: Driver) -> None:
    # aufs: one branch per layer, and the module's default branch limit is 127 (CONFIG_AUFS_BRANCH_MAX_127).
    ids, _ = _deep_chain(driver, 127 if driver.name == "aufs" else 128)
    _read_through(driver, ids)


@pytest.mark.deep
def test_deep_read_through_500_layers(driver: Driver) -> None:
    if driver.name != "overlay2":
        pytest.skip(f"500 lower layers is overlay2's promise (the kernel's limit); {driver.name} runs 128")
    ids, took = _deep_chain(driver, 500)
    assert took < 30, f"creating 500 layers took {took:.1f}s"
    _read_through(driver, ids)
    lowers = driver.metadata(ids[-1])["LowerDir"].split(":")
    assert lowers == [driver.diff_path(i) for i in reversed(ids[:-1])]


def test_remove_and_refusals(driver: Driver) -> None:
    driver.create("base")
    driver.create("kid1", "base")
    driver.create("kid2", "base")
    with pytest.raises(LayerInUse, match=r"base has children: kid1, kid2"):
        driver.remove("base")
    driver.get("kid1")
    with pytest.raises(LayerInUse, match="kid1 is mounted"):
        driver.remove("kid1")
    assert driver.exists("kid1") and driver.exists("base")
    driver.put("kid1")
    driver.remove("kid1")
    assert not driver.exists("kid1") and not os.path.exists(driver.layer_path("kid1"))
    driver.remove("kid2")
    driver.remove("base")
    assert driver.layers() == []
    with pytest.raises(LayerNotFound):
        driver.remove("base")
    # nothing left behind but the store's own bookkeeping
    assert os.listdir(driver._staging) == [] and os.listdir(driver._meta) == []


def test_exists_layers_parent_ancestors(driver: Driver) -> None:
    assert driver.layers() == [] and not driver.exists("a")
    driver.create("a")
    driver.create("b", "a")
    driver.create("c", "b")
    driver.create("x", "a")
    assert driver.layers() == ["a", "b", "c", "x"]
    assert all(driver.exists(i) for i in "abcx") and not driver.exists("d")
    assert driver.parent("a") is None and driver.parent("c") == "b"
    assert driver.ancestors("c") == ["b", "a"] and driver.ancestors("x") == ["a"]
    assert sorted(driver.children("a")) == ["b", "x"]
    with pytest.raises(LayerNotFound):
        driver.parent("nope")
    # a second driver on the same root sees the same store
    again = open_driver(driver.root, driver.name)
    assert again.layers() == ["a", "b", "c", "x"] and again.ancestors("c") == ["b", "a"]


def test_get_twice_put_twice(driver: Driver) -> None:
    driver.create("base")
    driver.create("top", "base")
    p1 = driver.get("top")
    p2 = driver.get("top")
    assert p1 == p2 and driver.mount_count("top") == 2
    mounts = driver.needs_mount("top")
    if mounts:
        assert is_mount_root(p1)
    driver.put("top")
    assert driver.mount_count("top") == 1
    assert is_mount_root(p1) == mounts
    driver.put("top")
    assert driver.mount_count("top") == 0 and not mounted_somewhere(driver, "top")
    with pytest.raises(LayerNotMounted):
        driver.put("top")


def test_put_unmounted_raises(driver: Driver) -> None:
    driver.create("base")
    driver.create("top", "base")
    for layer in ("base", "top"):
        with pytest.raises(LayerNotMounted, match=f"{layer} is not mounted"):
            driver.put(layer)
        assert driver.mount_count(layer) == 0


def test_metadata_keys(driver: Driver) -> None:
    driver.create("base")
    driver.create("mid", "base")
    driver.create("top", "mid", rw=True)
    meta = driver.metadata("top")
    if driver.name in ("vfs", "aufs"):
        assert meta == {} and driver.metadata("base") == {}  # Docker's vfs and aufs have no GraphDriver data
    elif driver.name == "overlay2":
        assert set(meta) == {"LowerDir", "UpperDir", "WorkDir", "MergedDir"}
        assert meta["UpperDir"] == driver.diff_path("top") and meta["MergedDir"] == driver.mount_point("top")
        assert meta["LowerDir"].split(":") == [driver.diff_path("mid"), driver.diff_path("base")]
        assert all(os.path.isdir(meta[k]) for k in ("UpperDir", "WorkDir", "MergedDir"))
        assert set(driver.metadata("base")) == {"UpperDir", "WorkDir", "MergedDir"}
    else:
        pytest.fail(f"no metadata expectation for backend {driver.name}")
    with pytest.raises(LayerNotFound):
        driver.metadata("absent")


def test_seed_scenario(driver: Driver) -> None:
    """A holds a and x; B holds b and its own x; a rw layer on top sees a, b and B's x; writes and
    deletions land in the top layer's own dir in the backend's whiteout format, and A is untouched."""
    driver.create("A")
    a = driver.get("A")
    write(os.path.join(a, "a"), "a from A")
    write(os.path.join(a, "x"), "x from A")
    driver.put("A")
    driver.create("B", "A")
    b = driver.get("B")
    write(os.path.join(b, "b"), "b from B")
    write(os.path.join(b, "x"), "x from B")
    driver.put("B")
    driver.create("rw", "B", rw=True)
    top = driver.get("rw")
    try:
        assert sorted(os.listdir(top)) == ["a", "b", "x"]
        assert read(os.path.join(top, "x")) == "x from B"
        write(os.path.join(top, "new"), "written on top")
        os.unlink(os.path.join(top, "a"))
        assert sorted(os.listdir(top)) == ["b", "new", "x"]
        own = driver.diff_path("rw")
        assert read(os.path.join(own, "new")) == "written on top"
        if driver.whiteout_format == "overlay":
            st = os.lstat(os.path.join(own, "a"))
            assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
        elif driver.whiteout_format == "aufs":
            assert os.path.exists(os.path.join(own, ".wh.a"))
        else:
            assert not os.path.lexists(os.path.join(own, "a"))
    finally:
        driver.put("rw")
    assert read(os.path.join(driver.diff_path("A"), "a")) == "a from A"
    assert read(os.path.join(driver.diff_path("A"), "x")) == "x from A"
