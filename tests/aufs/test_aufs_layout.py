"""The aufs layout (diff/, layers/, mnt/), publish/remove/cleanup, metadata and the driver's checks.

These run on any kernel: creating and removing aufs layers needs no mount. What does need the kernel
(a stale mount blocking removal, the refusal to run without aufs) uses it for real.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from graphdriver import open_driver
from graphdriver.drivers.aufs import NO_AUFS, Aufs, backing_fs_reason
from graphdriver.errors import (
    BadBranchPath,
    DriverUnsupported,
    LayerInUse,
    LayerNotFound,
    MountFailed,
    StorageOptUnsupported,
    TooManyLayers,
)
from graphdriver.kernel import mountinfo, probe, syscalls
from graphdriver.kernel.mountinfo import MountEntry
from graphdriver.plan.aufs import AufsOptions, Branch, planned_branches, probe_data

HAVE_AUFS = probe.has_filesystem("aufs")
XINO = "/dev/shm/aufs.xino"


def chain(drv: Aufs) -> None:
    drv.create("base")
    drv.create("mid", "base")
    drv.create("ctr", "mid", rw=True)


def test_three_places_per_layer(aufs):
    chain(aufs)
    home = aufs.home
    for lid in ("base", "mid", "ctr"):
        assert os.path.isdir(os.path.join(home, "diff", lid))
        assert os.path.isdir(os.path.join(home, "mnt", lid))
        assert os.path.isfile(os.path.join(home, "layers", lid))
    assert open(os.path.join(home, "layers", "base")).read() == ""
    assert open(os.path.join(home, "layers", "mid")).read() == "base\n"
    assert open(os.path.join(home, "layers", "ctr")).read() == "mid\nbase\n"  # nearest first
    assert aufs.diff_path("ctr") == os.path.join(home, "diff", "ctr")
    assert aufs.mount_point("ctr") == os.path.join(home, "mnt", "ctr")
    assert aufs.layers() == ["base", "ctr", "mid"]
    assert os.listdir(os.path.join(home, ".staging")) == []  # nothing left of the staging dirs
    assert aufs.whiteout_format == "aufs"


def branch_list(drv: Aufs, layer_id: str) -> str:
    return ":".join(str(b) for b in drv.branches(layer_id))


def test_branch_paths_in_order_and_no_graphdriver_data(aufs):
    chain(aufs)
    d = os.path.realpath(os.path.join(aufs.home, "diff"))
    assert branch_list(aufs, "ctr") == f"{d}/ctr=rw:{d}/mid=ro+wh:{d}/base=ro+wh"
    # an image layer others stack on is read-only: every branch ro+wh
    assert aufs.read_only("mid") and not aufs.read_only("ctr")
    assert branch_list(aufs, "mid") == f"{d}/mid=ro+wh:{d}/base=ro+wh"
    # a fresh image layer is filled through its mount, like Docker's aufs: its own branch is rw
    aufs.create("fresh", "mid")
    assert not aufs.read_only("fresh")
    assert branch_list(aufs, "fresh") == f"{d}/fresh=rw:{d}/mid=ro+wh:{d}/base=ro+wh"
    assert [str(b) for b in aufs.plan("ctr").branches] == branch_list(aufs, "ctr").split(":")
    # Docker's aufs GetMetadata returns nil: docker inspect shows no GraphDriver data for aufs
    assert aufs.metadata("ctr") == {} and aufs.metadata("base") == {}
    with pytest.raises(LayerNotFound):
        aufs.metadata("absent")


def test_status_is_dockers_aufs_status_first(aufs):
    chain(aufs)
    aufs.mount_options = AufsOptions(dirperm1=True)  # as the probe would find it (no mount here)
    status = aufs.status()
    assert [k for k, _ in status[:4]] == ["Root Dir", "Backing Filesystem", "Dirs", "Dirperm1 Supported"]
    values = dict(status)
    assert values["Root Dir"] == aufs.home and values["Dirperm1 Supported"] == "true"
    assert values["Backing Filesystem"] == probe.backing_fs(aufs.home)
    # Dirs counts the files in layers/, as Docker's aufs does (loadIds), not the diff dirs
    open(os.path.join(aufs.home, "layers", "half"), "w").close()
    assert dict(aufs.status())["Dirs"] == "4"


@pytest.mark.parametrize(("fs", "config", "refused"), [
    ("extfs", {}, None), ("xfs", {}, None), ("tmpfs", {}, None),
    ("btrfs", {}, "aufs is not supported over btrfs (Docker's aufs driver refuses it)"),
    ("ecryptfs", {}, "aufs is not supported over ecryptfs (Docker's aufs driver refuses it)"),
    ("aufs", {}, "backing filesystem aufs cannot hold aufs branches"),
    ("overlayfs", {}, "backing filesystem overlayfs cannot hold aufs branches"),
    ("ramfs", {}, "the aufs module takes no ramfs branch (it was not built with CONFIG_AUFS_BR_RAMFS)"),
    ("ramfs", {"CONFIG_AUFS_BR_RAMFS": "y"}, None),
])
def test_backing_filesystems_aufs_refuses(fs, config, refused):
    assert backing_fs_reason(fs, config) == refused


def test_option_probe_isolates_each_option():
    # dio and dirperm1 are probed with noxino: the module's default xino (/tmp/.aufs.xino on an xfs or
    # btrfs branch, opened O_EXCL) must not make them look unsupported; xino is probed alone
    assert probe_data("/s/base", "/dev/shm/aufs.x.xino") == {
        "dio": "dio,noxino,br:/s/base=rw", "dirperm1": "dirperm1,noxino,br:/s/base=rw",
        "xino": "xino=/dev/shm/aufs.x.xino,br:/s/base=rw"}
    assert set(probe_data("/s/base", None)) == {"dio", "dirperm1"}
    assert planned_branches(list(probe_data("/s/base", None).values())[:1]) == [Branch("/s/base", "rw")]


def test_which_layers_mount(aufs):
    chain(aufs)
    aufs.create("lonely-rw", rw=True)
    assert not aufs.needs_mount("base")  # a read-only base layer is its own diff dir
    assert aufs.rootfs_path("base") == aufs.diff_path("base")
    assert aufs.needs_mount("mid") and aufs.needs_mount("ctr")
    # a container layer without a parent is its diff dir too: Docker's aufs Get mounts only with parents
    assert not aufs.needs_mount("lonely-rw")
    assert aufs.get("lonely-rw") == aufs.diff_path("lonely-rw")
    assert mountinfo.current_mount_id(aufs.mount_point("lonely-rw")) is None
    aufs.put("lonely-rw")
    assert aufs.rootfs_path("ctr") == aufs.mount_point("ctr")
    assert aufs.get("base") == aufs.diff_path("base")
    assert aufs.mount_count("base") == 1
    aufs.put("base")
    assert aufs.mount_count("base") == 0


def test_remove_takes_all_three_places(aufs):
    chain(aufs)
    with pytest.raises(LayerInUse):
        aufs.remove("mid")
    aufs.remove("ctr")
    for sub in ("diff", "mnt", "layers"):
        assert not os.path.lexists(os.path.join(aufs.home, sub, "ctr"))
    assert aufs.layers() == ["base", "mid"]
    assert os.listdir(os.path.join(aufs.home, ".staging")) == []
    aufs.create("ctr", "mid", rw=True)  # the id is free again
    assert aufs.exists("ctr")


def test_remove_refuses_a_layer_with_a_stale_mount(aufs):
    aufs.create("base")
    mnt = aufs.mount_point("base")
    syscalls.mount("tmpfs", mnt, "tmpfs", 0, "size=1m")
    try:
        with pytest.raises(LayerInUse, match="still mounted"):
            aufs.remove("base")
        assert aufs.exists("base")
        assert os.path.isdir(aufs.diff_path("base"))
    finally:
        aufs.cleanup()
    assert mountinfo.current_mount_id(mnt) is None
    aufs.remove("base")
    assert not aufs.exists("base")


def test_cleanup_removes_what_a_crash_mid_publish_leaves(aufs):
    chain(aufs)
    # a crash after layers/<id> and mnt/<id> were placed, before the diff dir's final rename
    open(os.path.join(aufs.home, "layers", "half"), "w").write("ctr\nmid\nbase\n")
    os.mkdir(os.path.join(aufs.home, "mnt", "half"))
    open(os.path.join(aufs.home, "layers", "mid.tmp-99-1"), "w").close()
    assert not aufs.exists("half")
    aufs.cleanup()
    assert not os.path.lexists(os.path.join(aufs.home, "layers", "half"))
    assert not os.path.lexists(os.path.join(aufs.home, "mnt", "half"))
    assert not os.path.lexists(os.path.join(aufs.home, "layers", "mid.tmp-99-1"))
    assert sorted(os.listdir(os.path.join(aufs.home, "layers"))) == ["base", "ctr", "mid"]
    assert sorted(os.listdir(os.path.join(aufs.home, "mnt"))) == ["base", "ctr", "mid"]


def test_a_failed_publish_leaves_nothing(aufs):
    aufs.create("base")
    blocker = os.path.join(aufs.home, "mnt", "child")
    os.makedirs(os.path.join(blocker, "junk"))  # a non-empty dir: the rename of mnt/<id> fails
    with pytest.raises(OSError):
        aufs.create("child", "base")
    assert not aufs.exists("child")
    assert not os.path.lexists(os.path.join(aufs.home, "layers", "child"))
    assert not os.path.lexists(os.path.join(aufs.home, "diff", "child"))
    assert not os.path.lexists(os.path.join(aufs.home, ".meta", "child"))
    assert os.listdir(os.path.join(aufs.home, ".staging")) == []


def test_create_past_the_branch_limit_is_refused(aufs):
    aufs.branch_max = 3
    aufs.create("l0")
    aufs.create("l1", "l0")
    aufs.create("l2", "l1")
    with pytest.raises(TooManyLayers, match="4 aufs branches"):
        aufs.create("l3", "l2")
    assert not aufs.exists("l3")
    assert not os.path.lexists(os.path.join(aufs.home, "layers", "l3"))


def test_branch_paths_aufs_cannot_carry_are_refused_before_mounting(root):
    drv = Aufs(os.path.join(root, "odd:root"))
    drv.create("base")
    drv.create("ctr", "base", rw=True)
    with pytest.raises(BadBranchPath, match="':'"):
        drv.get("ctr")
    # refused before anything reached the kernel: not even the option probe ran
    assert not os.path.exists(os.path.join(drv.home, ".aufs-probe"))
    assert drv.mount_count("ctr") == 0


@pytest.mark.skipif(HAVE_AUFS, reason="this kernel has aufs")
def test_a_union_mount_without_aufs_fails_cleanly(aufs):
    chain(aufs)
    with pytest.raises(MountFailed, match="aufs mount at .* failed"):
        aufs.get("ctr")
    assert mountinfo.current_mount_id(aufs.mount_point("ctr")) is None
    assert aufs.mount_count("ctr") == 0
    assert aufs.verify() == []
    status = dict(aufs.status())
    assert status["Dirperm1 Supported"] == "false"
    assert status["Dirs"] == "3"
    assert status["Branch Limit"] == "127"
    assert status["Root Dir"] == aufs.home


@pytest.mark.skipif(HAVE_AUFS, reason="this kernel has aufs")
def test_open_driver_refuses_a_kernel_without_aufs(root):
    with pytest.raises(DriverUnsupported) as e:
        open_driver(root, "aufs")
    assert str(e.value).endswith(NO_AUFS)
    assert "\n" not in str(e.value)
    assert not os.path.exists(os.path.join(root, "driver"))  # the root was not claimed for aufs


@pytest.mark.skipif(HAVE_AUFS, reason="this kernel has aufs")
def test_cli_driver_aufs_fails_with_one_line(root):
    r = subprocess.run([sys.executable, "-m", "graphdriver", "--root", root, "--driver", "aufs", "info"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "kernel has no aufs" in lines[0]
    assert r.stdout == ""


def test_check_mount_compares_the_layout_with_sysfs(aufs, sysfs_tree):
    chain(aufs)
    aufs.mount_options = AufsOptions(dio=True, dirperm1=True, xino=XINO)
    d = os.path.realpath(os.path.join(aufs.home, "diff"))
    good = [f"{d}/ctr=rw", f"{d}/mid=ro+wh", f"{d}/base=ro+wh"]
    aufs.sysfs = sysfs_tree("5a5a", good, xi_path=XINO)
    e = MountEntry(7, aufs.mount_point("ctr"), "aufs", "none", False, ("si=5a5a", "dio", "dirperm1"))
    assert aufs.check_mount("ctr", e) == []
    aufs.sysfs = sysfs_tree("5a5a", [good[0], good[2]], xi_path=XINO)
    assert aufs.check_mount("ctr", e) == ["the kernel shows 2 branches; the plan has 3",
                                          f"branch 1 is {d}/base (planned {d}/mid)"]
    assert aufs.check_mount("ctr", None) == [f"no mount at {aufs.mount_point('ctr')}"]
    # a sysfs file that cannot be read is drift too, not a crash of verify
    fixture = aufs.sysfs.si_dir("5a5a")
    os.unlink(os.path.join(fixture, "br1"))
    os.mkdir(os.path.join(fixture, "br1"))
    (problem,) = aufs.check_mount("ctr", e)
    assert problem.startswith(f"cannot read {fixture}")


def test_layers_file_is_the_branch_source(aufs):
    chain(aufs)
    d = os.path.realpath(os.path.join(aufs.home, "diff"))
    # Docker's layers file decides the branch order; a hand-edited one shows in the plan
    with open(os.path.join(aufs.home, "layers", "ctr"), "w") as f:
        f.write("base\nmid\n")
    assert branch_list(aufs, "ctr") == f"{d}/ctr=rw:{d}/base=ro+wh:{d}/mid=ro+wh"
    os.unlink(os.path.join(aufs.home, "layers", "ctr"))  # gone: the parent chain stands in
    assert branch_list(aufs, "ctr") == f"{d}/ctr=rw:{d}/mid=ro+wh:{d}/base=ro+wh"


def test_udba_option(root):
    drv = Aufs(root, {"aufs.udba": "none"})
    assert drv.mount_options.udba == "none"
    assert "udba=none" in drv.mount_options.render()


@pytest.mark.parametrize(("options", "said"), [
    ({"aufs.udba": "sometimes"}, "aufs: driver option aufs.udba must be one of reval, none, notify, not 'sometimes'"),
    ({"aufs.xino": "/dev/shm/x"}, "aufs: unknown driver option 'aufs.xino' (it takes: aufs.udba)"),
])
def test_driver_options_it_does_not_take_are_refused_before_anything_is_made(tmp_path, options, said):
    where = str(tmp_path / "root")
    with pytest.raises(StorageOptUnsupported) as e:
        Aufs(where, options)
    assert str(e.value) == said and not os.path.exists(where)


def test_a_foreign_mount_at_the_mount_point_is_not_adopted(aufs):
    chain(aufs)
    target = aufs.mount_point("ctr")
    syscalls.mount("tmpfs", target, "tmpfs", 0, "size=1m")
    try:
        with pytest.raises(MountFailed, match="foreign mount") as e:
            aufs.get("ctr")
        assert "is a tmpfs mount, not aufs" in str(e.value)
        assert aufs.mount_count("ctr") == 0
        assert [str(d) for d in aufs.verify()] == [f"-: unexpected tmpfs mount at {target}"]
    finally:
        aufs.cleanup()
    assert mountinfo.current_mount_id(target) is None


def test_xino_lives_on_tmpfs_one_file_per_root(tmp_path):
    from graphdriver.drivers.aufs import _tmpfs_xino

    a, b = _tmpfs_xino(str(tmp_path / "r1" / "aufs")), _tmpfs_xino(str(tmp_path / "r2" / "aufs"))
    if a is None:
        pytest.skip("neither /dev/shm nor /run is tmpfs here")
    assert a != b and a.endswith(".xino") and os.path.basename(a).startswith("aufs.")
    assert probe.backing_fs(os.path.dirname(a)) == "tmpfs"
    assert a == _tmpfs_xino(str(tmp_path / "r1" / "aufs"))  # stable: every process plans the same path
