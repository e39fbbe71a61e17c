"""Real aufs mounts, checked against /sys/fs/aufs. They skip where the kernel has no aufs (the Ubuntu 20.04
VM in vagrant/ runs them)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from graphdriver import open_driver
from graphdriver.drivers.aufs import NO_AUFS, Aufs
from graphdriver.errors import TooManyLayers
from graphdriver.kernel import mountinfo, probe, syscalls
from graphdriver.kernel.aufs_sysfs import si_of

pytestmark = pytest.mark.skipif(not probe.has_filesystem("aufs"), reason=NO_AUFS)


def write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def kernel_branches(drv: Aufs, layer_id: str) -> list[str]:
    entry = mountinfo.mount_at(drv.mount_point(layer_id))
    assert entry is not None and entry.fs_type == "aufs"
    si = si_of(entry.options)
    assert si, entry.options
    info = drv.sysfs.read(si)
    assert info is not None, f"no /sys/fs/aufs/si_{si}"
    return [f"{b.path}={b.perm}" for b in info.branches]


@pytest.fixture
def drv(root: str) -> Aufs:
    d = open_driver(root, "aufs")
    assert isinstance(d, Aufs)
    return d


def test_container_layer_unites_branches_as_planned(drv):
    drv.create("base")
    write(os.path.join(drv.diff_path("base"), "etc/a"), "a")
    write(os.path.join(drv.diff_path("base"), "etc/keep"), "keep")
    drv.create("mid", "base")
    write(os.path.join(drv.diff_path("mid"), "etc/b"), "b")
    write(os.path.join(drv.diff_path("mid"), "etc/.wh.a"), "")  # mid deletes /etc/a, the aufs way
    drv.create("ctr", "mid", rw=True)
    path = drv.get("ctr")
    try:
        assert path == drv.mount_point("ctr")
        assert sorted(os.listdir(os.path.join(path, "etc"))) == ["b", "keep"]
        assert kernel_branches(drv, "ctr") == [str(b) for b in drv.branches("ctr")]
        write(os.path.join(path, "etc/new"), "n")
        assert open(os.path.join(drv.diff_path("ctr"), "etc/new")).read() == "n"  # writes land in the rw branch
        os.unlink(os.path.join(path, "etc/keep"))
        assert os.path.exists(os.path.join(drv.diff_path("ctr"), "etc/.wh.keep"))  # a whiteout, kept as is
        assert os.path.exists(os.path.join(drv.diff_path("base"), "etc/keep"))  # lower branch untouched
        assert drv.verify() == []
        plan = drv.plan("ctr")
        if plan.options.xino:
            entry = mountinfo.mount_at(path)
            assert drv.sysfs.read(si_of(entry.options)).xi_path == plan.options.xino
    finally:
        drv.put("ctr")
    assert mountinfo.current_mount_id(drv.mount_point("ctr")) is None


def test_image_layer_with_children_mounts_read_only_with_every_branch_ro_wh(drv):
    drv.create("base")
    drv.create("img", "base")
    drv.create("ctr", "img", rw=True)
    path = drv.get("img")
    try:
        assert all(b.endswith("=ro+wh") for b in kernel_branches(drv, "img"))
        assert mountinfo.mount_at(path).read_only
        with pytest.raises(OSError) as e:
            write(os.path.join(path, "x"), "x")
        assert e.value.errno in (errno.EROFS, errno.EACCES)
    finally:
        drv.put("img")


def test_long_chain_is_mounted_with_append_remounts(drv):
    parent = None
    ids = []
    for i in range(70):
        lid = f"{i:03d}-" + "x" * 120  # long ids: 70 branches need several pages of mount data
        drv.create(lid, parent)
        write(os.path.join(drv.diff_path(lid), f"f{i:03d}"), str(i))
        ids.append(lid)
        parent = lid
    drv.create("top", parent, rw=True)
    plan = drv.plan("top")
    assert plan.appends, "the chain should not fit one page"
    path = drv.get("top")
    try:
        assert kernel_branches(drv, "top") == [str(b) for b in plan.branches]
        assert len(os.listdir(path)) == 70
        assert drv.verify() == []
    finally:
        drv.put("top")


def test_the_module_branch_limit(drv):
    limit = drv.branch_max
    parent = None
    for i in range(limit):
        drv.create(f"l{i}", parent)
        parent = f"l{i}"
    with pytest.raises(TooManyLayers):
        drv.create("one-too-many", parent)
    drv.get(parent)  # exactly at the limit: mounts
    try:
        assert len(kernel_branches(drv, parent)) == limit
    finally:
        drv.put(parent)


def test_verify_reports_branch_drift(drv):
    drv.create("base")
    drv.create("mid", "base")
    drv.create("ctr", "mid", rw=True)
    target = drv.get("ctr")
    try:
        mid = os.path.join(os.path.realpath(os.path.join(drv.home, "diff")), "mid")
        syscalls.mount("none", target, "aufs", syscalls.MS_REMOUNT, f"mod:{mid}=rw")
        drift = [str(d) for d in drv.verify()]
        assert any(f"({mid}) is rw (planned ro+wh)" in d for d in drift), drift
        cli = subprocess.run([sys.executable, "-m", "graphdriver", "--root", drv.root, "verify"],
                             capture_output=True, text=True, timeout=120)
        assert cli.returncode == 1
        assert f"DRIFT ctr: branch 1 ({mid}) is rw (planned ro+wh)" in cli.stdout, cli.stdout + cli.stderr
        syscalls.mount("none", target, "aufs", syscalls.MS_REMOUNT, f"del:{mid}")
        drift = [str(d) for d in drv.verify()]
        assert any("the kernel shows 2 branches; the plan has 3" in d for d in drift), drift
    finally:
        drv.cleanup()
    assert mountinfo.current_mount_id(target) is None


def test_aufs_keeps_its_own_entries_in_the_rw_branch(drv):
    drv.create("base")
    write(os.path.join(drv.diff_path("base"), "f"), "f")
    drv.create("ctr", "base", rw=True)
    path = drv.get("ctr")
    try:
        os.unlink(os.path.join(path, "f"))
        names = set(os.listdir(drv.diff_path("ctr")))
        assert ".wh.f" in names
        assert {".wh..wh.aufs", ".wh..wh.plnk", ".wh..wh.orph"} & names  # the module's own, made at mount
        assert not any(n.startswith(".wh.") for n in os.listdir(path))  # never shown through the union
    finally:
        drv.put("ctr")
    assert drv.changes("ctr", None) == [("/f", 2)]  # the whiteout is a deletion; aufs's entries are not content


def test_cli_info_shows_the_aufs_facts(root):
    r = subprocess.run([sys.executable, "-m", "graphdriver", "--root", root, "--driver", "aufs", "info"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "Driver: aufs" in lines
    assert any(line.startswith("Dirperm1 Supported: ") for line in lines)
    assert any(line.startswith("Branch Limit: ") and int(line.split(": ")[1]) >= 127 for line in lines)
    assert mountinfo.mounts_under(root) == []  # the option probe left nothing mounted
