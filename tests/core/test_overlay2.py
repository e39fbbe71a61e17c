"""overlay2 against the real kernel: Docker's layout, both mount APIs, and mounts that must be caught."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import time

import pytest

from graphdriver import open_driver
from graphdriver.errors import MountFailed, TooManyLayers
from graphdriver.kernel import mountinfo, overlay, probe, statcalls, syscalls
from graphdriver.plan.overlay import OverlayPlan, check_overlay


def chain(d, n: int, prefix: str = "L") -> list[str]:
    ids = []
    parent = None
    for i in range(n):
        lid = f"{prefix}{i}"
        d.create(lid, parent)
        ids.append(lid)
        parent = lid
    return ids


def shown_dirs(d, entry, key: str) -> list[str]:
    """The directories the kernel shows for ``key`` (lowers split), whichever way they are spelled:
    relative paths are from the overlay2 directory, ``l/`` links resolved."""
    values = entry.option_values(key)
    if key == "lowerdir" and values:
        values = values[0].split(":")
    return [os.path.realpath(os.path.join(d.home, v)) for v in values]


def test_layout_matches_docker(root: str) -> None:
    d = open_driver(root, "overlay2")
    d.create("base")
    d.create("child", "base", rw=True)
    home = os.path.join(root, "overlay2")
    link = open(os.path.join(home, "child", "link")).read()
    assert re.fullmatch(r"[A-Z2-7]{26}", link)
    assert os.readlink(os.path.join(home, "l", link)) == "../child/diff"
    base_link = open(os.path.join(home, "base", "link")).read()
    assert open(os.path.join(home, "child", "lower")).read() == f"l/{base_link}"
    assert not os.path.exists(os.path.join(home, "base", "lower"))
    assert os.path.exists(os.path.join(home, "base", "committed"))
    assert not os.path.exists(os.path.join(home, "child", "committed"))
    for sub in ("diff", "work", "merged"):
        assert os.path.isdir(os.path.join(home, "child", sub))
    assert d.metadata("child") == {
        "LowerDir": os.path.join(home, "base", "diff"), "MergedDir": os.path.join(home, "child", "merged"),
        "UpperDir": os.path.join(home, "child", "diff"), "WorkDir": os.path.join(home, "child", "work")}
    assert "LowerDir" not in d.metadata("base")
    assert open(os.path.join(root, "driver")).read().strip() == "overlay2"


def test_lower_file_lists_nearest_parent_first(root: str) -> None:
    d = open_driver(root, "overlay2")
    chain(d, 4)
    home = os.path.join(root, "overlay2")
    links = [open(os.path.join(home, f"L{i}", "link")).read() for i in range(4)]
    assert open(os.path.join(home, "L3", "lower")).read() == ":".join(f"l/{x}" for x in reversed(links[:3]))


@pytest.mark.parametrize("view", ["true", "false"])
@pytest.mark.parametrize("api", ["fsconfig", "mount"])
def test_mount_shows_in_the_kernel_exactly_as_planned(root: str, api: str, view: str) -> None:
    if api == "fsconfig" and not probe.overlay_lowerdir_plus():
        pytest.skip("kernel has no fsconfig lowerdir+ (needs 6.8+)")
    d = open_driver(root, "overlay2", {"overlay2.mount_api": api, "overlay2.layer_view": view})
    chain(d, 3)
    with open(os.path.join(d.diff_path("L0"), "f"), "w") as f:
        f.write("from L0")
    path = d.get("L2")
    entry = mountinfo.mount_at(path)
    assert entry is not None and entry.fs_type == "overlay" and not entry.read_only
    key = "lowerdir+" if api == "fsconfig" else "lowerdir"
    links = [f"l/{open(os.path.join(d.layer_path(x), 'link')).read()}" for x in ("L1", "L0")]
    shown = entry.option_values(key) if api == "fsconfig" else entry.option_values(key)[0].split(":")
    if view == "true":  # Docker's short links and relative dirs, looked up through the detached view
        assert shown == links
        assert (entry.option_values("upperdir"), entry.option_values("workdir")) == (["L2/diff"], ["L2/work"])
    else:
        assert shown == [d.diff_path("L1"), d.diff_path("L0")]
        assert entry.option_values("upperdir") == [d.diff_path("L2")]
    assert shown_dirs(d, entry, key) == [os.path.realpath(d.diff_path(x)) for x in ("L1", "L0")]
    assert open(os.path.join(path, "f")).read() == "from L0"
    d.put("L2")
    assert mountinfo.mount_at(path) is None


def test_legacy_api_mounts_128_lowers_through_short_relative_links(root: str) -> None:
    d = open_driver(root, "overlay2", {"overlay2.mount_api": "mount"})
    ids = chain(d, 129, prefix=f"{0:060x}")
    with open(os.path.join(d.diff_path(ids[0]), "deep"), "w") as f:
        f.write("bottom")
    path = d.get(ids[-1])
    entry = mountinfo.mount_at(path)
    lowers = entry.option_values("lowerdir")[0].split(":")
    assert len(lowers) == 128 and all(x.startswith("l/") for x in lowers)
    assert open(os.path.join(path, "deep")).read() == "bottom"
    d.put(ids[-1])


@pytest.mark.parametrize("api, view", [("auto", "true"), ("mount", "true"), ("auto", "false")])
def test_500_lowers_mount_through_the_lower_index_and_501_is_refused_before_mounting(root: str, api: str,
                                                                                     view: str) -> None:
    # mount: kernels without lowerdir+ too; view false: entered by path (chdir into the index)
    d = open_driver(root, "overlay2", {"overlay2.mount_api": api, "overlay2.layer_view": view})
    ids = chain(d, 501, prefix=f"{0:060x}")
    with open(os.path.join(d.diff_path(ids[0]), "deep"), "w") as f:
        f.write("bottom")
    index = os.path.join(d.layer_path(ids[500]), "lowers")
    assert not os.path.exists(index)  # made at the first mount, not before
    path = d.get(ids[500])  # 500 lowers: one mount(2), by the index's names
    shown = mountinfo.mount_at(path).option_values("lowerdir")[0].split(":")
    assert shown == [f"{i:x}" for i in range(500)]
    nearest = open(os.path.join(d.layer_path(ids[499]), "link")).read()
    assert os.readlink(os.path.join(index, "0")) == f"../../l/{nearest}"
    assert sorted(os.listdir(index)) == sorted(shown)
    assert os.path.realpath(os.path.join(index, "1f3")) == os.path.realpath(d.diff_path(ids[0]))
    if statcalls.statmount_supported():  # a first buffer far too small grows until the options fit
        mid = statcalls.mount_id(path).mnt_id
        assert statcalls.statmount(mid, 1, brief=True).options == statcalls.statmount(mid, 1).options
    assert check_overlay(d.plan(ids[500]), mountinfo.mount_at(path, brief=True)) == []
    assert d.verify() == []
    assert open(os.path.join(path, "deep")).read() == "bottom"
    d.put(ids[500])
    assert d.get(ids[500]) == path  # the index is made once and kept
    d.put(ids[500])
    before = mountinfo.mounts_under(d.home)  # this root's (other processes may mount elsewhere meanwhile)
    with pytest.raises(TooManyLayers, match="at most 500"):  # refused when made, as Docker's max depth
        d.create(f"{501:064x}", ids[500])
    assert mountinfo.mounts_under(d.home) == before and not d.exists(f"{501:064x}")
    assert not os.path.exists(os.path.join(d.layer_path(ids[500]), "committed"))  # ids[500] stays writable


@pytest.mark.skipif(not probe.overlay_lowerdir_plus(), reason="kernel has no fsconfig lowerdir+ (needs 6.8+)")
def test_a_deep_mount_spelled_either_way_is_shared_and_verified(root: str) -> None:
    indexed = open_driver(root, "overlay2")
    links = open_driver(root, "overlay2", {"overlay2.mount_api": "fsconfig"})  # l/ links, one by one
    ids = chain(indexed, 201, prefix=f"{0:060x}")
    top = ids[-1]
    for maker, other in ((links, indexed), (indexed, links)):
        path = maker.get(top)
        assert other.verify() == []  # the other spelling names the same 200 layers
        assert other.get(top) == path and other.mount_count(top) == 2  # adopted, not a foreign mount
        other.put(top)
        maker.put(top)
        assert mountinfo.mount_at(path) is None


def test_a_lower_index_half_made_by_a_crash_is_never_used_and_cleanup_removes_it(root: str) -> None:
    d = open_driver(root, "overlay2")
    ids = chain(d, 201, prefix=f"{0:060x}")
    stage = os.path.join(d.home, ".staging", f"{ids[-1]}.lowers.dead")  # as a crash mid-build leaves it
    os.mkdir(stage)
    os.symlink("../../l/NOTHING", os.path.join(stage, "0"))
    path = d.get(ids[-1])
    assert len(os.listdir(os.path.join(d.layer_path(ids[-1]), "lowers"))) == 200
    d.put(ids[-1])
    d.cleanup()
    assert not os.path.exists(stage) and mountinfo.mount_at(path) is None


def truncating_plan(base: str) -> OverlayPlan:
    """A mount(2) plan whose lowerdir fills exactly one page, so the kernel never sees upperdir."""
    budget = 4095 - len("lowerdir=")
    width = len(base) + len("/lower000")
    n = budget // (width + 1)
    lowers = [f"{base}/lower{i:03d}" for i in range(n - 1)]
    lowers.append(f"{base}/" + "p" * (budget - len(":".join(lowers)) - 1 - len(base) - 1))
    for p in lowers:
        os.mkdir(p)
    for sub in ("upper", "work", "merged"):
        os.mkdir(f"{base}/{sub}")
    return OverlayPlan(f"{base}/merged", tuple(lowers), f"{base}/upper", f"{base}/work", "mount")


def test_kernel_truncation_of_mount_data_is_real_and_caught(root: str) -> None:
    plan = truncating_plan(root)
    assert len(plan.mount_data()) > 4095
    overlay.mount_overlay(plan)  # the kernel says yes ...
    try:
        entry = mountinfo.mount_at(plan.target)
        assert entry is not None and entry.read_only  # ... but dropped the upper dir
        problems = check_overlay(plan, entry)
        assert any("upperdir is missing" in p for p in problems)
    finally:
        syscalls.umount2(plan.target)


def test_driver_undoes_and_reports_a_mount_that_does_not_match(root: str, monkeypatch) -> None:
    d = open_driver(root, "overlay2", {"overlay2.mount_api": "mount"})
    chain(d, 2)
    os.mkdir(os.path.join(root, "t"))
    bad = truncating_plan(os.path.join(root, "t"))
    monkeypatch.setattr(d, "plan", lambda _id: bad)
    with pytest.raises(MountFailed, match="does not match the plan.*upperdir is missing.*unmounted"):
        d.get("L1")
    assert mountinfo.mount_at(bad.target) is None
    assert d.mount_count("L1") == 0


def test_status_reports_the_mount_api_and_verifier(root: str) -> None:
    d = open_driver(root, "overlay2")
    status = dict(d.status())
    assert status["Backing Filesystem"] == probe.backing_fs(root)
    assert status["Mount API"] in ("fsconfig lowerdir+", "mount(2) in one page (l/ links, then a lower index)",
                                   "mount(2) in one page (l/ links, then a lower index), else fsconfig lowerdir+")
    assert status["Verified with"] in ("statmount(2)", "/proc/self/mountinfo")


def test_the_links_directory_name_is_not_a_layer_id(root: str) -> None:
    from graphdriver.errors import InvalidID

    d = open_driver(root, "overlay2")
    with pytest.raises(InvalidID, match="reserved by the overlay2 layout"):
        d.create("l")
    assert d.layers() == []


def test_without_the_view_mount_is_absolute_while_it_fits_then_short_links(root: str) -> None:
    d = open_driver(root, "overlay2", {"overlay2.layer_view": "false"})
    ids = chain(d, 129, prefix=f"{0:060x}")
    few, many = d.plan(ids[3]), d.plan(ids[128])
    assert (few.api, few.cwd) == ("mount", None)
    assert many.api == "mount" and many.cwd == d.home  # 128 short links still fit one page
    # ids[3] has a child: mounted read-only, its own diff on top of its parents' (as Docker's overlay2)
    for lid, want in ((ids[3], [d.diff_path(x) for x in reversed(ids[:4])]), (ids[128], None)):
        path = d.get(lid)
        shown = mountinfo.mount_at(path).option_values("lowerdir")[0].split(":")
        if want is None:
            assert len(shown) == 128 and all(x.startswith("l/") for x in shown)
        else:
            assert shown == want
        d.put(lid)


def test_a_layer_made_again_by_another_process_gets_its_new_lowers(root: str) -> None:
    first = open_driver(root, "overlay2")
    chain(first, 3)
    first.create("top", "L2")
    first.get("top")  # the plan is cached by this driver object
    first.put("top")
    other = open_driver(root, "overlay2")  # another process: remove and create again on another parent
    other.remove("top")
    other.create("top", "L0")
    with open(os.path.join(other.diff_path("L2"), "only-in-L2"), "w") as f:
        f.write("x")
    path = first.get("top")
    assert shown_dirs(first, mountinfo.mount_at(path), "lowerdir") == [os.path.realpath(other.diff_path("L0"))]
    assert not os.path.exists(os.path.join(path, "only-in-L2"))
    first.put("top")


def test_a_layer_made_again_on_the_same_inode_within_one_clock_tick_gets_its_new_lowers(root: str) -> None:
    """The case the test above cannot produce on this kernel (its timestamps are finer than a
    remove+create): ext4 hands a removed directory's inode straight back, and where its timestamps are
    as coarse as a clock tick a ``merged/`` made again keeps the old one's inode and birth time. Here
    the layer's ``merged/`` stays the same directory while its lowers become what a remove and a
    create on another parent write, stamped as a create stamps it: the driver that cached the old plan
    must not mount the old lowers (both its quick path and its general path look)."""
    first = open_driver(root, "overlay2")
    for name in ("A", "B"):
        first.create(name)
        with open(os.path.join(first.diff_path(name), "who"), "w") as f:
            f.write(name)
    first.create("X", "A")
    merged = os.path.join(first.home, "X", "merged")

    def made_again_on(parent: str) -> None:
        with open(os.path.join(first.home, parent, "link")) as f:
            link = f.read().strip()
        with open(os.path.join(first.home, "X", "lower"), "w") as f:
            f.write(f"l/{link}")  # the lower file a create of X on ``parent`` writes ...
        now = time.time_ns()
        os.utime(merged, ns=(now, now))  # ... and the stamp it puts on merged/

    for quick, was, now_on in ((True, "A", "B"), (False, "B", "A")):
        path = first.get("X")  # plans X (and can repeat the mount quickly next time)
        first.put("X")
        first.get("X")  # the quick path, as planned
        with open(os.path.join(path, "who")) as f:
            assert f.read() == was
        first.put("X")
        if not quick:
            first._quick.clear()  # a driver object that never mounted X quickly: the general path
        ino, born, _ = statcalls.unmounted_key(merged)
        made_again_on(now_on)
        assert statcalls.unmounted_key(merged)[:2] == (ino, born)  # the same directory to the kernel
        path = first.get("X")
        with open(os.path.join(path, "who")) as f:
            assert f.read() == now_on
        assert shown_dirs(first, mountinfo.mount_at(path), "lowerdir") == [os.path.realpath(first.diff_path(now_on))]
        first.put("X")


def test_a_layer_is_stamped_at_creation_to_the_nanosecond(root: str) -> None:
    d = open_driver(root, "overlay2")
    before = time.time_ns()
    d.create("a")
    d.create("b", "a")
    after = time.time_ns()
    stamps = [os.stat(os.path.join(d.home, x, "merged")).st_mtime_ns for x in ("a", "b")]
    # a is stamped again when b makes it a parent (every process then plans a's next mount afresh: read-only)
    assert before <= stamps[1] < stamps[0] <= after
    assert [statcalls.unmounted_key(os.path.join(d.home, x, "merged"))[2] for x in ("a", "b")] == stamps


def test_relative_lowers_never_move_another_threads_working_directory(root: str, tmp_path) -> None:
    import threading

    d = open_driver(root, "overlay2", {"overlay2.mount_api": "mount"})
    ids = chain(d, 130)
    top = ids[-1]  # 129 lowers: short links, mounted from inside the overlay2 directory
    assert d.plan(top).cwd == d.home
    here = os.getcwd()
    seen: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(os.getcwd())

    t = threading.Thread(target=watch)
    t.start()
    try:
        for _ in range(20):
            d.get(top)
            d.put(top)
    finally:
        stop.set()
        t.join()
    assert seen and set(seen) == {here}
    assert os.getcwd() == here


def test_brief_statmount_agrees_with_the_full_one(root: str) -> None:
    if not statcalls.statmount_supported():
        pytest.skip("kernel has no statmount(2) (needs 6.8+)")
    d = open_driver(root, "overlay2")
    chain(d, 3)
    path = d.get("L2")
    mid = statcalls.mount_id(path).mnt_id
    full, brief = statcalls.statmount(mid), statcalls.statmount(mid, brief=True)
    assert (brief.mnt_id, brief.fs_type, brief.read_only, brief.options) \
        == (full.mnt_id, full.fs_type, full.read_only, full.options)
    assert full.mount_point == path and brief.mount_point == ""
    assert "upperdir=L2/diff" in brief.options
    d.put("L2")


def test_a_root_bind_mounted_onto_itself_after_open_still_mounts_and_verifies(root: str) -> None:
    # dockerd makes its root a private bind mount of itself at start, under a driver already open.
    d = open_driver(root, "overlay2")
    chain(d, 3)
    path = d.get("L2")
    d.put("L2")
    syscalls.mount(root, root, None, syscalls.MS_BIND)
    try:
        assert d.get("L2") == path
        assert mountinfo.mount_at(path).fs_type == "overlay"
        d.put("L2")
        assert mountinfo.mount_at(path) is None
    finally:
        syscalls.umount2(root, syscalls.MNT_DETACH)


def test_relative_lowers_mount_where_unshare_is_refused(root: str, monkeypatch) -> None:
    import errno

    def refused(flags: int) -> None:
        raise OSError(errno.EPERM, "unshare: Operation not permitted")

    monkeypatch.setattr(syscalls, "unshare", refused)  # as under a seccomp profile that blocks it
    d = open_driver(root, "overlay2", {"overlay2.mount_api": "mount"})
    ids = chain(d, 130)
    assert d.plan(ids[-1]).cwd == d.home
    here = os.getcwd()
    path = d.get(ids[-1])
    assert len(mountinfo.mount_at(path).option_values("lowerdir")[0].split(":")) == 129
    assert os.getcwd() == here
    d.put(ids[-1])


@pytest.mark.parametrize("api", ["auto", "fsconfig"])
def test_verification_through_mountinfo_where_statmount_is_missing(root: str, api: str, monkeypatch) -> None:
    # Kernels before 6.8 have no statmount: the same checks run on /proc/self/mountinfo's line.
    if api == "fsconfig" and not probe.overlay_lowerdir_plus():
        pytest.skip("kernel has no fsconfig lowerdir+ (needs 6.8+)")
    monkeypatch.setattr(mountinfo, "statmount_ok", lambda: False)
    d = open_driver(root, "overlay2", {"overlay2.mount_api": api})
    ids = chain(d, 130, prefix=f"{0:060x}")
    for top in (ids[2], ids[-1], ids[2]):  # absolute paths, Docker's short links; a plan known already
        path = d.get(top)
        entry = mountinfo.mount_at(path)
        assert entry is not None and entry.option_blob == b"" and entry.mount_point == os.path.realpath(path)
        assert check_overlay(d.plan(top), entry) == []
        assert d.verify() == []
        d.put(top)
        assert mountinfo.mount_at(path) is None


@pytest.mark.parametrize("first, second", [("true", "false"), ("false", "true")])
def test_processes_with_and_without_the_view_share_one_mount_and_see_no_drift(root: str, first: str,
                                                                               second: str) -> None:
    a = open_driver(root, "overlay2", {"overlay2.layer_view": first})
    b = open_driver(root, "overlay2", {"overlay2.layer_view": second})
    chain(a, 3)
    path = a.get("L2")
    mid = mountinfo.current_mount_id(path)
    assert b.verify() == []  # the same layers, spelled the other way
    assert b.get("L2") == path and mountinfo.current_mount_id(path) == mid and b.mount_count("L2") == 2
    b.put("L2")
    a.put("L2")
    assert mountinfo.mount_at(path) is None


def test_a_view_that_cannot_serve_falls_back_to_the_path_and_is_dropped(root: str, tmp_path) -> None:
    d = open_driver(root, "overlay2")
    chain(d, 3)
    d.get("L2")
    d.put("L2")  # the plan is cached: the next get mounts at once
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    stale = overlay.LayerView(str(elsewhere))  # a detached copy of another tree: no layer is found there
    stale.fd()
    stale.path = d.home
    d._view = stale
    d._quick.clear()  # a quick mount keeps the view it was made with
    path = d.get("L2")  # refused through the view, mounted by the path
    assert stale.usable is False
    entry = mountinfo.mount_at(path)
    assert shown_dirs(d, entry, "lowerdir") == [os.path.realpath(d.diff_path(x)) for x in ("L1", "L0")]
    assert d.verify() == []
    d.put("L2")
    assert "refused" in dict(d.status())["Layers looked up"]


def test_the_layer_view_setting_is_checked(root: str) -> None:
    from graphdriver.errors import StorageOptUnsupported

    with pytest.raises(StorageOptUnsupported, match="overlay2.layer_view must be one of true, false, not 'maybe'"):
        open_driver(root, "overlay2", {"overlay2.layer_view": "maybe"})
    assert dict(open_driver(root, "overlay2").status())["Layers looked up"].startswith("relative, through")


def test_the_view_follows_a_root_copied_and_swapped_in_under_a_live_driver(root: str) -> None:
    import shutil

    d = open_driver(root, "overlay2")
    chain(d, 2)
    with open(os.path.join(d.diff_path("L0"), "f"), "w") as f:
        f.write("old root")
    path = d.get("L1")  # the view is made of the first root
    d.put("L1")
    if not d.layer_view_in_use:
        pytest.skip("kernel takes no overlay layers from a detached mount (its clone_private_mount() refuses "
                    "a mount outside the caller's namespace): no view to follow")
    shutil.copytree(root, root + ".new", symlinks=True)  # the same layers, the same l/ links ...
    with open(os.path.join(root + ".new", "overlay2", "L0", "diff", "f"), "w") as f:
        f.write("new root")
    os.rename(root, root + ".old")  # ... swapped in while the driver lives (the old view still reaches
    os.rename(root + ".new", root)  # the old root, where every relative path would resolve too)
    try:
        assert d.get("L1") == path
        assert open(os.path.join(path, "f")).read() == "new root"
        assert d.layer_view_in_use  # followed, not dropped
        assert d.verify() == []
        d.put("L1")
        with d.lock.held():  # the lock followed too: it is the new root's lock file this driver now holds
            fd = os.open(os.path.join(root, "overlay2", ".lock"), os.O_RDWR)
            try:
                with pytest.raises(BlockingIOError):
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            finally:
                os.close(fd)
    finally:
        shutil.rmtree(root + ".old")


def test_a_brief_statmount_names_an_overlay_by_its_magic_and_asks_for_any_other_type(root: str) -> None:
    if not statcalls.statmount_supported():
        pytest.skip("kernel has no statmount(2) (needs 6.8+)")
    d = open_driver(root, "overlay2")
    chain(d, 2)
    path = d.get("L1")
    try:
        sm = statcalls.statmount(statcalls.mount_id(path).mnt_id, brief=True)
        assert (sm.fs_type, sm.mount_point) == ("overlay", "")  # brief: no mount point asked for
        assert sm.options == statcalls.statmount(statcalls.mount_id(path).mnt_id).options
    finally:
        d.put("L1")
    target = d.mount_point("L1")
    syscalls.mount("tmpfs", target, "tmpfs", 0, "size=1m")
    try:
        assert statcalls.statmount(statcalls.mount_id(target).mnt_id, brief=True).fs_type == "tmpfs"  # by name
        assert check_overlay(d.plan("L1"), mountinfo.mount_at(target, brief=True)) == \
            [f"{target} is a tmpfs mount, not overlay"]
    finally:
        syscalls.umount2(target)


def test_a_lower_index_edited_behind_the_driver_is_made_right_before_it_is_mounted(root: str) -> None:
    """The kernel shows an index's names, not where they lead: a driver object's first mount of a layer
    reads the index against the layer's ``lower`` file and replaces it when it differs."""
    d = open_driver(root, "overlay2")
    ids = chain(d, 201, prefix=f"{0:060x}")
    top = ids[-1]
    with open(os.path.join(d.diff_path(ids[0]), "base-file"), "w") as f:
        f.write("from the base")
    d.get(top)
    d.put(top)
    index = os.path.join(d.layer_path(top), "lowers")
    last = sorted(os.listdir(index), key=lambda n: int(n, 16))[-1]  # the base layer's name
    right = os.readlink(os.path.join(index, last))
    d.create("other")  # in no chain of these: a layer the index must not lead to
    with open(os.path.join(d.diff_path("other"), "base-file"), "w") as f:
        f.write("from another layer")
    with open(os.path.join(d.layer_path("other"), "link")) as f:
        os.unlink(os.path.join(index, last))
        os.symlink(f"../../l/{f.read().strip()}", os.path.join(index, last))
    os.mkdir(os.path.join(index, "stray"))
    path = open_driver(root, "overlay2").get(top)  # another process: its first mount of the layer
    try:
        with open(os.path.join(path, "base-file")) as f:
            assert f.read() == "from the base"
        assert os.readlink(os.path.join(index, last)) == right and "stray" not in os.listdir(index)
        assert [n for n in os.listdir(d._staging) if ".lowers." in n] == []
    finally:
        d.put(top)


def test_a_layer_with_a_child_mounts_read_only_in_every_process(root: str) -> None:
    """Docker's overlay2 mounts a layer that has a child (its ``committed`` marker) read-only, its diff on
    top of its parents'; a get of such a layer mounted it writable, so a write changed what its child is
    built on. A driver object that mounted the layer before it had a child plans afresh too."""
    first, other = open_driver(root, "overlay2"), open_driver(root, "overlay2")
    first.create("base")
    first.create("app", "base")
    path = first.get("app")
    with open(os.path.join(path, "before"), "w") as f:  # no child yet: writable, as Docker's
        f.write("x")
    first.put("app")
    path = first.get("app")  # the quick path now knows this mount
    first.put("app")
    other.create("ctr", "app", rw=True)  # another object (process) makes app a parent
    path = first.get("app")
    with pytest.raises(OSError) as err:
        open(os.path.join(path, "after"), "w").close()
    assert err.value.errno == errno.EROFS
    entry = mountinfo.mount_at(path)
    assert entry.read_only and not entry.option_values("upperdir")
    assert first.verify() == [] and first.metadata("app")["LowerDir"] == first.diff_path("base")
    first.put("app")
    assert sorted(os.listdir(other.get("ctr"))) == ["before"]
    other.put("ctr")

